import Foundation
import SproutAPI
import SproutCore
import SproutRuntime
import SproutSystem

/// Each sandbox's resources over its life: CPU, memory (from its cgroup) and
/// disk (its writable layer, as `DiskWatch` measures it), sampled every
/// `interval` while it runs. Kept in memory for the sandbox's life: past
/// `capacity` samples the older half is thinned to every other sample, so a
/// long life keeps its whole span at a coarser grain. Dropped with the sandbox.
final class SandboxMetrics: Sendable {
    static let interval = 5.0
    static let capacity = 17_280  // a day at 5 s

    private struct Series {
        var samples: [API.SandboxMetric] = []
        var lastCPU: (at: Double, nanoseconds: UInt64)?
        var diskBytes: Int64 = 0
    }
    private let series = Locked<[String: Series]>([:])
    let capacity: Int

    init(capacity: Int = SandboxMetrics.capacity) { self.capacity = capacity }

    /// The latest size of the sandbox's writable layer (DiskWatch measures it).
    func recordDisk(_ id: String, bytes: Int64) {
        series.withLock { $0[id, default: Series()].diskBytes = bytes }
    }

    /// Adds one sample for a running sandbox.
    func sample(_ record: SandboxRecord, usage: ResourceUsage, at now: Double, defaultDiskMB: Int) {
        series.withLock { all in
            var s = all[record.id, default: Series()]
            var percent = 0.0
            if let last = s.lastCPU, now > last.at, usage.cpuNanoseconds >= last.nanoseconds {
                let used = Double(usage.cpuNanoseconds - last.nanoseconds) / 1e9
                percent = min(100, 100 * used / ((now - last.at) * max(record.cpu, 0.01)))
            }
            s.lastCPU = (now, usage.cpuNanoseconds)
            s.samples.append(API.SandboxMetric(
                timestamp: now, cpuCount: max(1, Int(record.cpu.rounded(.up))), cpuUsedPct: (percent * 100).rounded() / 100,
                memUsedBytes: usage.workingSetBytes, memTotalBytes: Int64(record.memoryMB) << 20, memCacheBytes: usage.cacheBytes,
                diskUsedBytes: s.diskBytes, diskTotalBytes: Int64(record.diskMB ?? defaultDiskMB) << 20))
            if s.samples.count > capacity {
                let half = s.samples.count / 2
                let thinned = s.samples[..<half].enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
                s.samples = thinned + s.samples[half...]
            }
            all[record.id] = s
        }
    }

    /// Samples with `start <= timestamp <= end`, oldest first.
    func samples(_ id: String, start: Double? = nil, end: Double? = nil) -> [API.SandboxMetric] {
        let all = series.withLock { $0[id]?.samples ?? [] }
        return all.filter { sample in sample.timestamp >= (start ?? -.infinity) && sample.timestamp <= (end ?? .infinity) }
    }

    /// Forgets every sandbox not in `live`.
    func keep(only live: Set<String>) {
        series.withLock { all in all = all.filter { live.contains($0.key) } }
    }
}
