import Foundation
import Glibc
import SproutAPI
import SproutClient
import SproutCore
import SproutSystem

/// The fleet's rows: a fleet of this build started for each (`LocalFleet`:
/// PostgreSQL, an S3 server, an API server, 2 or 3 nodes) in a temporary
/// directory, removed after. Baselines are the same operations sent to a
/// node directly (a node is today's server plus its lease), in the same run.
extension BenchRunner {
    static let fleetMetrics = ["fleet.create", "fleet.exec.true", "fleet.resume.other", "fleet.place"]

    func fleetRow(_ name: String) async throws -> MetricResult {
        let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-bench-fleet")
        try? FileSystem.removeTree(directory)  // LocalFleet makes it
        let count = name == "fleet.place" ? 3 : 2
        _ = try await LocalFleet.start(directory: directory, nodes: count, runtime: "gvisor", cache: cache, apiPort: 0)
        do {
            let result = try await measureFleet(name, directory: directory, count: count)
            try await LocalFleet.stop(directory: directory)
            return result
        } catch {
            try? await LocalFleet.stop(directory: directory)
            throw error
        }
    }

    private func measureFleet(_ name: String, directory: String, count: Int) async throws -> MetricResult {
        guard let bytes = try? Descriptor.readFile(directory + "/fleet.json"),
              let state = try? JSONDecoder().decode(LocalFleet.State.self, from: Data(bytes)) else { throw SproutError(.internal, "the fleet left no state") }
        let api = try SproutAPIClient(url: state.apiURL, apiKey: state.adminKey)
        // Each node by id, with a client of its own admin key.
        var direct: [String: SproutAPIClient] = [:]
        let deadline = monotonicSeconds() + 120
        while direct.count < count {
            guard monotonicSeconds() < deadline else { throw SproutError(.unavailable, "the fleet's nodes did not register") }
            for node in try await api.nodes() where direct[node.id] == nil {
                for index in 1...count {
                    let data = "\(directory)/node-\(index)"
                    let instance = (try? String(contentsOfFile: data + "/instance", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                    if "node-" + (instance ?? "") == node.id, let key = try? String(contentsOfFile: data + "/admin.key", encoding: .utf8) {
                        direct[node.id] = try SproutAPIClient(url: node.address, apiKey: key.trimmingCharacters(in: .whitespacesAndNewlines))
                    }
                }
            }
            if direct.count < count { try await Task.sleep(for: .milliseconds(100)) }
        }
        switch name {
        case "fleet.create": return try await fleetCreate(api: api, node: direct.values.first!)
        case "fleet.exec.true": return try await fleetExec(api: api, direct: direct)
        case "fleet.resume.other": return try await fleetResume(api: api, direct: direct)
        default: return try await fleetPlace(api: api, nodes: count)
        }
    }

    /// Creates through the API server (placed, forwarded) and on a node directly, interleaved.
    private func fleetCreate(api: SproutAPIClient, node: SproutAPIClient) async throws -> MetricResult {
        for client in [api, node] { _ = try await client.killSandbox(try await client.createSandbox(API.CreateSandbox(env: "empty", fromPool: false)).id) }
        var viaAPI = Samples()
        var viaNode = Samples()
        for _ in 0..<Swift.max(10, runs * 2) {
            for (client, isAPI) in [(api, true), (node, false)] {
                let t = monotonicSeconds()
                let sandbox = try await client.createSandbox(API.CreateSandbox(env: "empty", fromPool: false))
                if isAPI { viaAPI.record(seconds: monotonicSeconds() - t) } else { viaNode.record(seconds: monotonicSeconds() - t) }
                _ = try await client.killSandbox(sandbox.id)
            }
        }
        return MetricResult(name: "fleet.create", unit: "ms", figures: viaAPI.summary()!, baselineName: "the same create on a node directly (--role all's path)",
                            baseline: viaNode.summary(), note: "empty env, no pool; through the API server: key from PostgreSQL, placement reserved, forwarded")
    }

    /// `exec true` through the API server and on the sandbox's node directly, interleaved.
    private func fleetExec(api: SproutAPIClient, direct: [String: SproutAPIClient]) async throws -> MetricResult {
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
        var node: SproutAPIClient?
        for client in direct.values where try await client.sandboxes().contains(where: { $0.id == sandbox.id }) { node = client }
        guard let node else { throw SproutError(.internal, "the sandbox is on no node") }
        for _ in 0..<20 {
            _ = try await api.exec(sandbox.id, API.Exec(cmd: ["/bin/true"]))
            _ = try await node.exec(sandbox.id, API.Exec(cmd: ["/bin/true"]))
        }
        var viaAPI = Samples()
        var viaNode = Samples()
        for _ in 0..<(runs * 10) {
            var t = monotonicSeconds()
            _ = try await api.exec(sandbox.id, API.Exec(cmd: ["/bin/true"]))
            viaAPI.record(seconds: monotonicSeconds() - t)
            t = monotonicSeconds()
            _ = try await node.exec(sandbox.id, API.Exec(cmd: ["/bin/true"]))
            viaNode.record(seconds: monotonicSeconds() - t)
        }
        _ = try await api.killSandbox(sandbox.id)
        return MetricResult(name: "fleet.exec.true", unit: "ms", figures: viaAPI.summary()!, baselineName: "the same exec on its node directly",
                            baseline: viaNode.summary(), note: "start `true` and receive its exit; the API server streams the node's answer through")
    }

    /// Resume on the other node (the move: handoff, layer and image fetched from S3, restore) against a resume where it was paused.
    private func fleetResume(api: SproutAPIClient, direct: [String: SproutAPIClient]) async throws -> MetricResult {
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
        _ = try await api.run(sandbox.id, API.Exec(shell: "(while true; do sleep 1; done) >/dev/null 2>&1 </dev/null &"))
        let nodes = direct.keys.sorted()
        var current = ""
        for (id, client) in direct where try await client.sandboxes().contains(where: { $0.id == sandbox.id }) { current = id }
        var other = Samples()
        var same = Samples()
        var imageBytes: Int64 = 0
        for _ in 0..<Swift.max(3, runs) {
            let paused = try await api.pause(sandbox.id)
            imageBytes = paused.memory?.logicalBytes ?? imageBytes
            let target = nodes.first { $0 != current }!
            var t = monotonicSeconds()
            _ = try await api.resume(sandbox.id, node: target)
            other.record(seconds: monotonicSeconds() - t)
            current = target
            _ = try await api.pause(sandbox.id)
            t = monotonicSeconds()
            _ = try await api.resume(sandbox.id, node: current)
            same.record(seconds: monotonicSeconds() - t)
        }
        _ = try await api.killSandbox(sandbox.id)
        let moved = other.summary()!
        let megabytes = Double(imageBytes) / 1_048_576
        return MetricResult(name: "fleet.resume.other", unit: "ms", figures: moved, baselineName: "resume on the node that paused it",
                            baseline: same.summary(),
                            note: String(format: "an idle shell, %.1f MiB of memory image, moved: %.1f MiB/s (handoff, image chunks and writable layer from S3, then restore)",
                                         megabytes, megabytes / (moved.p50 / 1000)))
    }

    /// 20 clients creating at once across 3 nodes: creates per second, and each create's latency.
    private func fleetPlace(api: SproutAPIClient, nodes: Int) async throws -> MetricResult {
        _ = try await api.killSandbox(try await api.createSandbox(API.CreateSandbox(env: "empty", fromPool: false)).id)
        let perClient = Swift.max(2, runs)
        let t0 = monotonicSeconds()
        let results = await withTaskGroup(of: [(String, Double)?].self) { group in
            for _ in 0..<20 {
                group.addTask {
                    var out: [(String, Double)?] = []
                    for _ in 0..<perClient {
                        let t = monotonicSeconds()
                        // Small ones (0.1 CPU, 128 MiB): the row measures placement, not the nodes' capacity (2 cores × 4 each here).
                        let sandbox = try? await api.createSandbox(API.CreateSandbox(env: "empty", cpu: 0.1, memoryMB: 128, fromPool: false))
                        out.append(sandbox.map { ($0.id, monotonicSeconds() - t) })
                    }
                    return out
                }
            }
            var all: [(String, Double)?] = []
            for await part in group { all += part }
            return all
        }
        let wall = monotonicSeconds() - t0
        let made = results.compactMap { $0 }
        let spread = try await api.nodes().map { "\($0.sandboxes)" }.joined(separator: "/")
        var latency = Samples()
        for (_, seconds) in made { latency.record(seconds: seconds) }
        await withTaskGroup(of: Void.self) { group in
            for (id, _) in made { group.addTask { _ = try? await api.killSandbox(id) } }
        }
        guard let figures = latency.summary() else { throw SproutError(.internal, "no create succeeded") }
        return MetricResult(name: "fleet.place", unit: "ms", figures: figures,
                            note: String(format: "%d of %d creates in %.1f s: %.1f creates/s across %d nodes (spread %@), 20 clients at once",
                                         made.count, results.count, wall, Double(made.count) / wall, nodes, spread))
    }
}
