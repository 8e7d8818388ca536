import Foundation
import SproutAPI
import SproutClient
import SproutCore
import SproutSystem

/// `sprout bench --scale N [--scale-paused M]`: how the cost of the hot
/// paths grows with the population. Create, exec and wake are measured on
/// an empty host, then again with N idle running and M paused sandboxes
/// present, in the same run; and host memory (PSS) per idle sandbox while
/// ten exist and while N do.
extension BenchRunner {
    static let scaleMetrics = ["scale.create", "scale.exec", "scale.wake", "scale.memory", "scale.disk.paused"]

    struct Probe {
        var create = Samples()
        var exec = Samples()
        var wake = Samples()
    }

    /// The three latencies, `count` times each, against one subject sandbox
    /// made for the purpose (and removed after).
    func probe(count: Int, wake: Bool) async throws -> Probe {
        var probe = Probe()
        let subject = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 3600, fromPool: false))
        defer { Task { [api] in _ = try? await api.killSandbox(subject.id) } }
        for _ in 0..<5 { _ = try await api.exec(subject.id, API.Exec(cmd: ["/bin/true"])) }
        for _ in 0..<count {
            var t = monotonicSeconds()
            let made = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 600, fromPool: false))
            probe.create.record(seconds: monotonicSeconds() - t)
            _ = try await api.killSandbox(made.id)
            t = monotonicSeconds()
            _ = try await api.exec(subject.id, API.Exec(cmd: ["/bin/true"]))
            probe.exec.record(seconds: monotonicSeconds() - t)
            if wake {
                _ = try await api.pause(subject.id, autoResume: true)
                t = monotonicSeconds()
                _ = try await api.exec(subject.id, API.Exec(cmd: ["/bin/true"]))
                probe.wake.record(seconds: monotonicSeconds() - t)
            }
        }
        _ = try await api.killSandbox(subject.id)
        return probe
    }

    /// Runs `body` for 0..<count, `width` at a time; each id it returns is
    /// also added to `made` as it comes (so a failure midway can clean up).
    func inParallel(_ count: Int, width: Int, into made: Locked<[String]>, _ body: @escaping @Sendable (Int) async throws -> String) async throws -> [String] {
        try await withThrowingTaskGroup(of: String.self) { group in
            var out: [String] = []
            var next = 0
            while next < min(width, count) {
                let i = next
                group.addTask { try await body(i) }
                next += 1
            }
            for try await id in group {
                out.append(id)
                made.withLock { $0.append(id) }
                if next < count {
                    let i = next
                    group.addTask { try await body(i) }
                    next += 1
                }
                if progress && out.count % 100 == 0 { FileHandle.standardError.write(Data("  \(out.count) of \(count)\n".utf8)) }
            }
            return out
        }
    }

    func scale(running: Int, paused: Int) async throws -> [MetricResult] {
        let wake = memorySnapshotsAvailable("scale.wake", unit: "ms") == nil
        let count = max(5, min(runs, 20))
        // Warm-up, then the empty host.
        _ = try await probe(count: 2, wake: wake)
        let empty = try await probe(count: count, wake: wake)
        let availableBefore = MemInfo.availableMB()

        let made = Locked<[String]>([])
        let cleanUp = { (ids: [String]) async in await Self.killAll(api, ids) }
        do {
            // Memory per idle sandbox with ten of them.
            let first = try await inParallel(min(10, running), width: 2, into: made) { [api] _ in
                try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 7200, fromPool: false)).id
            }
            try await Task.sleep(for: .seconds(2))
            let fewPSS = first.map { Double(HostMemory.pssKiB(containerID: $0)) / 1024 }
            var population = first
            if running > first.count {
                population += try await inParallel(running - first.count, width: 4, into: made) { [api] _ in
                    try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 7200, fromPool: false)).id
                }
            }
            let diskBefore = server.map { FileSystem.allocatedBytes($0.data) }
            let sleepers = try await inParallel(paused, width: 2, into: made) { [api] _ in
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 7200, fromPool: false))
                _ = try await api.pause(sandbox.id)
                return sandbox.id
            }
            population += sleepers
            let diskAfter = server.map { FileSystem.allocatedBytes($0.data) }
            try await Task.sleep(for: .seconds(5))  // settle: the pool, the supervisor's passes
            let availableAfter = MemInfo.availableMB()
            let sample = stride(from: 0, to: running, by: max(1, running / 10)).prefix(10).map { population[$0] }
            let manyPSS = sample.map { Double(HostMemory.pssKiB(containerID: $0)) / 1024 }
            let loaded = try await probe(count: count, wake: wake)
            await cleanUp(made.withLock { all in defer { all = [] }; return all })

            let at = "\(running) running and \(paused) paused sandboxes"
            func ratio(_ a: Samples, _ b: Samples) -> String {
                guard let x = a.summary(), let y = b.summary(), y.p50 > 0 else { return "" }
                return String(format: "; p50 %.2f× the empty host's", x.p50 / y.p50)
            }
            var results = [
                MetricResult(name: "scale.create", unit: "ms", figures: loaded.create.summary()!, baselineName: "empty host", baseline: empty.create.summary(),
                             note: "create (a new container, not the pool) with \(at)" + ratio(loaded.create, empty.create)),
                MetricResult(name: "scale.exec", unit: "ms", figures: loaded.exec.summary()!, baselineName: "empty host", baseline: empty.exec.summary(),
                             note: "exec `true` with \(at)" + ratio(loaded.exec, empty.exec)),
            ]
            results.append(wake
                ? MetricResult(name: "scale.wake", unit: "ms", figures: loaded.wake.summary()!, baselineName: "empty host", baseline: empty.wake.summary(),
                               note: "a request to a sandbox paused with auto-resume, until its answer, with \(at)" + ratio(loaded.wake, empty.wake))
                : memorySnapshotsAvailable("scale.wake", unit: "ms")!)
            let drop = availableBefore.flatMap { b in availableAfter.map { a in Double(b - a) / Double(max(1, running)) } }
            results.append(MetricResult(
                name: "scale.memory", unit: "MiB", figures: Figures.of(manyPSS) ?? .single(0), baselineName: "with 10 running", baseline: Figures.of(fewPSS),
                note: "host memory (PSS) per idle sandbox with \(at)"
                    + (drop.map { String(format: "; MemAvailable fell %.1f MiB per running sandbox", $0) } ?? "")))
            if let before = diskBefore, let after = diskAfter, paused > 0 {
                let each = Double(after - before) / Double(1 << 20) / Double(paused)
                results.append(MetricResult(name: "scale.disk.paused", unit: "MiB", figures: .single(each, runs: paused), baselineName: "goal",
                                            baseline: .single(5),
                                            note: "growth of the data directory per paused idle sandbox while \(paused) were paused (memory images deduplicated, layers, directories)"))
            } else {
                results.append(.unavailable("scale.disk.paused", unit: "MiB", why: "needs --scale-paused and the benchmark's own server"))
            }
            return results
        } catch {
            await cleanUp(made.current)
            throw error
        }
    }

    /// Kills `ids`, eight at a time (more would queue past the client's
    /// pool timeout), trying each up to three times.
    static func killAll(_ api: SproutAPIClient, _ ids: [String]) async {
        var left = ids
        for _ in 0..<3 where !left.isEmpty {
            let failed = Locked<[String]>([])
            await withTaskGroup(of: Void.self) { group in
                var running = 0
                for id in left {
                    if running == 8 {
                        await group.next()
                        running -= 1
                    }
                    group.addTask {
                        do { _ = try await api.killSandbox(id) } catch { failed.withLock { $0.append(id) } }
                    }
                    running += 1
                }
            }
            left = failed.current
        }
    }

    /// Every sandbox of the benchmark's server, whatever its state: a
    /// server that stops keeps paused sandboxes (and their namespaces), so
    /// they must go before it does.
    static func killEverything(_ api: SproutAPIClient) async {
        for _ in 0..<3 {
            guard let live = try? await api.sandboxes(), !live.isEmpty else { return }
            await killAll(api, live.map(\.id))
        }
    }
}
