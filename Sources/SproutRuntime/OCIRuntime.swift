import Foundation
import Glibc
import Logging
import SproutCore
import SproutHost
import SproutSystem
import SproutBlocking

/// Drives `runsc` or `runc` through their OCI command lines, inside Sprout's
/// private mount namespace.
public final class OCIRuntime: SandboxRuntime, @unchecked Sendable {
    public let kind: RuntimeKind
    public var capabilities: RuntimeCapabilities { RuntimeCapabilities(memorySnapshot: kind == .gvisor) }
    /// The runtime's `--root`: its container state, private to this server.
    public let stateRoot: String
    /// gVisor's platform (ignored for runc).
    public let gvisorPlatform: GVisorPlatform
    public var platform: String? { kind == .gvisor ? gvisorPlatform.rawValue : nil }
    /// What `--version` said: runsc's release date (20240729), or runc's version.
    public let version: String
    private let binaryPath: String
    private let namespace: MountNamespace
    private let logger: Logger
    /// Where `run`/`restore` wrote each container's process id (`--pid-file`),
    /// so watching a new container needs no `state` command (≈ 20–60 ms).
    private let pidFiles = Locked<[String: String]>([:])

    /// The oldest runsc Sprout runs on: Debian 13's. Debian 12's (20221219)
    /// has no systrap platform, no boot id, rejects `statx` with
    /// `AT_NO_AUTOMOUNT` and compresses every checkpoint.
    public static let minimumRunscRelease = 20240729

    /// Checks that the runtime is installed (and, for gVisor, new enough)
    /// and sets up the mount namespace.
    public init(
        kind: RuntimeKind, stateRoot: String, platform: GVisorPlatform = .ptrace, logger: Logger,
        searchPath: String = HostCommand.searchPath, binary: String? = nil
    ) throws {
        guard let path = Spawn.resolveExecutable(binary ?? kind.binary, searchPath: searchPath) else {
            throw SproutError(.unavailable,
                "the \(kind.rawValue) runtime needs `\(binary ?? kind.binary)`, which is not installed: apt-get install \(kind.package) (make deps)")
        }
        let version = try Self.version(of: path)
        if kind == .gvisor {
            guard let release = Self.runscRelease(version), release >= Self.minimumRunscRelease else {
                throw SproutError(.unavailable,
                    "\(path) is runsc \(version); Sprout needs release \(Self.minimumRunscRelease) or newer (Debian 13's package: `make deps` installs it from trixie)")
            }
        }
        self.kind = kind
        self.binaryPath = path
        self.version = version
        self.gvisorPlatform = platform
        self.stateRoot = stateRoot
        self.logger = logger
        try FileSystem.makeDirectories(stateRoot, mode: 0o700)
        chmod(stateRoot, 0o700)
        self.namespace = try MountNamespace()
    }

    /// The first line of `binary --version`, less its program name:
    /// `0.0~20240729.0` (Debian's runsc), `release-20240729.0`, `1.1.5`.
    public static func version(of binary: String) throws -> String {
        let (pid, output) = try Spawn.withOutputPipe { options in
            try Spawn.spawn(path: binary, argv: [binary, "--version"], env: HostCommand.environment, options: options)
        }
        let bytes = Spawn.collect(output, limit: 65536)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let first = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
        guard let word = first.split(separator: " ").last, first.contains("version") else {
            throw SproutError(.unavailable, "\(binary) --version printed no version ('\(first.prefix(200))')")
        }
        return String(word)
    }

    /// runsc's release date from its version: the eight digits after `~` or `release-`.
    public static func runscRelease(_ version: String) -> Int? {
        for marker in ["~", "release-"] {
            if let range = version.range(of: marker) {
                let digits = version[range.upperBound...].prefix(8)
                if digits.count == 8, let date = Int(digits) { return date }
            }
        }
        return nil
    }

    /// The runtime's command line up to the subcommand. Under gVisor the
    /// root file system is Sprout's own overlay on the host: runsc must not
    /// put its in-sandbox overlay on top (`--overlay2=none`), or writes would
    /// never reach the sandbox's writable layer.
    private var base: [String] {
        switch kind {
        case .gvisor: [binaryPath, "--root", stateRoot, "--network=sandbox", "--overlay2=none", "--platform=\(gvisorPlatform.rawValue)"]
        case .runc: [binaryPath, "--root", stateRoot]
        }
    }

