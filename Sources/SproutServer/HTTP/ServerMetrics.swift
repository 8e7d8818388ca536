import SproutAPI
import Prometheus

/// The server's Prometheus metrics, in a registry of its own (so several
/// servers can live in one process, as in tests). Served at `/metrics`.
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    static let latencyBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    public init() {}

    private func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "sprout", metricName: name, unitName: "", helpText: help)
    }

    /// A swift-metrics factory that writes into this registry: `sprout
    /// server` bootstraps the Metrics API with it, so request metrics (and
    /// anything else recorded through that API) appear at /metrics.
    public var factory: PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.latencyBuckets.map { .nanoseconds(Int64($0 * 1e9)) }
        return factory
    }

    func sandboxesByState(_ counts: [String: Int]) {
        for state in SandboxState.allCases.map(\.rawValue) {
            registry.makeGauge(descriptor: descriptor("sandboxes", "Sandboxes by state"), labels: [("state", state)])
                .set(Double(counts[state] ?? 0))
        }
    }

    /// Bytes in use on each mounted volume.
    func volumeUsage(_ volumes: [(id: String, name: String, team: String, used: Int64)]) {
        for volume in volumes { volumeGauge(volume.id, volume.name, volume.team).set(Double(volume.used)) }
    }

    /// A deleted volume's series goes.
    func volumeDeleted(_ id: String, _ name: String, _ team: String) {
        registry.unregisterGauge(volumeGauge(id, name, team))
    }

    private func volumeGauge(_ id: String, _ name: String, _ team: String) -> Gauge {
        registry.makeGauge(descriptor: descriptor("volume_used_bytes", "Bytes in use on a volume"),
                           labels: [("volume", id), ("name", name), ("team", team)])
    }

    /// How many pooled sandboxes the pool's plan keeps for each env in demand.
    func poolTargets(_ targets: [String: Int]) {
        for (env, count) in targets {
            registry.makeGauge(descriptor: descriptor("pool_target", "Pooled sandboxes the plan keeps, by env"), labels: [("env", env)])
                .set(Double(count))
        }
    }

    /// A process inside a sandbox was ended because the sandbox reached its memory limit.
    func outOfMemoryKill() {
        registry.makeCounter(descriptor: descriptor("oom_kills_total", "Processes ended at a sandbox's memory limit"), labels: []).increment()
    }

    /// The supervisor finished a round of its checks (timeouts, idle, liveness, memory, pool): it is alive.
    func supervisorRound() {
        registry.makeCounter(descriptor: descriptor("supervisor_rounds_total", "Rounds of the supervisor's checks"), labels: []).increment()
    }

    /// A sandbox's container ended on its own (host OOM killer, runtime crash).
    func died() {
        registry.makeCounter(descriptor: descriptor("sandbox_deaths_total", "Sandboxes whose container ended on its own"), labels: []).increment()
    }

    func create(result: String, seconds: Double) {
        registry.makeCounter(descriptor: descriptor("sandbox_creates_total", "Sandbox creates by result"), labels: [("result", result)])
            .increment()
        if result == "ok" {
            registry.makeValueHistogram(
                descriptor: descriptor("sandbox_create_duration_seconds", "Time from request to a ready agent"),
                labels: [], buckets: Self.latencyBuckets
            ).record(seconds)
        }
    }

    func kill(reason: String, seconds: Double) {
        registry.makeCounter(descriptor: descriptor("sandbox_kills_total", "Sandbox kills by reason"), labels: [("reason", reason)])
            .increment()
        registry.makeValueHistogram(
            descriptor: descriptor("sandbox_kill_duration_seconds", "Time to tear a sandbox down"),
            labels: [], buckets: Self.latencyBuckets
        ).record(seconds)
    }

    func runtimeError(operation: String) {
        registry.makeCounter(descriptor: descriptor("runtime_errors_total", "Runtime failures by operation"), labels: [("operation", operation)])
            .increment()
    }

    /// A sandbox's timeout paused it (or tried to).
    func timeoutPause(result: String) {
        registry.makeCounter(descriptor: descriptor("timeout_pauses_total", "Sandboxes paused by their timeout, by result"), labels: [("result", result)])
            .increment()
    }

    /// An idle sandbox was paused to make room in memory (`reason`: budget or host).
    func pressurePause(reason: String) {
        registry.makeCounter(descriptor: descriptor("pressure_pauses_total", "Idle sandboxes paused for memory, by reason"), labels: [("reason", reason)])
            .increment()
    }

    /// A create, resume or fork refused because the memory budget was full of busy sandboxes.
    func pressureRefusal() {
        registry.makeCounter(descriptor: descriptor("pressure_refusals_total", "Operations refused for want of sandbox memory"), labels: []).increment()
    }

    /// A garbage collection sweep of `store`, and the host's copies of what the object store has it evicted (`--cache-gb`).
    func sweep(store: String, evicted: Int) {
        registry.makeCounter(descriptor: descriptor("store_sweeps_total", "Garbage collection sweeps by store"), labels: [("store", store)]).increment()
        if evicted > 0 {
            registry.makeCounter(descriptor: descriptor("cache_evictions_total", "Copies of what the object store has evicted by --cache-gb, by store"),
                                 labels: [("store", store)]).increment(by: Int64(evicted))
        }
    }

    /// A collection of the object store, and the objects it deleted by kind.
    func storeCollected(_ report: API.StoreCollection) {
        registry.makeCounter(descriptor: descriptor("store_collections_total", "Collections of the object store"), labels: []).increment()
        for (kind, count) in report.deleted where count > 0 {
            registry.makeCounter(descriptor: descriptor("store_collected_objects_total", "Objects the object store's collection deleted, by kind"),
                                 labels: [("kind", kind)]).increment(by: Int64(count))
        }
    }

    /// A request woke a sleeping sandbox.
    func wake() {
        registry.makeCounter(descriptor: descriptor("wakes_total", "Sleeping sandboxes resumed by a request"), labels: []).increment()
    }

    /// Pause, resume and fork durations.
    func memoryOperation(_ operation: String, seconds: Double) {
        registry.makeValueHistogram(
            descriptor: descriptor("memory_snapshot_duration_seconds", "Pause, resume and live fork durations"),
            labels: [("operation", operation)], buckets: Self.latencyBuckets
        ).record(seconds)
    }

    /// The sandbox's wall clock minus the host's right after a restore.
    func clockSkew(_ seconds: Double) {
        registry.makeGauge(descriptor: descriptor("restore_clock_skew_seconds", "Sandbox clock minus host clock after the last restore"), labels: [])
            .set(seconds)
    }

    public func text() -> String { registry.emitToString() }
}
