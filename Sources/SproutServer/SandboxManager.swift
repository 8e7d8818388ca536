import Foundation
import GRDB
import Logging
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// Owns every sandbox's lifecycle: create (with rollback), timeouts, kill,
/// and reconciliation with what is on the host after a restart.
///
/// The catalog is the source of truth; state changes go through
/// `SandboxState.transition`. Host work (runtime, network) runs on dedicated
/// threads; the actor only serialises bookkeeping, so creates run in parallel.
public actor SandboxManager {
    public struct Settings: Sendable {
        public var dataDirectory: String
        /// Holds `sprout-agent` (and the statx shim); bind-mounted read-only at `/.sprout`.
        public var agentDirectory: String
        public var defaultTimeoutSeconds = 300
        public var maxTimeoutSeconds = 86_400
        public var defaultCPU = 1.0
        public var defaultMemoryMB = 512
        public var pidsLimit = 1024
        /// What a sandbox may write to its writable layer unless it asks otherwise, MiB.
        public var defaultDiskMB = 10240
        /// Sandboxes kept started ahead of demand per env in use (0: no pool).
        public var poolSize = 2
        /// Refuse creates when the data directory has less free space than this.
        public var minimumFreeBytes: Int64 = 256 << 20
        /// gVisor only: the statx shim is in the agent directory and every
        /// sandbox preloads it (Debian's runsc rejects AT_NO_AUTOMOUNT).
        public var statxShim: String?

        public init(dataDirectory: String, agentDirectory: String) {
            self.dataDirectory = dataDirectory
            self.agentDirectory = agentDirectory
        }
    }

    static let statxShimPath = "/.sprout/statx-compat.so"
    let settings: Settings
    let catalog: Catalog
    let runtime: any SandboxRuntime
    let network: SandboxNetwork
    let pool: NetworkPool
    let bases: BaseImages
    let layers: LayerStore
    let blobs: BlobStore
    let images: ImageStore
    let instance: String
    let metrics: ServerMetrics
    let logger: Logger
    /// Creates in progress; shutdown waits for them before killing everything.
    var createsInFlight = 0
    /// Snapshots whose layer is stored but not yet referenced by an env:
    /// garbage collection waits while there are any.
    var snapshotsInFlight = 0
    /// Bytes of each built-in base, measured once.
    var baseBytes: [String: Int64] = [:]
    /// Sandboxes being snapshotted: the timeout reaper leaves them alone.
    var busy: Set<String> = []
    /// Builds in progress, so they can be cancelled.
    var buildTasks: [String: Task<Void, Never>] = [:]
    /// Envs asked for at least once: the pool keeps sandboxes of them ready.
    var pooledEnvs: [String: ResolvedEnv] = [:]
    var fillingPool = false
    /// Wakes the pool filler (see `SandboxSupervisor`).
    public nonisolated let poolWakeups: AsyncStream<Void>
    nonisolated let poolWakeup: AsyncStream<Void>.Continuation

    public init(
        settings: Settings, catalog: Catalog, runtime: any SandboxRuntime, bases: BaseImages, instance: String,
        metrics: ServerMetrics, logger: Logger
    ) {
        self.settings = settings
        self.catalog = catalog
        self.runtime = runtime
        self.network = SandboxNetwork(namespacePrefix: "sprout-\(instance)-")
        self.pool = NetworkPool()
        self.bases = bases
        self.layers = LayerStore(root: settings.dataDirectory + "/layers")
        self.blobs = BlobStore(root: settings.dataDirectory + "/blobs")
        self.images = ImageStore(root: settings.dataDirectory + "/images")
        self.instance = instance
        self.metrics = metrics
        self.logger = logger
        (poolWakeups, poolWakeup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    var sandboxesDirectory: String { settings.dataDirectory + "/sandboxes" }
    func directory(_ id: String) -> String { "\(sandboxesDirectory)/\(id)" }
    func rootfs(_ id: String, layers: [String]) -> OverlayRootfs { OverlayRootfs(layers: layers, directory: directory(id)) }
    func slotOwner(_ id: String) -> String { "\(instance)/\(id)" }

    // MARK: Queries

    /// The sandbox `id` if `identity`'s team owns it; 404 otherwise, so ids of
    /// other teams' sandboxes do not leak.
    func record(_ id: String, for identity: Identity) throws -> SandboxRecord {
        let record = try catalog.db.read { try SandboxRecord.fetchOne($0, key: id) }
        guard let record, record.team == identity.team else {
            throw SproutError(.notFound, "no sandbox with id '\(id)'")
        }
        return record
    }

    public func get(_ id: String, for identity: Identity) throws -> API.Sandbox {
        try record(id, for: identity).api(images: images)
    }

    public func list(for identity: Identity, includeEnded: Bool = false) throws -> [API.Sandbox] {
        try catalog.db.read { db in
            var query = SandboxRecord.filter(Column("team") == identity.team)
            if !includeEnded { query = query.filter(Column("state") != SandboxState.killed.rawValue) }
            return try query.order(Column("createdAt")).fetchAll(db)
        }.map(\.api)
    }

    /// A running sandbox's record; a paused one set to resume on demand is resumed first.
    func runningRecord(_ id: String, for identity: Identity) async throws -> SandboxRecord {
        var record = try record(id, for: identity)
        if record.state == .paused && record.autoResume {
            record = try await resume(record)
        }
        return record
    }

    /// A client for the agent of a running sandbox.
    public func agent(_ id: String, for identity: Identity) async throws -> AgentClient {
        let record = try await runningRecord(id, for: identity)
        guard record.state == .running, record.slot != nil else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue), not running")
        }
        return record.agentClient
    }

    /// The sandbox's env vars, which the server adds to every process it starts there.
    public func environment(_ id: String, for identity: Identity) throws -> [String: String] {
        try record(id, for: identity).envVarsDictionary
    }

    /// The sandbox's address, for port previews.
    public func address(_ id: String, for identity: Identity) async throws -> String {
        let record = try await runningRecord(id, for: identity)
        guard record.state == .running, let slot = record.slot else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue), not running")
        }
        return NetworkSlot(index: slot).sandboxAddress
    }

    public func setTimeout(_ id: String, seconds: Int, for identity: Identity) throws -> API.Sandbox {
        try validateTimeout(seconds)
        let current = try record(id, for: identity)
        guard [.running, .creating, .paused].contains(current.state) else {
            throw SproutError(.conflict, "sandbox \(id) is \(current.state.rawValue)")
        }
        return try catalog.db.write { db in
            guard var record = try SandboxRecord.fetchOne(db, key: id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
            if record.state == .paused {
                // The clock starts again at resume.
                record.remainingSeconds = Double(seconds)
            } else {
                record.expiresAt = now() + Double(seconds)
            }
            try record.update(db)
            return record.api
        }
    }

    func validateTimeout(_ seconds: Int) throws {
        guard seconds >= 1 && seconds <= settings.maxTimeoutSeconds else {
            throw SproutError(.invalidArgument, "timeoutSeconds must be between 1 and \(settings.maxTimeoutSeconds), got \(seconds)")
        }
    }

    func publishStateCounts() {
        let counts = (try? catalog.db.read { db in
            try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM sandbox GROUP BY state")
                .reduce(into: [String: Int]()) { $0[$1["state"]] = $1["n"] }
        }) ?? [:]
        metrics.sandboxesByState(counts)
        var pooled = (try? catalog.db.read { db in
            try Row.fetchAll(db, sql: "SELECT env, COUNT(*) AS n FROM sandbox WHERE state = 'pooled' GROUP BY env")
                .reduce(into: [String: Int]()) { $0[$1["env"]] = $1["n"] }
        }) ?? [:]
        for env in pooledEnvs.keys where pooled[env] == nil { pooled[env] = 0 }
        metrics.poolReady(pooled)
    }
}

extension SandboxRecord {
    /// A client for this sandbox's agent, at its network slot's address.
    var agentClient: AgentClient {
        AgentClient(endpoint: AgentEndpoint(
            host: NetworkSlot(index: slot ?? 0).sandboxAddress, port: AgentProtocol.defaultPort, token: agentToken))
    }

    var api: API.Sandbox {
        API.Sandbox(
            id: id, env: env, runtime: runtime, state: state.rawValue, team: team, createdAt: createdAt,
            expiresAt: state == .killed ? nil : expiresAt, endedAt: endedAt, cpu: cpu, memoryMB: memoryMB,
            internet: internet, egress: egress.map { SandboxRecord.decodeList($0) }, diskMB: diskMB, metadata: metadataDictionary, envVarNames: envVarsDictionary.keys.sorted(),
            address: slot.map { NetworkSlot(index: $0).sandboxAddress }, error: error,
            autoResume: state == .paused ? autoResume : nil, remainingSeconds: state == .paused ? remainingSeconds : nil)
    }
}
