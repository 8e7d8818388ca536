import Foundation
import Logging
import SproutAPI
import SproutAgentClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// The one owner of every sandbox's lifecycle: create, kill, pause, resume,
/// wake, fork, snapshot, timeouts, deaths. Every state change is a
/// transition of `SandboxMachine` in the catalog, under the operation gate,
/// and the action the machine returns is what this does next (`perform`).
/// The pool, the supervisor, builds and the HTTP routes ask it; it asks none
/// of them (the pool learns of demand through `PoolDemand`).
///
/// Its parts, in files of their own: `+Access` (queries, a running
/// sandbox's agent, network and timeout changes), `+Create`, `+Kill`,
/// `+Pause` (pause, resume, wake), `+Fork`, `+Snapshot`, `+Policies`
/// (what timeouts, idleness and memory pressure do).
public final class SandboxLifecycle: Sendable {
    let settings: Settings
    let catalog: Catalog
    let host: SandboxHost
    let stores: Stores
    let launcher: SandboxLauncher
    let checkpoint: Checkpointer
    let graph: EnvGraph
    let collector: GarbageCollector
    let admission: MemoryAdmission
    let activity: SandboxActivity
    let demand: PoolDemand
    let agents: AgentConnector
    let sandboxMetrics: SandboxMetrics
    let gate = OperationGate()
    let clock: any WallClock
    let metrics: ServerMetrics
    let logger: Logger
    /// Creates users wait for; the pool yields to them and shutdown waits for them.
    let createsInFlight = CreatesInFlight()

    init(
        settings: Settings, catalog: Catalog, host: SandboxHost, stores: Stores, launcher: SandboxLauncher, checkpoint: Checkpointer,
        graph: EnvGraph, collector: GarbageCollector, admission: MemoryAdmission, activity: SandboxActivity, demand: PoolDemand,
        agents: AgentConnector, sandboxMetrics: SandboxMetrics, clock: any WallClock, metrics: ServerMetrics, logger: Logger
    ) {
        self.settings = settings
        self.catalog = catalog
        self.host = host
        self.stores = stores
        self.launcher = launcher
        self.checkpoint = checkpoint
        self.graph = graph
        self.collector = collector
        self.admission = admission
        self.activity = activity
        self.demand = demand
        self.agents = agents
        self.sandboxMetrics = sandboxMetrics
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
    }

    var repository: SandboxRepository { catalog.sandboxes }
    var runtime: any SandboxRuntime { host.runtime }
    var network: any SandboxNetworking { host.network }

    /// Pause, resume, live fork and warm starts need the runtime to save memory.
    func requireMemorySnapshots() throws { try runtime.requireMemorySnapshots() }

    /// Carries out what the machine asked for that the host alone does
    /// (the checkpoint and restore actions are the pause, fork and resume
    /// flows themselves, which switch on them).
    func perform(_ action: SandboxMachine.Action, _ record: SandboxRecord) async {
        switch action {
        case .none: break
        case .teardown:
            await launcher.teardown(record)
            await checkpoint.keptImages.forget(record.id)
        case .removeContainer: await launcher.removeContainer(record)
        case .checkpoint, .stopContainer, .restoreFromImage, .bootFromFiles:
            logger.withSandbox(record.id).error("\(action) is not done by perform: its flow does it")
        }
    }

    /// Returns once no create users wait for is in flight (the pool yields to them).
    func createsSettled() async { await createsInFlight.settled() }

    /// Admits `memoryMB` more for `ids`, putting idle sandboxes to sleep first if the budget or the host needs it.
    func admit(_ ids: [String], memoryMB: Int) async throws -> MemoryReservation {
        try await admission.admit(ids, memoryMB: memoryMB) { await self.pauseForMemory($0, reason: $1, why: $2) }
    }

    func publishStateCounts() async {
        let counts = (try? await repository.countsByState()) ?? [:]
        metrics.sandboxesByState(counts)
    }
}
