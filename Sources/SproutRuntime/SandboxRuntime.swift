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
    /// Where the runtime's own log (and the container's stderr) goes.
    public var logPath: String
    /// The line on the container's stdout that means it is ready.
    public var readyPrefix: String
    public var readyTimeoutSeconds: Double

    public init(spec: ContainerSpec, rootfs: OverlayRootfs, logPath: String, readyPrefix: String, readyTimeoutSeconds: Double = 30) {
        self.spec = spec
        self.rootfs = rootfs
        self.logPath = logPath
        self.readyPrefix = readyPrefix
        self.readyTimeoutSeconds = readyTimeoutSeconds
    }
}

/// A container runtime driver. Calls block their thread; callers run them
/// off Swift's cooperative pool.
public protocol SandboxRuntime: Sendable {
    var kind: RuntimeKind { get }
    var capabilities: RuntimeCapabilities { get }
    /// Mounts the root file system, writes the bundle, starts the container
    /// and waits for its ready line. On failure, removes what it made.
    func start(_ launch: ContainerLaunch) throws
    /// Saves the container's memory (every process, as it stands) into
    /// `imageDirectory`; the container then stops, is deleted and its root
    /// file system unmounted. This happens on failure too: gVisor ends a
    /// sandbox whose save failed. Throws `unsupported` without the
    /// `memorySnapshot` capability.
    func checkpoint(id: String, rootfs: OverlayRootfs, imageDirectory: String) throws
    /// Starts a container from a memory image instead of booting it. The
    /// network namespace must hold the addresses the sandbox should have.
    /// On failure, removes what it made.
    func restore(_ launch: ContainerLaunch, imageDirectory: String) throws
    /// Stops and deletes the container and unmounts its root file system.
    /// Idempotent; never throws.
    func destroy(id: String, rootfs: OverlayRootfs)
    /// Ids of every container this runtime's state directory knows.
    func containerIDs() -> [String]
    /// Ends the runtime's own helpers.
    func shutdown()
}
