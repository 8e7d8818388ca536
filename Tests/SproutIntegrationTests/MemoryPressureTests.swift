import Foundation
import SproutAPI
import SproutAgentProtocol
import SproutClient
import SproutCore
import Testing

extension Integration {
    @Suite("memory pressure")
    struct MemoryPressureTests {
        static func state(_ api: SproutAPIClient, _ id: String) async throws -> String { try await api.sandbox(id).state }

        @Test("past the memory budget idle sandboxes sleep (auto-resume ones first, then the least recently used), busy ones never; the sleeper wakes with its processes; a create that cannot fit is a 503 that changes nothing")
        func budget() async throws {
            try await ServerHarness.with(extraArgs: ["--memory-budget-mb", "800", "--pressure-idle", "1", "--min-free-memory-mb", "0"]) {
                (server: ServerHarness) async throws in
                let api = server.client
                // A: a plain sandbox with a counter running inside.
                let a = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                _ = try await api.start(a.id, API.Exec(shell: "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done"))
                // B: asked to sleep on timeout and wake on request (so it goes first).
                let b = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 600, memoryMB: 256, onTimeout: "pause", autoResume: true))
                // C: busy the whole time, with an exec stream open.
                let c = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                let held = Task { try await api.run(c.id, API.Exec(shell: "sleep 25; echo held")) }
                try await Task.sleep(for: .seconds(2))
                // A was touched after B, so only the auto-resume rule puts B first.
                _ = try await counter(api, a.id, path: "/tmp/n")
                try await Task.sleep(for: .seconds(1.5))

                // 3 × 256 + 256 > 800: one sandbox must sleep, and it is B.
                let d = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                #expect(try await Self.state(api, b.id) == "paused", "the auto-resume sandbox slept first")
                #expect(try await Self.state(api, a.id) == "running")
                #expect(try await api.events(b.id).contains { $0.kind == "pressure" && $0.message.contains("budget") })
                #expect(try await api.metrics().contains(#"sprout_pressure_pauses_total{reason="budget"} 1"#))

                // Next the least recently used idle one: A (D is newer; C is busy).
                try await Task.sleep(for: .seconds(1.5))
                let before = try await counter(api, a.id, path: "/tmp/n")
                try await Task.sleep(for: .seconds(1.5))
                _ = try await api.run(d.id, API.Exec(shell: "true"))  // touches D: A is now the LRU
                try await Task.sleep(for: .seconds(1.2))
                let e = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                #expect(try await Self.state(api, a.id) == "paused", "the least recently used idle sandbox slept")
                #expect(try await Self.state(api, d.id) == "running")
                #expect(try await Self.state(api, c.id) == "running", "a sandbox with an open stream never sleeps")
                let slept = try await api.sandbox(a.id)
                #expect(slept.autoResume == true, "a sandbox paused for memory wakes on its next request")

                // A request to A wakes it (making room in turn), and its counter goes on.
                try await Task.sleep(for: .seconds(1.2))
                let after = try await counter(api, a.id, path: "/tmp/n")
                #expect(after >= before, "the same counter: \(before) then \(after)")
                try await Task.sleep(for: .milliseconds(500))
                #expect(try await counter(api, a.id, path: "/tmp/n") > after, "it counts on after the wake")
                #expect(try await api.events(a.id).contains { $0.kind == "wake" })

                // Bigger than the whole budget: refused, and nobody was put to sleep for it.
                let states = try await api.sandboxes().reduce(into: [String: String]()) { $0[$1.id] = $1.state }
                do {
                    _ = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 1024))
                    Issue.record("a create past the whole budget was accepted")
                } catch let error as SproutError {
                    #expect(error.code == .unavailable && error.message.contains("--memory-budget-mb"), "\(error)")
                }
                let statesAfter = try await api.sandboxes().reduce(into: [String: String]()) { $0[$1.id] = $1.state }
                #expect(statesAfter == states, "the refused create changed nothing: \(states) then \(statesAfter)")
                #expect(try await api.metrics().contains("sprout_pressure_refusals_total 1"))
                #expect(try await held.value.stdoutText == "held\n")
                for id in [a.id, b.id, c.id, d.id, e.id] { _ = try await api.killSandbox(id) }
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
                let state = try await MemorySnapshotTests.waitForState(api, idle.id, "paused", seconds: 15)
                #expect(state == "paused", "the idle sandbox slept: \(state)")
                #expect(try await Self.state(api, busy.id) == "running", "the busy one did not")
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
                try await Task.sleep(for: .seconds(5))
                #expect(try await Self.state(api, sandbox.id) == "running")
                #expect(!(try await api.metrics().contains("sprout_pressure_pauses_total")))
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }
    }
}