    public func start(_ launch: ContainerLaunch) async throws {
        let command = ["run", "--bundle", launch.rootfs.directory + "/bundle", "--pid-file", pidFile(launch), "--detach", launch.spec.id]
        try await run(launch, command: command, waitForReadyLine: true)
    }

    public func restore(_ launch: ContainerLaunch, imageDirectory: String) async throws {
        try requireMemorySnapshots()
        let command = ["restore", "--image-path", imageDirectory, "--bundle", launch.rootfs.directory + "/bundle",
                       "--pid-file", pidFile(launch), "--detach", launch.spec.id]
        try await run(launch, command: command, waitForReadyLine: false)
    }

    private func pidFile(_ launch: ContainerLaunch) -> String {
        let path = launch.rootfs.directory + "/container.pid"
        unlink(path)
        pidFiles.withLock { $0[launch.spec.id] = path }
        return path
    }

    public func checkpoint(id: String, rootfs: OverlayRootfs, imageDirectory: String) async throws {
        try requireMemorySnapshots()
        try FileSystem.makeDirectories(imageDirectory, mode: 0o700)
        do {
            let output = try await HostCommand.capture(
                namespace.enter + base + ["checkpoint", "--compression", "none", "--exclude-committed-zero-pages", "--image-path", imageDirectory, id], timeout: .seconds(120))
            guard output.status == 0 else {
                throw SproutError(.internal, "runsc checkpoint of \(id) failed: \(Self.checkpointFailure(output.stderr + output.stdout))")
            }
        } catch {
            // Stopped either way: deleted and unmounted either way.
            await destroy(id: id, rootfs: rootfs)
            throw error
        }
        await destroy(id: id, rootfs: rootfs)
    }

    /// The useful line of runsc's (very long) failure output.
    static func checkpointFailure(_ text: String) -> String {
        if let range = text.range(of: "save rejected") {
            let rest = text[range.lowerBound...]
            let line = rest.prefix { $0 != "\n" }
            // "...: local A, remote B:" then a goroutine dump.
            return String(line.prefix(300)).trimmingCharacters(in: CharacterSet(charactersIn: ": "))
        }
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return String((lines.first { !$0.hasPrefix("goroutine") } ?? lines.first ?? "no output").prefix(300))
    }

    /// Mounts the root, writes the bundle and runs `command` (run or restore)
    /// detached; waits for the agent's ready line or for the runtime to return.
    ///
    /// Hand-written rather than a `HostCommand`: the container outlives the
    /// command, and its agent's stdout (the ready line) is a pipe only this
    /// code reads, on a thread of its own.
    private func run(_ launch: ContainerLaunch, command: [String], waitForReadyLine wait: Bool) async throws {
        let id = launch.spec.id
        let bundle = launch.rootfs.directory + "/bundle"
        try OCIBundle.write(launch.spec, to: bundle)
        for dir in [launch.rootfs.upper, launch.rootfs.work, launch.rootfs.mountPoint] {
            try FileSystem.makeDirectories(dir)
        }
        let options = "lowerdir=\(launch.rootfs.layers.joined(separator: ":")),upperdir=\(launch.rootfs.upper),workdir=\(launch.rootfs.work)"
        guard options.utf8.count < 4000 else {
            throw SproutError(.tooLarge, "the layer chain is too deep for one overlay mount (\(launch.rootfs.layers.count) layers)")
        }
        // Started inside the namespace once the root is mounted there.
        let argv = base + command
        let overlay = Spawn.OverlayMount(options: options, mountPoint: launch.rootfs.mountPoint)
        let kind = self.kind
        let namespacePath = namespace.path
        do {
            try await onThread {
                try Self.spawnAndWait(argv: argv, namespace: namespacePath, overlay: overlay, launch: launch, waitForReadyLine: wait, kind: kind)
            }
        } catch {
            await destroy(id: id, rootfs: launch.rootfs)
            throw error
        }
    }

