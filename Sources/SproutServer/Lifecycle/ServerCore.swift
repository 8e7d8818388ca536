import Foundation
import Logging
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// What the server needs from the machine it runs on. `SandboxHost.real`
/// drives runsc or runc, network namespaces and nftables; the fast test tier
/// passes fakes on loopback (see `SproutUnitTests/FakeHost.swift`).
public struct SandboxHost: Sendable {
    public var runtime: any SandboxRuntime
    public var network: any SandboxNetworking
    public var addresses: any AddressPool
    public var bases: any BaseProvider
    /// Whether to watch memory cgroups (the fake has none).
    public var watchesMemory: Bool
    /// Where, inside a sandbox, its own variables are written for processes
    /// that were running before it existed (`Sandboxes.envFile`). The fake
    /// host's sandboxes are host processes, so it names a file of its own.
    public var envFile: String

    public init(runtime: any SandboxRuntime, network: any SandboxNetworking, addresses: any AddressPool, bases: any BaseProvider,
                watchesMemory: Bool, envFile: String = Sandboxes.envFile) {
        self.runtime = runtime
        self.network = network
        self.addresses = addresses
        self.bases = bases
        self.watchesMemory = watchesMemory
        self.envFile = envFile
    }
}

/// The server's settings that shape sandboxes. Every field has a default.
public struct Settings: Sendable {
    public var dataDirectory: String
    /// Holds `sprout-agent`; bind-mounted read-only at `/.sprout`.
    public var agentDirectory: String
    public var defaultTimeoutSeconds = 300
    public var maxTimeoutSeconds = 86_400
    public var defaultCPU = 1.0
    public var defaultMemoryMB = 512
    public var pidsLimit = 1024
    /// What a sandbox may write to its writable layer unless it asks otherwise, MiB.
    public var defaultDiskMB = 10240
    /// Pooled sandboxes per env in demand (0: no pool).
    public var poolSize = 2
    /// Pooled sandboxes in all.
    public var poolBudget = 8
    /// An env keeps its pool this long after the last create that could use it.
    public var poolIdleSeconds = 600.0
    /// Refuse creates when the data directory has less free space than this.
    public var minimumFreeBytes: Int64 = 256 << 20
    /// Paused sandboxes a team may hold (they cost disk, not memory).
    public var maxPausedPerTeam = 1000
    /// The teams' sandboxes' memory limits may add up to this (MiB; 0: no budget).
    public var memoryBudgetMB = 0
    /// Below this much MemAvailable on the host (MiB; 0: never), idle sandboxes are paused.
    public var minimumFreeMemoryMB = 0
    /// Only sandboxes idle this long are paused for memory.
    public var pressureIdleSeconds = 30.0
    /// gVisor only: a layer holding `/usr/local/bin/sudo`, a symlink to the
    /// agent, laid over envs that have sudo (gVisor ignores setuid, so the
    /// real sudo cannot work; the agent runs what `/etc/sudoers` allows).
    public var sudoLayer: String?
    /// `--trust-host-ca`: the host's certificates, given to every sandbox.
    public var hostCABundle: [UInt8]?

    /// What every process in a sandbox gets from the server itself.
    var serverEnvironment: [String: String] { hostCABundle == nil ? [:] : HostCertificates.environment }

    public init(dataDirectory: String, agentDirectory: String) {
        self.dataDirectory = dataDirectory
        self.agentDirectory = agentDirectory
    }

    var sandboxesDirectory: String { dataDirectory + "/sandboxes" }
    func directory(_ id: String) -> String { "\(sandboxesDirectory)/\(id)" }
    var buildsDirectory: String { dataDirectory + "/builds" }
    var readyImagesDirectory: String { dataDirectory + "/images/ready" }
}

/// Everything the server's services share: settings, the catalog, the host,
/// the stores, and the coordination of work in flight (the operation gate,
/// store leases, watched containers). Services hold one and keep no
/// lifecycle state of their own beyond what they say they do.
public final class ServerCore: Sendable {
    public let settings: Settings
    public let catalog: Catalog
    public let host: SandboxHost
    let layers: LayerStore
    let blobs: BlobStore
    let images: ImageStore
    let instance: String
    public let metrics: ServerMetrics
    let logger: Logger
    let gate = OperationGate()
    let leases = StoreLeases()
    /// The host process of each running container, for noticing deaths.
    let containers = Locked<[String: ContainerProcess]>([:])
    /// Creates users wait for; the pool yields to them and shutdown waits for them.
    let createsInFlight = Locked(0)
    /// Set by `startMemoryGuard` on a real host.
    let memoryGuardBox = Locked<MemoryGuard?>(nil)
    /// The warm pool (set once by `buildApplication`).
    let poolBox = Locked<WarmPool?>(nil)
    var pool: WarmPool? { poolBox.current }
    /// Each sandbox's resources over time.
    let sandboxMetrics = SandboxMetrics()
    /// When each sandbox was last used (idle detection).
    let activity = SandboxActivity()
    /// Memory admitted to sandboxes on their way to running (`MemoryPressure`).
    let memoryReservations = MemoryLedger()
    /// Bytes of each built-in base, measured once.
    let baseBytes = Locked<[String: Int64]>([:])

    public init(settings: Settings, catalog: Catalog, host: SandboxHost, instance: String, metrics: ServerMetrics, logger: Logger) {
        self.settings = settings
        self.catalog = catalog
        self.host = host
        self.layers = LayerStore(root: settings.dataDirectory + "/layers")
        self.blobs = BlobStore(root: settings.dataDirectory + "/blobs")
        self.images = ImageStore(root: settings.dataDirectory + "/images")
        self.instance = instance
        self.metrics = metrics
        self.logger = logger
    }

    var runtime: any SandboxRuntime { host.runtime }
    var network: any SandboxNetworking { host.network }

    func slotOwner(_ id: String) -> String { "\(instance)/\(id)" }

    /// A client for a sandbox's agent.
    func agent(_ record: SandboxRecord, connectTimeout: Double = 10) -> AgentClient {
        let endpoint = network.agentEndpoint(NetworkSlot(index: record.slot ?? 0))
        var client = AgentClient(endpoint: AgentEndpoint(host: endpoint.host, port: endpoint.port, token: record.agentToken))
        client.connectTimeoutSeconds = connectTimeout
        return client
    }

    func requireMemorySnapshots() throws {
        guard runtime.capabilities.memorySnapshot else {
            throw SproutError(.unsupported,
                "the \(runtime.kind.rawValue) runtime cannot snapshot memory on this host (CRIU fails on this kernel): pause, resume and live fork need a server started with --runtime gvisor")
        }
    }

    func publishStateCounts() async {
        let counts = (try? await catalog.sandboxes.countsByState()) ?? [:]
        metrics.sandboxesByState(counts)
    }
}

extension Logger {
    /// A logger that tags every line with the sandbox id.
    func withSandbox(_ id: String) -> Logger {
        var copy = self
        copy[metadataKey: "sandbox"] = "\(id)"
        return copy
    }
}
