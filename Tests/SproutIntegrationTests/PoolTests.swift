import Foundation
import SproutAgentProtocol
import SproutClient
import SproutCore
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("warm pool")
    struct PoolTests {
        /// Waits until `count` sandboxes are pooled (from /metrics).
        func waitForPool(_ api: SproutAPIClient, _ count: Int) async throws {
            for _ in 0..<100 {
                if try await api.metrics().contains(#"sprout_sandboxes{state="pooled"} \#(count)"#) { return }
                try await Task.sleep(for: .milliseconds(200))
            }
            Issue.record("the pool never reached \(count)")
        }

        @Test("a create takes a pooled sandbox with its own identity and env vars; the pool refills; nothing leaks")
        func claim() async throws {
            let data = try await ServerHarness.with(extraArgs: ["--pool-size", "2"]) { (server: ServerHarness) async throws in
                let api = server.client
                _ = try await api.createSandbox(API.CreateSandbox(env: "empty"))  // first use starts the pool
                try await waitForPool(api, 2)
                let t = ContinuousClock.now
                let pooled = try await api.createSandbox(API.CreateSandbox(env: "empty", envVars: ["WHO": "pooled"], metadata: ["m": "1"]))
                let elapsed = ContinuousClock.now - t
                #expect(elapsed < .milliseconds(100), "a pooled create took \(elapsed)")
                #expect(pooled.state == "running")
                #expect(pooled.metadata == ["m": "1"])
                let result = try await api.run(pooled.id, API.Exec(shell: "hostname; echo $WHO; ls /code"))
                #expect(result.stdoutText == "\(pooled.id)\npooled\n")
                // Non-default limits never come from the pool.
                let custom = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 256))
                #expect(custom.memoryMB == 256)
                try await waitForPool(api, 2)
                // Pooled sandboxes belong to no team: nobody lists them.
                #expect(try await api.sandboxes().count == 3)
                // A crash: pooled sandboxes are replaced, claimed ones adopted.
                server.crash()
                try server.start()
                #expect(try await server.client.sandbox(pooled.id).state == "running")
                return server.data
            }
            await expectNoLeftovers(data)
        }
    }
}