    private static func spawnAndWait(argv: [String], namespace: String, overlay: Spawn.OverlayMount, launch: ContainerLaunch,
                                     waitForReadyLine wait: Bool, kind: RuntimeKind) throws {
        let id = launch.spec.id
        let log = open(launch.logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw SproutError.system("open \(launch.logPath)") }
        defer { close(log) }
        var spawnOptions = Spawn.Options()
        spawnOptions.stderr = log
        let (pid, output) = try Spawn.withOutputPipe(spawnOptions) { options in
            try Spawn.spawnInMountNamespace(namespace, overlay: overlay, path: argv[0], argv: argv, env: HostCommand.environment,
                                            stdout: options.stdout, stderr: options.stderr)
        }
        defer { close(output) }
        do {
            if wait {
                try waitForReadyLine(output, prefix: launch.readyPrefix, timeout: launch.readyTimeoutSeconds, id: id, logPath: launch.logPath, kind: kind)
            }
            // `--detach` returns once the container started.
            guard let status = Spawn.waitForExit(pid, timeout: launch.readyTimeoutSeconds) else {
                throw SproutError(.timeout, "\(kind.binary) did not return within \(Int(launch.readyTimeoutSeconds)) s for sandbox \(id)")
            }
            if !wait && decodeWaitStatus(status).code != 0 {
                let detail = (try? Descriptor.readFile(launch.logPath, limit: 1 << 20)).map { String(decoding: $0.suffix(1500), as: UTF8.self) } ?? ""
                throw SproutError(.internal, "\(kind.binary) could not restore sandbox \(id): \(detail.trimmed)")
            }
        } catch {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            throw error
        }
    }

    private static func waitForReadyLine(_ fd: Int32, prefix: String, timeout: Double, id: String, logPath: String, kind: RuntimeKind) throws {
        switch Spawn.waitForLine(fd, startingWith: prefix, timeout: timeout) {
        case .found: return
        case .timedOut: throw SproutError(.timeout, "sandbox \(id) did not become ready within \(Int(timeout)) s")
        case .ended:
            // The runtime exited without starting the agent.
            let detail = (try? Descriptor.readFile(logPath, limit: 1 << 20)).map { String(decoding: $0.suffix(2000), as: UTF8.self) } ?? ""
            throw SproutError(.internal, "\(kind.binary) could not start sandbox \(id): \(detail.trimmed)")
        }
    }

    public func destroy(id: String, rootfs: OverlayRootfs) async {
        let script = "\"$@\" >/dev/null 2>&1; umount \"$0\" 2>/dev/null || umount -l \"$0\" 2>/dev/null; true"
        let argv = namespace.enter + ["/bin/sh", "-c", script, rootfs.mountPoint] + base + ["delete", "--force", id]
        do {
            _ = try await HostCommand.capture(argv, timeout: .seconds(60))
        } catch {
            logger.error("destroy failed", metadata: ["sandbox": "\(id)", "error": "\(error)"])
        }
        await Cgroups.remove(id)
        if let path = pidFiles.withLock({ $0.removeValue(forKey: id) }) { unlink(path) }
    }

    public func containerIDs() async -> [String] {
        guard let output = try? await HostCommand.capture(base + ["list", "--quiet"], timeout: .seconds(30)), output.status == 0 else { return [] }
        return output.stdout.split(separator: "\n").map { String($0).trimmed }.filter { !$0.isEmpty && $0 != "ID" }
    }

    public func containerProcess(id: String) async -> ContainerProcess? {
        // Written by the runtime once the container runs; a server started
        // again after a crash has no record of it and asks the runtime.
        if let path = pidFiles.withLock({ $0[id] }), let text = try? Descriptor.readFile(path, limit: 64),
           let pid = Int32(String(decoding: text, as: UTF8.self).trimmed), pid > 0 {
            return ProcessWatch.identify(pid)
        }
        guard let output = try? await HostCommand.capture(base + ["state", id], timeout: .seconds(30)), output.status == 0,
            let state = try? JSONDecoder().decode(ContainerState.self, from: Data(output.stdout.utf8)),
            state.status == "running" || state.status == "created", let pid = state.pid, pid > 0
        else { return nil }
        return ProcessWatch.identify(pid)
    }

    struct ContainerState: Decodable {
        var status: String
        var pid: Int32?
    }

    public func usage(id: String) -> ResourceUsage? { Cgroups.usage(id) }

    public func setMemoryLimit(id: String, bytes: Int64) throws { try Cgroups.setMemoryLimit(id, bytes: bytes) }

    public func shutdown() async {
        namespace.close()
        // The runtime leaves the parent cgroup behind; remove it once empty.
        for controller in (try? FileSystem.children("/sys/fs/cgroup")) ?? [] {
            rmdir("/sys/fs/cgroup/\(controller)/sprout")
        }
    }
}
