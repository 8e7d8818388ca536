import Foundation
import Histogram
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// Latency samples in microseconds, summarised with an HDR histogram.
struct Samples {
    private var histogram = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    private(set) var count = 0

    mutating func record(seconds: Double) {
        _ = histogram.record(UInt64(max(1, seconds * 1e6)))
        count += 1
    }

    /// The summary in `unit` (ms).
    func summary() -> Figures? {
        guard count > 0 else { return nil }
        func ms(_ us: UInt64) -> Double { Double(us) / 1000 }
        return Figures(
            runs: count, p50: ms(histogram.valueAtPercentile(50)), p95: ms(histogram.valueAtPercentile(95)),
            p99: ms(histogram.valueAtPercentile(99)), min: ms(histogram.min), max: ms(histogram.maxRecorded))
    }
}

/// Percentiles of one measured quantity.
struct Figures: Codable {
    var runs: Int
    var p50: Double
    var p95: Double
    var p99: Double
    var min: Double
    var max: Double

    /// A single value (throughput, memory) reported in the same shape.
    static func single(_ value: Double, runs: Int = 1) -> Figures {
        Figures(runs: runs, p50: value, p95: value, p99: value, min: value, max: value)
    }

    static func of(_ values: [Double]) -> Figures? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        func at(_ p: Double) -> Double { sorted[Swift.min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)] }
        return Figures(runs: values.count, p50: at(0.5), p95: at(0.95), p99: at(0.99), min: sorted.first!, max: sorted.last!)
    }
}

/// One line of the report: a metric, its baseline from the same run, and their ratio.
struct MetricResult: Codable {
    var name: String
    var unit: String
    var available: Bool
    var note: String?
    var runs: Int?
    var p50: Double?
    var p95: Double?
    var p99: Double?
    var min: Double?
    var max: Double?
    var baseline: Baseline?
    /// p50 divided by the baseline's p50.
    var ratio: Double?

    struct Baseline: Codable {
        var name: String
        var runs: Int
        var p50: Double
        var p95: Double
        var p99: Double
        var min: Double
        var max: Double
    }

    init(name: String, unit: String, figures: Figures, baselineName: String? = nil, baseline: Figures? = nil, note: String? = nil) {
        self.name = name
        self.unit = unit
        self.available = true
        self.note = note
        runs = figures.runs
        p50 = figures.p50
        p95 = figures.p95
        p99 = figures.p99
        min = figures.min
        max = figures.max
        if let baseline, let baselineName {
            self.baseline = Baseline(name: baselineName, runs: baseline.runs, p50: baseline.p50, p95: baseline.p95,
                                     p99: baseline.p99, min: baseline.min, max: baseline.max)
            ratio = baseline.p50 > 0 ? figures.p50 / baseline.p50 : nil
        }
    }

    static func unavailable(_ name: String, unit: String, why: String) -> MetricResult {
        var r = MetricResult(name: name, unit: unit, figures: .single(0))
        r.available = false
        r.note = why
        r.runs = nil
        r.p50 = nil
        r.p95 = nil
        r.p99 = nil
        r.min = nil
        r.max = nil
        return r
    }
}

/// The whole report.
struct BenchReport: Codable {
    struct Machine: Codable {
        var cores: Int
        var memoryGiB: Double
        var kernel: String
        var runtime: String
        var runtimeVersion: String
        var platform: String?
    }

    /// The servers the run started and removed: their instance and sandboxes,
    /// so a check of the host afterwards can tell theirs from another's.
    struct Server: Codable {
        var instance: String
        var sandboxes: [String]
        /// Its data directory (removed).
        var data: String
    }

    var machine: Machine
    var startedAt: String
    var seconds: Double
    var metrics: [MetricResult]
    var servers: [Server] = []
    /// The bare runtimes' scratch folders (removed).
    var scratch: [String] = []

    func printTable() {
        print("machine: \(machine.cores) cores, \(String(format: "%.1f", machine.memoryGiB)) GiB, Linux \(machine.kernel), \(machine.runtime) \(machine.runtimeVersion)\(machine.platform.map { ", platform \($0)" } ?? "")")
        let header = ["metric", "unit", "runs", "p50", "p95", "p99", "baseline", "base p50", "ratio"]
        var rows: [[String]] = []
        func f(_ v: Double?) -> String { v.map { $0 >= 100 ? String(format: "%.0f", $0) : String(format: "%.2f", $0) } ?? "-" }
        for m in metrics {
            if !m.available {
                rows.append([m.name, m.unit, "-", "not available", "", "", "", "", ""])
                continue
            }
            rows.append([m.name, m.unit, m.runs.map(String.init) ?? "-", f(m.p50), f(m.p95), f(m.p99),
                         m.baseline?.name ?? "-", f(m.baseline?.p50), m.ratio.map { String(format: "%.2fx", $0) } ?? "-"])
        }
        Output.table(header, rows)
        for m in metrics { if let note = m.note { print("  \(m.name): \(note)") } }
        print(String(format: "total %.0f s", seconds))
    }
}
