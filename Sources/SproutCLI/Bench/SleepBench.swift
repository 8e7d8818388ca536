import Foundation
import SproutAPI
import SproutClient
import SproutCore
import SproutSystem

/// Scale-to-zero metrics: what waking a sleeping sandbox costs a request,
/// and what a sleeping sandbox costs the disk.
extension BenchRunner {
    /// A port-preview request to a sandbox paused with auto-resume, until its
    /// answer, next to the same request to it running, in the same run.
    func wakeHTTP() async throws -> MetricResult {
        if let no = memorySnapshotsAvailable("wake.http", unit: "ms") { return no }
        let sandbox = try await serverSandbox()
        defer { Task { [api] in _ = try? await api.killSandbox(sandbox.id) } }
        try await waitForPort(sandbox.address ?? "", 8080)
        var waking = Samples()
        var running = Samples()
        for _ in 0..<max(1, min(runs, 20)) {
            _ = try await api.pause(sandbox.id, autoResume: true)
            var t = monotonicSeconds()
            let (status, body) = try await api.preview(sandbox.id, port: 8080, path: "/index.html")
            guard status == 200, body == Array("hi\n".utf8) else {
                throw SproutError(.internal, "the woken sandbox answered \(status): \(String(decoding: body.prefix(200), as: UTF8.self))")
            }
            waking.record(seconds: monotonicSeconds() - t)
            t = monotonicSeconds()
            _ = try await api.preview(sandbox.id, port: 8080, path: "/index.html")
            running.record(seconds: monotonicSeconds() - t)
        }
        return MetricResult(name: "wake.http", unit: "ms", figures: waking.summary()!, baselineName: "the same request, running",
                            baseline: running.summary(),
                            note: "GET through the port preview to a web server in a sandbox paused with auto-resume, until its answer (one resume)")
    }

    /// `count` idle shells paused at once: the disk each holds while asleep
    /// (its memory image after deduplication against the others, its
    /// writable layer, its directory), measured on the server's data directory.
    func densityPaused(count: Int) async throws -> MetricResult {
        if let no = memorySnapshotsAvailable("density.paused", unit: "MiB") { return no }
        guard let data = server?.data else {
            return .unavailable("density.paused", unit: "MiB", why: "needs the server the bench starts (it reads its data directory)")
        }
        let before = FileSystem.allocatedBytes(data)
        var ids: [String] = []
        var stored: Int64 = 0
        do {
            for _ in 0..<count {
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 3600, fromPool: false))
                ids.append(sandbox.id)
                _ = try await api.run(sandbox.id, API.Exec(shell: "(sleep 100000) >/dev/null 2>&1 </dev/null &"))
                stored += try await api.pause(sandbox.id).memory?.logicalBytes ?? 0
            }
        } catch {
            await killAll(ids)
            throw error
        }
        let after = FileSystem.allocatedBytes(data)
        await killAll(ids)
        let mib = Double(after - before) / Double(1 << 20) / Double(max(1, count))
        let logical = Double(stored) / Double(1 << 20) / Double(max(1, count))
        return MetricResult(name: "density.paused", unit: "MiB", figures: .single(mib, runs: count), baselineName: "one memory image",
                            baseline: .single(logical),
                            note: String(format: "disk per paused idle shell with %d paused (images, layers and directories, deduplicated); each image is %.1f MiB before deduplication", count, logical))
    }
}
