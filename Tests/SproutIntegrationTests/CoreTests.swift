import Foundation
import Glibc
import SproutAPI
import SproutAgentClient
import SproutClient
import SproutCore
import SproutHost
import SproutSystem
import Testing

extension Integration {
    @Suite("server core")
    struct CoreTests {
        typealias TestHost = IsolationTests.TestHost

        /// Whether `sandbox` reaches `host`'s web server (nc: busybox's wget crashes under gVisor).
        static func reaches(_ server: ServerHarness, _ sandbox: API.Sandbox, _ host: TestHost) async throws -> Bool {
            let out = try await server.client.run(
                sandbox.id, API.Exec(shell: "printf 'GET /id HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \(host.address) 8000"))
            return out.stdoutText.contains("\n\(host.name)\n")
        }

        @Test("network policy holds across kill -9, a graceful restart, and a second server starting and stopping beside it")
        func policySurvivesRestarts() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                try await TestHost.withPair { allowed, other in
                    let api = server.client
                    // Paused before they made any connection (gVisor cannot save one in TIME_WAIT):
                    // they live through the graceful restart, which kills running sandboxes.
                    let sleepingClosed = try await api.createSandbox(API.CreateSandbox(env: "empty", internet: false))
                    let sleepingListed = try await api.createSandbox(API.CreateSandbox(env: "empty", egress: [allowed.cidr]))
                    _ = try await api.pause(sleepingClosed.id)
                    _ = try await api.pause(sleepingListed.id)
                    let open = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                    let closed = try await api.createSandbox(API.CreateSandbox(env: "empty", internet: false))
                    let listed = try await api.createSandbox(API.CreateSandbox(env: "empty", egress: [allowed.cidr]))

                    func expectPolicies(_ when: String, closed: API.Sandbox, listed: API.Sandbox) async throws {
                        // Positive control: the probe reaches both hosts from an open sandbox.
                        #expect(try await Self.reaches(server, open, allowed), "\(when): the open sandbox reaches the allowed host")
                        #expect(try await Self.reaches(server, open, other), "\(when): the open sandbox reaches the other host")
                        #expect(try await !Self.reaches(server, closed, allowed), "\(when): internet off")
                        #expect(try await !Self.reaches(server, closed, other), "\(when): internet off")
                        #expect(try await Self.reaches(server, listed, allowed), "\(when): the allow-list's own host")
                        #expect(try await !Self.reaches(server, listed, other), "\(when): outside the allow-list")
                    }
                    try await expectPolicies("at first", closed: closed, listed: listed)

                    // A second server (a test suite beside a running server) starts and stops.
                    let neighbour = try ServerHarness()
                    _ = try await neighbour.client.createSandbox(API.CreateSandbox(env: "empty", internet: false))
                    neighbour.stop()
                    try await expectPolicies("after a second server came and went", closed: closed, listed: listed)

                    server.crash()
                    try server.start()
                    #expect(try await server.client.sandbox(closed.id).state == .running)
                    try await expectPolicies("after kill -9", closed: closed, listed: listed)

                    server.stopServer()
                    try server.start()
                    let after = server.client
                    #expect(try await after.sandbox(open.id).state == .killed, "a graceful stop kills running sandboxes")
                    _ = try await after.resume(sleepingClosed.id)
                    _ = try await after.resume(sleepingListed.id)
                    let reopened = try await after.createSandbox(API.CreateSandbox(env: "empty"))
                    #expect(try await Self.reaches(server, reopened, allowed), "positive control after the graceful restart")
                    #expect(try await !Self.reaches(server, sleepingClosed, allowed), "internet off, after a graceful restart")
                    #expect(try await !Self.reaches(server, sleepingClosed, other))
                    #expect(try await Self.reaches(server, sleepingListed, allowed))
                    #expect(try await !Self.reaches(server, sleepingListed, other), "allow-list, after a graceful restart")
                    for sandbox in try await after.sandboxes() { _ = try await after.killSandbox(sandbox.id) }
                }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a sandbox whose container dies on its own is seen within seconds: killed, with the reason, cleaned up")
        func deathIsNoticed() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let victim = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let bystander = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let state = try await HostResources.hostOutput(["runsc", "--root", server.data + "/run/gvisor", "state", victim.id])
                let pid = (try JSONSerialization.jsonObject(with: Data(state.utf8)) as? [String: Any])?["pid"] as? Int ?? 0
                #expect(pid > 0)
                let killedAt = monotonicSeconds()
                Glibc.kill(pid_t(pid), SIGKILL)
                var seen = try await api.sandbox(victim.id)
                try await eventually(30, every: .milliseconds(50)) {
                    seen = try await api.sandbox(victim.id)
                    return seen.state == .killed
                }
                let seconds = monotonicSeconds() - killedAt
                #expect(seen.state == .killed)
                #expect(seconds < 5, "noticed after \(seconds) s")
                #expect(seen.error?.hasPrefix("stopped:") == true, "\(seen.error ?? "no reason")")
                let events = try await api.events(victim.id)
                #expect(events.contains { $0.kind == "killing" && $0.message.contains("stopped:") }, "\(events)")
                #expect(!FileManager.default.fileExists(atPath: server.data + "/sandboxes/\(victim.id)"))
                #expect(try await api.run(bystander.id, API.Exec(shell: "echo fine")).stdoutText == "fine\n")
                #expect(try await api.metrics().contains("sprout_sandbox_deaths_total 1"))
                _ = try await api.killSandbox(bystander.id)
                await expectNoLeftovers(server.data)
            }
        }

        /// A small seeded generator, so a failing storm can be replayed (`SPROUT_STRESS_SEED`).
        struct SplitMix: RandomNumberGenerator {
            var state: UInt64
            mutating func next() -> UInt64 {
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
        }

        struct Hung: Error {}

        /// Runs one storm operation, and records it (with what the server
        /// logged of the sandbox) if it has not answered within two minutes:
        /// a bound far above any operation here (a fork on a busy machine
        /// takes seconds), so it only turns a hang into a failure that says
        /// which operation on which sandbox, instead of the test's time limit.
        static func bounded(
            _ what: String, log: @escaping @Sendable () -> String, _ body: @escaping @Sendable () async throws -> String
        ) async throws -> String {
            try await withThrowingTaskGroup(of: String?.self) { group in
                group.addTask { try await body() }
                group.addTask { try await Task.sleep(for: .seconds(120)); return nil }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let outcome = first else {
                    let sandbox = what.split(separator: " ").last.map(String.init) ?? ""
                    let lines = log().split(separator: "\n").filter { $0.contains(sandbox) }.suffix(40)
                    Issue.record("\(what) did not answer within 120 s; the server's log of it:\n\(lines.joined(separator: "\n"))")
                    throw Hung()
                }
                return outcome
            }
        }

        @Test("stress: four clients kill, pause, resume, fork, snapshot and exec the same sandboxes at random; every invariant holds after")
        func stress() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let seed = UInt64(ProcessInfo.processInfo.environment["SPROUT_STRESS_SEED"] ?? "") ?? 20_261_201
                // `live`: the targets (a killed one leaves, its replacement joins); `all`: every sandbox made, for the checks after.
                let live = Locked<[String]>([])
                let all = Locked<[String]>([])
                for _ in 0..<3 {
                    let created = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 600))
                    live.withLock { $0.append(created.id) }
                    all.withLock { $0.append(created.id) }
                }
                let outcomes = Locked<[String: Int]>([:])
                // What the server said of an outcome other than success or 409, and what it logged of the sandbox.
                let details = Locked<[String]>([])
                let envs = Locked<[String]>([])
                let deadline = monotonicSeconds() + 40
                await withTaskGroup(of: Void.self) { group in
                    for client in 0..<4 {
                        group.addTask {
                            var random = SplitMix(state: seed &+ UInt64(client))
                            while monotonicSeconds() < deadline {
                                let targets = live.current
                                let id = targets[Int(random.next() % UInt64(targets.count))]
                                let roll = Int(random.next() % 100)
                                let operation = roll < 5 ? "kill" : roll < 26 ? "pause" : roll < 44 ? "resume" : roll < 54 ? "fork"
                                    : roll < 64 ? "snapshot" : "exec"
                                var outcome = "ok"
                                do {
                                    outcome = try await Self.bounded("\(operation) of \(id)", log: { server.log }) { () -> String in
                                        switch operation {
                                        case "kill":
                                            _ = try await api.killSandbox(id)
                                            // Keep the storm going on three or more live sandboxes.
                                            let fresh = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 600))
                                            live.withLock { $0 = $0.filter { $0 != id } + [fresh.id] }
                                            all.withLock { $0.append(fresh.id) }
                                        case "pause": _ = try await api.pause(id)
                                        case "resume": _ = try await api.resume(id)
                                        case "fork":
                                            if live.current.count >= 8 { return "skipped" }
                                            let forks = try await api.fork(id, count: 1)
                                            live.withLock { $0 += forks.map(\.id) }
                                            all.withLock { $0 += forks.map(\.id) }
                                        case "snapshot":
                                            let env = try await api.snapshot(id)
                                            envs.withLock { $0.append(env.id) }
                                        default:
                                            let result = try await api.run(id, API.Exec(shell: "echo $((6 * 7))"))
                                            if result.stdoutText != "42\n" { return "wrong output: \(result.stdoutText) \(result.stderrText)" }
                                        }
                                        return "ok"
                                    }
                                } catch is Hung {
                                    outcome = "hung"
                                } catch let error as SproutError {
                                    outcome = error.code.rawValue
                                    if error.code != .conflict {
                                        let lines = server.log.split(separator: "\n").filter { $0.contains(id) }.suffix(30)
                                        details.withLock { $0.append("\(operation) of \(id): \(error.message)\n\(lines.joined(separator: "\n"))") }
                                    }
                                } catch {
                                    outcome = "other: \(error)"
                                }
                                outcomes.withLock { $0["\(operation) \(outcome)", default: 0] += 1 }
                            }
                        }
                    }
                }
                let tally = outcomes.current
                let total = tally.values.reduce(0, +)
                let conflicts = tally.filter { $0.key.hasSuffix(" conflict") }.values.reduce(0, +)
                let unexpected = tally.filter { entry in !["ok", "conflict", "skipped"].contains { entry.key.hasSuffix(" " + $0) } }
                #expect(unexpected.isEmpty, "outcomes other than success or 409: \(unexpected)\n\(details.current.prefix(3).joined(separator: "\n\n"))")
                #expect(tally["exec ok", default: 0] > 0 && tally["pause ok", default: 0] > 0 && tally["resume ok", default: 0] > 0,
                        "the storm did real work: \(tally)")

                // Every sandbox settled in a state the machine allows, and the host agrees with the catalog.
                var checked = 0
                for id in all.current {
                    let sandbox = try await api.sandbox(id)
                    let directory = FileManager.default.fileExists(atPath: server.data + "/sandboxes/\(id)")
                    let namespace = FileManager.default.fileExists(atPath: "/run/netns/sprout-\(server.instance)-\(id)")
                    switch sandbox.state {
                    case .running:
                        #expect(directory && namespace, "\(id) running: its directory and namespace exist")
                        #expect(try await api.run(id, API.Exec(cmd: ["true"])).exit == API.Exit(code: 0), "\(id) running answers")
                    case .paused:
                        #expect(directory && namespace, "\(id) paused: its files and namespace wait for resume")
                        #expect(sandbox.memory?.count ?? 0 > 0, "\(id) paused keeps a memory image")
                    case .killed:
                        #expect(!directory && !namespace, "\(id) killed: nothing of it is left")
                    default:
                        Issue.record("\(id) is \(sandbox.state) after the storm")
                    }
                    checked += 1
                }
                // Every acknowledged env is intact: a sandbox starts from it.
                let acknowledged = Array(Set(envs.current)).sorted()
                for env in acknowledged.prefix(8) {
                    let sandbox = try await api.createSandbox(API.CreateSandbox(env: env))
                    #expect(try await api.run(sandbox.id, API.Exec(cmd: ["true"])).exit == API.Exit(code: 0), "env \(env) starts")
                    _ = try await api.killSandbox(sandbox.id)
                }
                print("stress (seed \(seed)): \(total) operations, \(conflicts) answered 409, \(checked) sandboxes and \(min(8, acknowledged.count)) of \(acknowledged.count) envs checked; \(tally.sorted { $0.key < $1.key })")
                for sandbox in try await api.sandboxes() { _ = try await api.killSandbox(sandbox.id) }
                await expectNoLeftovers(server.data)
            }
        }
    }
}
