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
            // The bench makes and removes a data directory of its own: what it may leave is whatever was not there before.
            let before = Set(await HostResources.leftovers(data: "/nonexistent"))
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
            #expect((resume["baseline"] as? [String: Any])?["name"] as? String == "bare runsc restore")
            let wake = metrics.first { $0["name"] as? String == "wake.http" } ?? [:]
            #expect(wake["runs"] as? Int == 3 && (wake["p50"] as? Double ?? 0) > 0, "\(wake)")
            #expect((wake["baseline"] as? [String: Any])?["name"] as? String == "the same request, running")
            let paused = metrics.first { $0["name"] as? String == "density.paused" } ?? [:]
            #expect(paused["runs"] as? Int == 3 && (paused["p50"] as? Double ?? 0) > 0, "\(paused)")
            let benchDirs = try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("sprout-bench") }
            #expect(benchDirs.isEmpty, "\(benchDirs)")
            let left = Set(await HostResources.leftovers(data: "/nonexistent")).subtracting(before)
            #expect(left.isEmpty, "left on the host: \(left.sorted())")
        }
    }
}
