import Foundation
import Logging
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutS3
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
    /// that were running before it existed (`SandboxLifecycle.envFile`). The fake
    /// host's sandboxes are host processes, so it names a file of its own.
    public var envFile: String

    public init(runtime: any SandboxRuntime, network: any SandboxNetworking, addresses: any AddressPool, bases: any BaseProvider,
                watchesMemory: Bool, envFile: String = SandboxLifecycle.envFile) {
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
    /// Registries pulled from over plain HTTP (`HOST:PORT`, `--insecure-registry`).
    public var insecureRegistries: Set<String> = []
    /// Registry logins, docker's `config.json` format (`--registry-auth`).
    public var registryAuthFile: String?
    /// Pooled sandboxes per env in demand (0: no pool).
    public var poolSize = 2
    /// Pooled sandboxes in all.
    public var poolBudget = 8
    /// An env keeps its pool this long after the last create that could use it.
    public var poolIdleSeconds = 600.0
    /// The newest memory images kept whole for quick resumes, bytes at most (`KeptImages`; 0: none).
    public var keptImageBytes: Int64 = 64 << 20
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

    /// This data directory's short id: it names the server's host resources.
    public var instance: String
    /// This server's id as a node of a fleet (`node-<instance>`), nil alone.
    public var node: String?

    public init(dataDirectory: String, agentDirectory: String, instance: String = "") {
        self.dataDirectory = dataDirectory
        self.agentDirectory = agentDirectory
        self.instance = instance
    }

    /// Who holds a sandbox's host-wide network slot.
    func slotOwner(_ id: String) -> String { "\(instance)/\(id)" }

    var sandboxesDirectory: String { dataDirectory + "/sandboxes" }
    func directory(_ id: String) -> String { "\(sandboxesDirectory)/\(id)" }
    /// Names the object store's copy of the sandbox's writable layer while the local one is that copy (`--store`).
    func storedUpperMarker(_ id: String) -> String { directory(id) + "/stored-upper" }
    var buildsDirectory: String { dataDirectory + "/builds" }
    var readyImagesDirectory: String { dataDirectory + "/images/ready" }
}

/// The three stores: layers, blobs, memory images, all under the data
/// directory; and, with `--store`, the object store that paused sandboxes'
/// images and writable layers are put in before a pause is acknowledged.
struct Stores: Sendable {
    let layers: LayerStore
    let blobs: BlobStore
    let images: ImageStore
    let remote: RemoteStore?
    /// `--cache-gb` (with `remote`): the most the host keeps of copies of what the store holds.
    let cacheBytes: Int64?

    init(dataDirectory: String, remote: S3Client? = nil, cacheBytes: Int64? = nil) {
        self.cacheBytes = remote == nil ? nil : cacheBytes
        layers = LayerStore(root: dataDirectory + "/layers")
        blobs = BlobStore(root: dataDirectory + "/blobs")
        let images = ImageStore(root: dataDirectory + "/images")
        self.images = images
        self.remote = remote.map { RemoteStore(client: $0, images: images, directory: dataDirectory + "/remote") }
    }
}

/// Connections to sandboxes' agents, at the address their network slot gives.
struct AgentConnector: Sendable {
    let network: any SandboxNetworking

    func client(_ record: SandboxRecord, connectTimeout: Double = 10) -> AgentClient {
        let endpoint = network.agentEndpoint(NetworkSlot(index: record.slot ?? 0))
        var client = AgentClient(endpoint: AgentEndpoint(host: endpoint.host, port: endpoint.port, token: record.agentToken))
        client.connectTimeoutSeconds = connectTimeout
        return client
    }
}

/// The host process of each running container (for noticing a death) and,
/// on a real host, its memory cgroup (for `MemoryGuard`).
final class ContainerWatch: Sendable {
    let runtime: any SandboxRuntime
    let memory: MemoryGuard?
    let logger: Logger
    private let processes = Locked<[String: ContainerProcess]>([:])

    init(runtime: any SandboxRuntime, memory: MemoryGuard?, logger: Logger) {
        self.runtime = runtime
        self.memory = memory
        self.logger = logger
    }

    /// Starts watching a running sandbox: its container process and its memory.
    func watch(_ record: SandboxRecord) async {
        if let process = await runtime.containerProcess(id: record.id) {
            processes.withLock { $0[record.id] = process }
        }
        do {
            try memory?.watch(record)
        } catch {
            logger.withSandbox(record.id).warning("cannot watch the sandbox's memory: only the kernel's hard limit applies",
                                                  metadata: ["error": "\(error)"])
        }
    }

    func unwatch(_ id: String) {
        processes.withLock { _ = $0.removeValue(forKey: id) }
        memory?.unwatch(id)
    }

    /// Watched sandboxes whose container process is gone.
    func ended() -> [(id: String, process: ContainerProcess)] {
        processes.current.filter { !ProcessWatch.isAlive($0.value) }.map { ($0.key, $0.value) }
    }

    /// Whether `process` is still what `id` is watched by (no operation stopped it on purpose meanwhile).
    func isWatching(_ id: String, _ process: ContainerProcess) -> Bool { processes.current[id] == process }
}

extension Logger {
    /// A logger that tags every line with the sandbox id.
    func withSandbox(_ id: String) -> Logger {
        var copy = self
        copy[metadataKey: "sandbox"] = "\(id)"
        return copy
    }
}
