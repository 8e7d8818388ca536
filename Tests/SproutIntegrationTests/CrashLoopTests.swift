import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension LongIntegration {
    @Suite("crash safety")
    struct CrashLoopTests {
        /// What the server acknowledged before it was killed.
        final class Acknowledged: @unchecked Sendable {
            let lock = Lock()
            var envs: [String: String] = [:]  // env id -> the file it must hold
            var paused: Set<String> = []
            var operations = 0

            func env(_ id: String, file: String) { lock.withLock { envs[id] = file } }
            func pause(_ id: String) { lock.withLock { _ = paused.insert(id) } }
            func unpause(_ id: String) { lock.withLock { _ = paused.remove(id) } }
            func count() { lock.withLock { operations += 1 } }
        }

        /// One cycle's work: create, exec, snapshot, push, pause, resume, kill,
        /// in an order that varies with the cycle. Errors are expected: the
        /// server dies under it.
        static func work(_ api: SproutAPIClient, cycle: Int, ack: Acknowledged) async throws {
            let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", fromPool: false))
            ack.count()
            let file = "/code/cycle-\(cycle).txt"
            _ = try await api.run(sandbox.id, API.Exec(shell: "echo \(cycle) > \(file)"))
            ack.count()
            switch cycle % 3 {
            case 0:
                let env = try await api.snapshot(sandbox.id, name: "crash")
                ack.env(env.id, file: file)
            case 1:
                let pushed = try await api.push(API.Push(id: "crash-push", from: "empty", run: ["mkdir -p /code && echo \(cycle) > \(file)"],
                                                         start: nil, ready: nil, cpu: nil, memoryMB: nil, files: []))
                if let build = pushed.build {
                    let done = try await api.build(build.id, wait: true)
                    if done.status == "succeeded" { ack.env(pushed.envID, file: file) }
                } else {
                    ack.env(pushed.envID, file: file)
                }
            default:
                _ = try await api.pause(sandbox.id)
                ack.pause(sandbox.id)
                if cycle % 2 == 0 {
                    // No longer acknowledged as paused once the resume is asked for.
                    ack.unpause(sandbox.id)
                    _ = try await api.resume(sandbox.id)
                } else {
                    return  // stays paused: it must survive every later crash
                }
            }
            ack.count()
            _ = try await api.killSandbox(sandbox.id)
            ack.count()
        }

        @Test("50 cycles of create/exec/snapshot/push/pause/kill, beside sandboxes that sleep on timeout and wake on requests, each cut short by SIGKILL: what was acknowledged survives, a sleeper is paused or running and never both, nothing half-made shows, nothing leaks")
        func crashLoop() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let ack = Acknowledged()
                var generator = SplitMix(seed: 20261127)
                var delays: [Int] = []
                // Sleepers: each pauses 3 s after it was last started or woken, and a
                // request in every cycle wakes one of them, so crashes land in
                // timeout pauses and in wakes.
                var sleepers: [String] = []
                for _ in 0..<3 {
                    let sleeper = try await server.client.createSandbox(
                        API.CreateSandbox(env: "empty", timeoutSeconds: 3, fromPool: false, onTimeout: "pause", autoResume: true))
                    _ = try await server.client.start(sleeper.id, API.Exec(shell: "while :; do date +%s > /tmp/alive; sleep 0.2; done"))
                    sleepers.append(sleeper.id)
                }
                // One pause acknowledged before the first crash, so that every run proves a paused
                // sandbox survives all 50 (a cycle's own pause is acknowledged only when its kill
                // comes late enough, which on a slow day may be never).
                let held = try await server.client.createSandbox(API.CreateSandbox(env: "empty", fromPool: false))
                _ = try await server.client.run(held.id, API.Exec(shell: "echo held > /tmp/held"))
                _ = try await server.client.pause(held.id)
                ack.pause(held.id)
                var wakesAnswered = 0
                var namespacesSeen = 0
                for cycle in 0..<50 {
                    let api = server.client
                    // Somewhere between the first request and the end of the cycle's work.
                    let delay = Int(generator.next() % 900) + 20
                    delays.append(delay)
                    let work = Task { try await Self.work(api, cycle: cycle, ack: ack) }
                    let sleeper = sleepers[cycle % sleepers.count]
                    let wake = Task { try await api.run(sleeper, API.Exec(cmd: ["cat", "/tmp/alive"])) }
                    try await Task.sleep(for: .milliseconds(delay))
                    server.crash()
                    _ = await work.result
                    if case .success(let result) = await wake.result, result.exit == API.Exit(code: 0) { wakesAnswered += 1 }
                    try server.start()
                    // After every restart: nothing the catalog does not own is on the host.
                    let live = try await server.client.sandboxes()
                    // This server's namespaces (the other lane's server has its own).
                    let namespaces = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
                        .filter { $0.hasPrefix("sprout-\(server.instance)-") }
                    namespacesSeen += namespaces.count
                    #expect(namespaces.count <= live.count, "cycle \(cycle): \(namespaces.count) namespaces for \(live.count) sandboxes")
                    for name in namespaces {
                        #expect(live.contains { name.hasSuffix($0.id) }, "cycle \(cycle): namespace \(name) belongs to no live sandbox")
                    }
                    // A sleeper is paused or running, never both: a paused one has no
                    // container. (Right after a restart its expired timeout may be
                    // pausing it: that settles within seconds.)
                    for id in sleepers {
                        var state = live.first { $0.id == id }?.state
                        if [.pausing, .resuming].contains(state) {
                            try await eventually(30) {
                                state = try? await server.client.sandbox(id).state
                                return ![.pausing, .resuming].contains(state)
                            }
                        }
                        let containers = (try? await HostResources.hostOutput(["runsc", "--root", server.data + "/run/gvisor", "list", "--quiet"])) ?? ""
                        #expect([.paused, .running].contains(state), "cycle \(cycle): sleeper \(id) is \(state.map(\.rawValue) ?? "gone")")
                        if state == .paused {
                            #expect(!containers.contains(id), "cycle \(cycle): sleeper \(id) is paused yet its container runs")
                        }
                    }
                }
                print("crash loop: 50 cycles, \(ack.operations) acknowledged operations, kill delays (ms): \(delays)")
                // The namespace probe above saw this server's namespaces (the sleepers keep theirs).
                #expect(namespacesSeen > 0, "the namespace check never saw a namespace of instance \(server.instance)")
                let api = server.client

                // Every acknowledged env is there and starts, with its file.
                let envs = try await api.envs().filter { !$0.builtin }
                for id in ack.envs.keys {
                    #expect(envs.contains { $0.id == id }, "acknowledged env \(id) is missing")
                }
                // Nothing half-made: every env that is listed starts.
                for env in envs {
                    let sandbox = try await api.createSandbox(API.CreateSandbox(env: env.id, fromPool: false))
                    if let file = ack.envs[env.id] {
                        #expect(try await api.run(sandbox.id, API.Exec(cmd: ["cat", file])).exit == API.Exit(code: 0), "env \(env.id) lost \(file)")
                    }
                    _ = try await api.killSandbox(sandbox.id)
                }
                // Acknowledged pauses survive and resume.
                for id in ack.paused {
                    let sandbox = try await api.sandbox(id)
                    #expect(sandbox.state == .paused, "sandbox \(id) was acknowledged paused, is \(sandbox.state)")
                    if sandbox.state == .paused {
                        _ = try await api.resume(id)
                        #expect(try await api.run(id, API.Exec(cmd: ["true"])).exit == API.Exit(code: 0))
                        if id == held.id {
                            #expect(try await api.run(id, API.Exec(cmd: ["cat", "/tmp/held"])).stdoutText == "held\n", "the held sandbox lost what it wrote before its pause")
                        }
                    }
                }
                // Every sleeper answers a request (waking if it sleeps), and is running after.
                for id in sleepers {
                    #expect(try await api.run(id, API.Exec(cmd: ["true"])).exit == API.Exit(code: 0), "sleeper \(id) answers")
                    #expect(try await api.sandbox(id).state == .running)
                }
                let wakes = try await sleepers.asyncMap { try await api.events($0).filter { $0.kind == "wake" }.count }.reduce(0, +)
                print("crash loop: \(wakesAnswered) wake requests answered before their crash; \(wakes) wakes in the sleepers' events")
                #expect(wakes > 0, "no wake happened: the loop did not test waking")
                print("crash loop: \(ack.paused.count - 1) pauses acknowledged in the cycles besides the one before them")
                #expect(!ack.envs.isEmpty, "the loop acknowledged no env: it proved nothing about them")
                for sandbox in try await api.sandboxes() { _ = try await api.killSandbox(sandbox.id) }

                // No temp file of an interrupted operation is left.
                for dir in ["layers", "sandboxes", "images", "blobs"] {
                    let names = (try? FileManager.default.contentsOfDirectory(atPath: server.data + "/" + dir)) ?? []
                    let temps = names.filter { name in
                        [".freeze-", ".squashing-", ".upload-", ".fork-"].contains(where: name.hasPrefix) || name.contains(".tmp-")
                    }
                    #expect(temps.isEmpty, "left in \(dir): \(temps)")
                }
                await expectNoLeftovers(server.data)
            }
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for element in self { out.append(try await transform(element)) }
        return out
    }
}

/// A small seeded generator, so a failing run can be repeated.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
