import Foundation
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
            let reached = try await eventually { try await api.metrics().contains(#"sprout_sandboxes{state="pooled"} \#(count)"#) }
            #expect(reached, "the pool never reached \(count)")
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
                #expect(pooled.state == .running)
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
                #expect(try await server.client.sandbox(pooled.id).state == .running)
                return server.data
            }
            await expectNoLeftovers(data)
        }

        /// The number of pooled sandboxes, from /metrics.
        func pooledCount(_ api: SproutAPIClient) async throws -> Int {
            let line = try await api.metrics().split(separator: "\n").first { $0.hasPrefix(#"sprout_sandboxes{state="pooled"} "#) }
            return Int(Double(line?.split(separator: " ").last ?? "0") ?? 0)
        }

        @Test("the pool follows demand within its budget: chained snapshots never grow it past the budget, and it empties when demand stops")
        func boundedByDemand() async throws {
            let data = try await ServerHarness.with(extraArgs: ["--pool-size", "2", "--pool-budget", "3", "--pool-idle", "6"]) {
                (server: ServerHarness) async throws in
                let api = server.client
                var most = 0
                var source = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                var made = [source.id]
                // Six chained snapshots, one sandbox from each: six envs in demand.
                for i in 0..<6 {
                    _ = try await api.run(source.id, API.Exec(shell: "echo \(i) > /code/step"))
                    let env = try await api.snapshot(source.id, name: "chain")
                    source = try await api.createSandbox(API.CreateSandbox(env: env.id))
                    made.append(source.id)
                    most = max(most, try await pooledCount(api))
                }
                // Sampled all along: the pool starts, never passes its budget, and
                // once demand is older than its idle time it is empty again.
                var pooled = 0
                try await eventually(60, every: .milliseconds(250)) {
                    pooled = try await pooledCount(api)
                    most = max(most, pooled)
                    return most >= 1
                }
                #expect(most >= 1, "the pool started for the envs in demand")
                try await eventually(60, every: .milliseconds(250)) {
                    pooled = try await pooledCount(api)
                    most = max(most, pooled)
                    return pooled == 0
                }
                #expect(most <= 3, "never more pooled sandboxes than the budget: saw \(most)")
                #expect(pooled == 0, "the pool shrank to nothing once demand stopped")
                for id in made { _ = try await api.killSandbox(id) }
                return server.data
            }
            await expectNoLeftovers(data)
        }
    }
}
