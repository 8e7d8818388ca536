import SproutCore

/// The runtimes Sprout can drive.
public enum RuntimeKind: String, Sendable, Codable, CaseIterable {
    /// gVisor (`runsc`): a user-space kernel, the default for untrusted code.
    case gvisor
    /// `runc`: namespaces and seccomp on the host kernel; faster, weaker.
    case runc

    /// The Debian package that provides the runtime binary.
    public var package: String {
        switch self {
        case .gvisor: "runsc"
        case .runc: "runc"
        }
    }

    public var binary: String {
        switch self {
        case .gvisor: "runsc"
        case .runc: "runc"
        }
    }
}

/// How gVisor intercepts a sandbox's system calls (`runsc --platform`).
///
/// Measured with `sprout bench --only workload.*` on the 2-core build
/// machine (a VM; docs/performance.md): `systrap` runs a tight loop of
/// system calls about 6x faster than `ptrace`, but everything else agents
/// run was slower on it: a process start 2.4-2.7x, `python3 -c pass` 1.6-2x,
/// `git status` 1.2-1.8x, a pandas cell about 2x, apt 1.5x, pip the same.
/// So `ptrace` is Sprout's default and `systrap` a server setting for
/// syscall-bound work.
public enum GVisorPlatform: String, Sendable, Codable, CaseIterable {
    case systrap
    case ptrace
}

/// What a runtime can do beyond running containers.
public struct RuntimeCapabilities: Sendable, Codable, Equatable {
    /// Can checkpoint a running container's memory and restore it.
    public var memorySnapshot: Bool
    public init(memorySnapshot: Bool) { self.memorySnapshot = memorySnapshot }
}

/// Everything a runtime needs to start one sandbox's container.
public struct ContainerLaunch: Sendable {
    public var spec: ContainerSpec
    public var rootfs: OverlayRootfs
    /// The sandbox's network slot (its addresses).
    public var slot: NetworkSlot
    /// Where the runtime's own log (and the container's stderr) goes.
    public var logPath: String
    /// The line on the container's stdout that means it is ready.
    public var readyPrefix: String
    public var readyTimeoutSeconds: Double

    public init(
        spec: ContainerSpec, rootfs: OverlayRootfs, slot: NetworkSlot, logPath: String, readyPrefix: String, readyTimeoutSeconds: Double = 30
    ) {
        self.spec = spec
        self.rootfs = rootfs
        self.slot = slot
        self.logPath = logPath
        self.readyPrefix = readyPrefix
        self.readyTimeoutSeconds = readyTimeoutSeconds
    }
}

/// What a running sandbox's cgroups say it uses.
public struct ResourceUsage: Sendable, Equatable {
    /// Memory charged to the sandbox (its processes, and under gVisor the sentry's own).
    public var memoryBytes: Int64
    /// `memoryBytes` less the page cache the kernel can drop: what counts against the limit.
    public var workingSetBytes: Int64
    /// CPU time used since the container started.
    public var cpuNanoseconds: UInt64
    /// How many times the kernel's OOM killer acted in the sandbox's cgroup.
    public var oomKills: Int
    /// The page cache charged to it.
    public var cacheBytes: Int64

    public init(memoryBytes: Int64, workingSetBytes: Int64, cpuNanoseconds: UInt64, oomKills: Int, cacheBytes: Int64 = 0) {
        self.cacheBytes = cacheBytes
        self.memoryBytes = memoryBytes
        self.workingSetBytes = workingSetBytes
        self.cpuNanoseconds = cpuNanoseconds
        self.oomKills = oomKills
    }
}

/// A container runtime driver.
public protocol SandboxRuntime: Sendable {
    var kind: RuntimeKind { get }
    var capabilities: RuntimeCapabilities { get }
    /// What the runtime binary says its version is.
    var version: String { get }
    /// gVisor's platform; nil for other runtimes.
    var platform: String? { get }
    /// Mounts the root file system, writes the bundle, starts the container
    /// and waits for its ready line. On failure, removes what it made.
    func start(_ launch: ContainerLaunch) async throws
    /// Saves the container's memory (every process, as it stands) into
    /// `imageDirectory`; the container then stops, is deleted and its root
    /// file system unmounted. This happens on failure too: gVisor ends a
    /// sandbox whose save failed. Throws `unsupported` without the
    /// `memorySnapshot` capability.
    func checkpoint(id: String, rootfs: OverlayRootfs, imageDirectory: String) async throws
    /// Starts a container from a memory image instead of booting it. The
    /// network namespace must hold the addresses the sandbox should have.
    /// On failure, removes what it made.
    func restore(_ launch: ContainerLaunch, imageDirectory: String) async throws
    /// Stops and deletes the container and unmounts its root file system.
    /// Idempotent; never throws.
    func destroy(id: String, rootfs: OverlayRootfs) async
    /// Ids of every container this runtime's state directory knows.
    func containerIDs() async -> [String]
    /// The host process whose end means the container ended (gVisor's
    /// sandbox process, runc's init), or nil if it is not running.
    func containerProcess(id: String) async -> ContainerProcess?
    /// What the container's cgroups say it uses, if it has them.
    func usage(id: String) -> ResourceUsage?
    /// Sets the memory the kernel lets the container's cgroup use, in bytes.
    func setMemoryLimit(id: String, bytes: Int64) throws
    /// Ends the runtime's own helpers.
    func shutdown() async
}

extension SandboxRuntime {
    /// What pause, resume, live fork and warm starts answer where this
    /// runtime cannot save memory (one message, wherever it is refused).
    public var memorySnapshotsUnsupported: SproutError {
        SproutError(.unsupported,
            "the \(kind.rawValue) runtime cannot snapshot memory on this host (CRIU fails on this kernel): pause, resume, live fork and warm starts need a server started with --runtime gvisor")
    }

    /// Throws `memorySnapshotsUnsupported` unless this runtime saves memory.
    public func requireMemorySnapshots() throws {
        guard capabilities.memorySnapshot else { throw memorySnapshotsUnsupported }
    }
}

/// A host process, named so that a reused pid is never mistaken for it.
public struct ContainerProcess: Sendable, Equatable {
    public var pid: Int32
    /// Its start time in clock ticks since boot (field 22 of /proc/PID/stat).
    public var startTime: UInt64

    public init(pid: Int32, startTime: UInt64) {
        self.pid = pid
        self.startTime = startTime
    }
}
