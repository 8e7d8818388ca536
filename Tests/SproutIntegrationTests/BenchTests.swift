import Foundation
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("sprout bench")
    struct BenchTests {
        @Test("a quick run prints one JSON report with percentiles and a baseline, and leaves nothing behind")
        func quickRun() async throws {
            let result = try await CLI.runProcess(
                [ServerHarness.binary, "bench", "--json", "--runs", "3", "--only", "exec.true,resume,wake.http,density.paused", "--density", "3",
                 "--cache", ServerHarness.cache])
            #expect(result.status == 0, "\(result.stderr)")
            let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            let machine = report?["machine"] as? [String: Any]
            #expect((machine?["cores"] as? Int ?? 0) >= 1)
            #expect(machine?["kernel"] as? String != nil)
            let metrics = report?["metrics"] as? [[String: Any]] ?? []
            #expect(metrics.map { $0["name"] as? String } == ["exec.true", "resume", "wake.http", "density.paused"])
            let exec = metrics.first ?? [:]
            #expect(exec["unit"] as? String == "ms")
            #expect(exec["runs"] as? Int == 30)  // 10 exec round trips per run
            for key in ["p50", "p95", "p99", "min", "max", "ratio"] {
                #expect((exec[key] as? Double ?? 0) > 0, "\(key)")
            }
            let baseline = exec["baseline"] as? [String: Any]
            #expect(baseline?["name"] as? String == "agent directly")
            #expect((baseline?["p50"] as? Double ?? 0) > 0)
            let resume = metrics.first { $0["name"] as? String == "resume" } ?? [:]
            #expect(resume["available"] as? Bool == true)
            #expect(resume["runs"] as? Int == 3)
            #expect((resume["baseline"] as? [String: Any])?["name"] as? String == "bare runsc restore (same loop, same age)")
            let wake = metrics.first { $0["name"] as? String == "wake.http" } ?? [:]
            #expect(wake["runs"] as? Int == 3 && (wake["p50"] as? Double ?? 0) > 0, "\(wake)")
            #expect((wake["baseline"] as? [String: Any])?["name"] as? String == "the same request, running")
            let paused = metrics.first { $0["name"] as? String == "density.paused" } ?? [:]
            #expect(paused["runs"] as? Int == 3 && (paused["p50"] as? Double ?? 0) > 0, "\(paused)")
            // What its servers made (by instance and sandbox: another test run's servers beside it are not its).
            let servers = report?["servers"] as? [[String: Any]] ?? []
            #expect(!servers.isEmpty, "the report names the servers it started")
            // Its folders are gone (another bench run beside it has its own).
            let folders = servers.compactMap { $0["data"] as? String } + (report?["scratch"] as? [String] ?? [])
            #expect(folders.count == servers.count + 1 && folders.allSatisfy { $0.hasPrefix("/tmp/sprout-bench") }, "\(folders)")
            #expect(folders.allSatisfy { !FileManager.default.fileExists(atPath: $0) }, "left: \(folders)")
            var left: [String] = []
            for server in servers {
                let instance = server["instance"] as? String ?? ""
                #expect(!instance.isEmpty)
                left += await HostResources.leftovers(instance: instance, sandboxes: Set(server["sandboxes"] as? [String] ?? []))
            }
            #expect(left.isEmpty, "left on the host: \(left.sorted())")
        }
    }
}
