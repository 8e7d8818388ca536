import Foundation
import SproutAPI
import SproutClient
import SproutCore
import Testing

extension Integration {
    @Suite("memory pressure")
    struct MemoryPressureTests {
        static func state(_ api: SproutAPIClient, _ id: String) async throws -> SandboxState { try await api.sandbox(id).state }

        /// Rounds the supervisor has finished (from /metrics).
        static func rounds(_ api: SproutAPIClient) async throws -> Int {
            let line = try await api.metrics().split(separator: "\n").first { $0.hasPrefix("sprout_supervisor_rounds_total ") }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }

        // Which idle sandbox goes first (auto-resume ones, then the least
        // recently used) is the fast tier's (PolicyTests); this is the real thing end to end.
        @Test("past the memory budget an idle sandbox sleeps, a busy one never; the sleeper wakes with its processes; a create that cannot fit is a 503 that changes nothing")
        func budget() async throws {
            try await ServerHarness.with(extraArgs: ["--memory-budget-mb", "800", "--pressure-idle", "0", "--min-free-memory-mb", "0"]) {
                (server: ServerHarness) async throws in
                let api = server.client
                // A: a plain sandbox with a counter running inside.
                let a = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                _ = try await api.start(a.id, API.Exec(shell: "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done"))
                #expect(try await eventually { try await counter(api, a.id, path: "/tmp/n") > 0 })
                let before = try await counter(api, a.id, path: "/tmp/n")  // A's last request
                // B: busy the whole time, with an exec stream open.
                let b = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                let held = Task { try await api.run(b.id, API.Exec(shell: "echo started; sleep 40; echo held")) }
                let c = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                _ = try await api.run(c.id, API.Exec(shell: "true"))  // C was touched after A: A is the least recently used
                #expect(try await eventually { try await api.run(b.id, API.Exec(shell: "pidof sleep")).exit == API.Exit(code: 0) })

                // 3 × 256 + 256 > 800: one idle sandbox must sleep.
                let d = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                #expect(try await Self.state(api, a.id) == .paused, "the least recently used idle sandbox slept")
                #expect(try await Self.state(api, b.id) == .running, "a sandbox with an open stream never sleeps")
                #expect(try await Self.state(api, c.id) == .running)
                #expect(try await api.events(a.id).contains { $0.kind == "pressure" && $0.message.contains("budget") })
                #expect(try await api.metrics().contains(#"sprout_pressure_pauses_total{reason="budget"} 1"#))
                let slept = try await api.sandbox(a.id)
                #expect(slept.autoResume == true, "a sandbox paused for memory wakes on its next request")

                // A request to A wakes it (making room in turn), and its counter goes on.
                let after = try await counter(api, a.id, path: "/tmp/n")
                #expect(after >= before, "the same counter: \(before) then \(after)")
                #expect(try await eventually { try await counter(api, a.id, path: "/tmp/n") > after }, "it counts on after the wake")
                #expect(try await api.events(a.id).contains { $0.kind == "wake" })

                // Bigger than the whole budget: refused, and nobody was put to sleep for it.
                let states = try await api.sandboxes().reduce(into: [String: SandboxState]()) { $0[$1.id] = $1.state }
                do {
                    _ = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 1024))
                    Issue.record("a create past the whole budget was accepted")
                } catch let error as SproutError {
                    #expect(error.code == .unavailable && error.message.contains("--memory-budget-mb"), "\(error)")
                }
                let statesAfter = try await api.sandboxes().reduce(into: [String: SandboxState]()) { $0[$1.id] = $1.state }
                #expect(statesAfter == states, "the refused create changed nothing: \(states) then \(statesAfter)")
                #expect(try await api.metrics().contains("sprout_pressure_refusals_total 1"))
                #expect(try await held.value.stdoutText == "started\nheld\n")
                for id in [a.id, b.id, c.id, d.id] { _ = try await api.killSandbox(id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("under the host's free-memory floor the supervisor puts idle sandboxes to sleep, and not busy ones; a request wakes them")
        func hostFloor() async throws {
            // A floor far above this host's memory: the host is "short" from the start (the probe reads the real /proc/meminfo).
            try await ServerHarness.with(extraArgs: ["--min-free-memory-mb", "16000000", "--pressure-idle", "1"]) {
                (server: ServerHarness) async throws in
                let api = server.client
                let idle = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let busy = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let held = Task { try await api.run(busy.id, API.Exec(shell: "sleep 10; echo held")) }
                let state = try await MemorySnapshotTests.waitForState(api, idle.id, .paused, seconds: 15)
                #expect(state == .paused, "the idle sandbox slept: \(state)")
                #expect(try await Self.state(api, busy.id) == .running, "the busy one did not")
                #expect(try await api.events(idle.id).contains { $0.kind == "pressure" && $0.message.contains("--min-free-memory-mb") })
                #expect(try await api.metrics().contains(#"sprout_pressure_pauses_total{reason="host"}"#))
                #expect(try await api.run(idle.id, API.Exec(shell: "echo awake")).stdoutText == "awake\n")
                #expect(try await held.value.stdoutText == "held\n")
                for id in [idle.id, busy.id] { _ = try await api.killSandbox(id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("without a floor or budget nothing sleeps for memory (the positive control for the tests above)")
        func noPressure() async throws {
            try await ServerHarness.with(extraArgs: ["--min-free-memory-mb", "0", "--pressure-idle", "1"]) { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                // The host floor is checked every second round: four rounds see it at least twice.
                let start = try await Self.rounds(api)
                #expect(try await eventually { try await Self.rounds(api) >= start + 4 })
                #expect(try await Self.state(api, sandbox.id) == .running)
                #expect(!(try await api.metrics().contains("sprout_pressure_pauses_total")))
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }
    }
}
