import Foundation
import Glibc
import Logging
import SproutCore
import SproutSystem

/// Drives `runsc` or `runc` through their OCI command lines, inside Sprout's
/// private mount namespace.
public final class OCIRuntime: SandboxRuntime, @unchecked Sendable {
    public let kind: RuntimeKind
    public var capabilities: RuntimeCapabilities { RuntimeCapabilities(memorySnapshot: kind == .gvisor) }
    /// The runtime's `--root`: its container state, private to this server.
    public let stateRoot: String
    private let binaryPath: String
    private let namespace: MountNamespace
    private let logger: Logger

    /// Checks that the runtime is installed and sets up the mount namespace.
    public init(
        kind: RuntimeKind, stateRoot: String, logger: Logger,
        searchPath: String = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ) throws {
        guard let path = Spawn.resolveExecutable(kind.binary, searchPath: searchPath) else {
            throw SproutError(.unavailable,
                "the \(kind.rawValue) runtime needs `\(kind.binary)`, which is not installed: apt-get install \(kind.package)")
        }
        self.kind = kind
        self.binaryPath = path
        self.stateRoot = stateRoot
        self.logger = logger
        try FileSystem.makeDirectories(stateRoot, mode: 0o700)
        chmod(stateRoot, 0o700)
        self.namespace = try MountNamespace()
    }

    /// The runtime's command line up to the subcommand.
    private var base: [String] {
        switch kind {
        case .gvisor: [binaryPath, "--root", stateRoot, "--network=sandbox"]
        case .runc: [binaryPath, "--root", stateRoot]
        }
    }

    public func start(_ launch: ContainerLaunch) throws {
        try run(launch, command: ["run", "--bundle", launch.rootfs.directory + "/bundle", "--detach", launch.spec.id], waitForReadyLine: true)
    }

    public func restore(_ launch: ContainerLaunch, imageDirectory: String) throws {
        try requireMemorySnapshots()
        try run(launch, command: ["restore", "--image-path", imageDirectory, "--bundle", launch.rootfs.directory + "/bundle", "--detach", launch.spec.id],
                waitForReadyLine: false)
    }

    public func checkpoint(id: String, rootfs: OverlayRootfs, imageDirectory: String) throws {
        try requireMemorySnapshots()
        try FileSystem.makeDirectories(imageDirectory, mode: 0o700)
        // Stopped either way: deleted and unmounted either way.
        defer { destroy(id: id, rootfs: rootfs) }
        let output = try HostCommand.capture(namespace.enter + base + ["checkpoint", "--image-path", imageDirectory, id])
        guard output.status == 0 else {
            throw SproutError(.internal, "runsc checkpoint of \(id) failed: \(Self.checkpointFailure(output.stderr + output.stdout))")
        }
    }

    private func requireMemorySnapshots() throws {
        guard capabilities.memorySnapshot else {
            throw SproutError(.unsupported,
                "the \(kind.rawValue) runtime cannot snapshot memory on this host (CRIU fails here); pause, resume, live fork and warm starts need --runtime gvisor")
        }
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
    private func run(_ launch: ContainerLaunch, command: [String], waitForReadyLine wait: Bool) throws {
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
        // One shell inside the namespace mounts the root and becomes the runtime.
        let script = "mount -t overlay overlay -o \"$1\" \"$2\" && shift 2 && exec \"$@\""
        let argv = namespace.enter + ["/bin/sh", "-c", script, "sh", options, launch.rootfs.mountPoint] + base + command

        let log = open(launch.logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw SproutError.system("open \(launch.logPath)") }
        defer { close(log) }
        let out = try Spawn.pipe()
        var spawnOptions = Spawn.Options()
        spawnOptions.stdout = out.write
        spawnOptions.stderr = log
        let pid: pid_t
        do {
            pid = try Spawn.spawn(path: "/usr/bin/nsenter", argv: argv, env: HostCommand.environment, options: spawnOptions)
        } catch {
            close(out.read)
            close(out.write)
            throw error
        }
        close(out.write)
        defer { close(out.read) }
        do {
            if wait {
                try waitForReadyLine(out.read, prefix: launch.readyPrefix, timeout: launch.readyTimeoutSeconds, id: id, logPath: launch.logPath)
            }
            // `--detach` returns once the container started.
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            if !wait && status != 0 {
                let detail = (try? Descriptor.readFile(launch.logPath, limit: 1 << 20)).map { String(decoding: $0.suffix(1500), as: UTF8.self) } ?? ""
                throw SproutError(.internal, "\(kind.binary) could not restore sandbox \(id): \(detail.trimmed)")
            }
        } catch {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
            destroy(id: id, rootfs: launch.rootfs)
            throw error
        }
    }

    private func waitForReadyLine(_ fd: Int32, prefix: String, timeout: Double, id: String, logPath: String) throws {
        let deadline = monotonicSeconds() + timeout
        var line: [UInt8] = []
        var byte: UInt8 = 0
        let wanted = Array(prefix.utf8)
        while true {
            let remaining = deadline - monotonicSeconds()
            guard remaining > 0 else {
                throw SproutError(.timeout, "sandbox \(id) did not become ready within \(Int(timeout)) s")
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(remaining * 1000))
            if r < 0 && errno == EINTR { continue }
            if r == 0 { continue }
            let n = read(fd, &byte, 1)
            if n == 1 {
                if byte == 10 {
                    if line.starts(with: wanted) { return }
                    line = []
                } else if line.count < 4096 {
                    line.append(byte)
                }
                continue
            }
            if n < 0 && errno == EINTR { continue }
            // End of file: the runtime exited without starting the agent.
            let detail = (try? Descriptor.readFile(logPath, limit: 1 << 20)).map { String(decoding: $0.suffix(2000), as: UTF8.self) } ?? ""
            throw SproutError(.internal, "\(kind.binary) could not start sandbox \(id): \(detail.trimmed)")
        }
    }

    public func destroy(id: String, rootfs: OverlayRootfs) {
        let script = "\"$@\" >/dev/null 2>&1; umount \"$0\" 2>/dev/null || umount -l \"$0\" 2>/dev/null; true"
        let argv = namespace.enter + ["/bin/sh", "-c", script, rootfs.mountPoint] + base + ["delete", "--force", id]
        do {
            _ = try HostCommand.capture(argv)
        } catch {
            logger.error("destroy failed", metadata: ["sandbox": "\(id)", "error": "\(error)"])
        }
        Self.removeCgroups(id)
    }

    /// The runtime removes a container's cgroups on delete, but not those of
    /// a container whose start failed half way; remove whatever is left.
    static func removeCgroups(_ id: String) {
        let controllers = (try? FileSystem.children("/sys/fs/cgroup")) ?? []
        for attempt in 0..<20 {
            let left = controllers.map { "/sys/fs/cgroup/\($0)/sprout/\(id)" }.filter { FileSystem.exists($0) }
            if left.isEmpty { return }
            for dir in left { rmdir(dir) }
            if attempt > 0 { usleep(50_000) }
        }
    }

    public func containerIDs() -> [String] {
        guard let output = try? HostCommand.capture(base + ["list", "--quiet"]), output.status == 0 else { return [] }
        return output.stdout.split(separator: "\n").map { String($0).trimmed }.filter { !$0.isEmpty && $0 != "ID" }
    }

    public func shutdown() {
        namespace.close()
        // The runtime leaves the parent cgroup behind; remove it once empty.
        for controller in (try? FileSystem.children("/sys/fs/cgroup")) ?? [] {
            rmdir("/sys/fs/cgroup/\(controller)/sprout")
        }
    }
}
