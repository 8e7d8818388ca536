import CSprout
import Glibc
import SproutCore

/// Starts child processes with `posix_spawn`.
public enum Spawn {
    public struct Options: Sendable {
        /// Descriptors the child gets as 0, 1 and 2 (nil = /dev/null).
        public var stdin: Int32?
        public var stdout: Int32?
        public var stderr: Int32?
        /// A terminal device to open as 0, 1 and 2 after `setsid`, making it the
        /// controlling terminal. Overrides the three above.
        public var terminalPath: String?
        public var cwd: String?
        /// Start a new session (implied by `terminalPath`).
        public var newSession = false
        /// Put the child in its own process group.
        public var newProcessGroup = true
        /// Close the inherited descriptors one by one from a list even where
        /// `close_range` works (what a gVisor sandbox does; for tests).
        var closeDescriptorsByList = false

        public init() {}
    }

    /// Spawns `argv` with `path` as the executable. Returns the child's pid.
    public static func spawn(path: String, argv: [String], env: [String], options: Options) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }

        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        if let tty = options.terminalPath {
            flags |= csprout_spawn_setsid_flag()
            posix_spawn_file_actions_addopen(&actions, 0, tty, O_RDWR, 0)
            posix_spawn_file_actions_adddup2(&actions, 0, 1)
            posix_spawn_file_actions_adddup2(&actions, 0, 2)
        } else {
            if options.newSession {
                flags |= csprout_spawn_setsid_flag()
            } else if options.newProcessGroup {
                flags |= Int32(POSIX_SPAWN_SETPGROUP)
                posix_spawnattr_setpgroup(&attr, 0)
            }
            for (target, source) in [(Int32(0), options.stdin), (1, options.stdout), (2, options.stderr)] {
                if let source {
                    posix_spawn_file_actions_adddup2(&actions, source, target)
                } else {
                    posix_spawn_file_actions_addopen(&actions, target, "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
                }
            }
        }
        // Nothing but stdin, stdout and stderr crosses: a descriptor some other
        // thread opened without O_CLOEXEC (a listening socket, a client's
        // connection) must not live on in a child. The runtime's daemons
        // outlive the server; holding its sockets, they kept its port and its
        // clients' connections open after a crash.
        if closeRangeWorks && !options.closeDescriptorsByList {
            csprout_spawn_addclosefrom(&actions, 3)
        } else {
            for fd in inheritableDescriptors() { csprout_spawn_addclose(&actions, fd) }
        }
        if let cwd = options.cwd {
            csprout_spawn_addchdir(&actions, cwd)
        }
        // The child starts with no signals blocked and default handlers
        // (the agent ignores SIGPIPE; its children must not inherit that).
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(flags))

        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup($0) } + [nil]
        defer {
            cArgv.forEach { free($0) }
            cEnv.forEach { free($0) }
        }
        var pid: pid_t = 0
        var rc = SpawnExclusion.spawning { posix_spawn(&pid, path, &actions, &attr, cArgv, cEnv) }
        // A child some other spawner forked (swift-subprocess's host
        // commands are outside SpawnExclusion) may hold a copy of the file's
        // writing descriptor for the moment until it execs: ETXTBSY until
        // then. There is no event to wait for: look again, briefly.
        var tries = 0
        while rc == ETXTBSY && tries < 200 {
            tries += 1
            usleep(500)
            rc = SpawnExclusion.spawning { posix_spawn(&pid, path, &actions, &attr, cArgv, cEnv) }
        }
        guard rc == 0 else {
            throw SproutError.system("cannot start \(argv.first ?? path)", errno: rc)
        }
        return pid
    }

    /// Whether the kernel takes glibc's `close_range(fd, ~0U, 0)`. gVisor
    /// 20240729 does not, and glibc then lists `/proc/self/fd` in every
    /// child. Each short-lived process that looks at its own /proc
    /// directory there leaves its task's procfs inodes behind for good
    /// (about 80 KB each, saved in every checkpoint and read back at every
    /// restore), so the agent must not do that for each process it starts.
    static let closeRangeWorks = csprout_close_range_works() != 0

    /// Descriptors at 3 and above that a child would inherit (no
    /// FD_CLOEXEC), listed in this process, which is long-lived: closed
    /// one by one in the child where `close_range` does not work.
    static func inheritableDescriptors() -> [Int32] {
        let names = (try? FileSystem.children("/proc/self/fd")) ?? []
        return names.compactMap { Int32($0) }.filter { fd in
            guard fd > 2 else { return false }
            let flags = fcntl(fd, F_GETFD)
            return flags >= 0 && flags & FD_CLOEXEC == 0
        }
    }

    /// Finds an executable: names with a slash are taken as they are, others
    /// are looked up in `searchPath` (a PATH string).
    public static func resolveExecutable(_ name: String, searchPath: String) -> String? {
        if name.contains("/") {
            return access(name, X_OK) == 0 ? name : nil
        }
        for dir in searchPath.split(separator: ":") where !dir.isEmpty {
            let candidate = "\(dir)/\(name)"
            var st = stat()
            if stat(candidate, &st) == 0, (st.st_mode & S_IFMT) != S_IFDIR, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    /// A close-on-exec pipe: (read end, write end).
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        try sysCall("pipe") { csprout_pipe2_cloexec(&fds) }
        return (fds[0], fds[1])
    }
}

extension Spawn {
    /// Calls `start` with `options` whose stdout (and, with `stderrToo`, its
    /// stderr) is a new pipe; returns what `start` returned and the pipe's
    /// read end, which the caller closes. If `start` throws, nothing is left open.
    public static func withOutputPipe<T>(_ options: Options = Options(), stderrToo: Bool = false,
                                         start: (Options) throws -> T) throws -> (started: T, output: Int32) {
        let out = try pipe()
        var options = options
        options.stdout = out.write
        if stderrToo { options.stderr = out.write }
        let started: T
        do {
            started = try start(options)
        } catch {
            close(out.read)
            close(out.write)
            throw error
        }
        close(out.write)
        return (started, out.read)
    }

    /// How a wait for a child's line ended.
    public enum LineWait: Equatable, Sendable {
        /// The first line that starts with the prefix, without its newline.
        case found(String)
        /// The child closed its output first; the last line it printed.
        case ended(last: String)
        case timedOut
    }

    /// Reads `fd` line by line until a line starts with `prefix` (a child
    /// saying it is ready), the writer closes it, or `timeout` seconds pass.
    public static func waitForLine(_ fd: Int32, startingWith prefix: String, timeout: Double) -> LineWait {
        let deadline = monotonicSeconds() + timeout
        let wanted = Array(prefix.utf8)
        var line: [UInt8] = []
        var last: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let remaining = deadline - monotonicSeconds()
            guard remaining > 0 else { return .timedOut }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(min(remaining * 1000, Double(Int32.max))))
            if r <= 0 { continue }  // EINTR, or the deadline (checked above)
            let n = read(fd, &byte, 1)
            if n == 1 {
                if byte == 10 {
                    if line.starts(with: wanted) { return .found(String(decoding: line, as: UTF8.self)) }
                    last = line
                    line = []
                } else if line.count < 4096 {
                    line.append(byte)
                }
            } else if !(n < 0 && errno == EINTR) {
                return .ended(last: String(decoding: line.isEmpty ? last : line, as: UTF8.self))
            }
        }
    }

    /// What a child printed until it closed its end of `output` (the part up
    /// to `limit` bytes; the rest is drained so that it never blocks), then closes it.
    public static func collect(_ output: Int32, limit: Int) -> [UInt8] {
        defer { close(output) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = read(output, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return bytes }
            if bytes.count < limit { bytes += buffer[0..<min(n, limit - bytes.count)] }
        }
    }
}

extension Spawn {
    /// Stops a child: SIGTERM, then SIGKILL after `graceSeconds`; reaps it.
    public static func terminate(_ pid: pid_t, graceSeconds: Double) {
        kill(pid, SIGTERM)
        if waitForExit(pid, timeout: graceSeconds) != nil { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    }
}

extension Spawn {
    /// Stops a process that is not (or no longer) our child, such as one a
    /// `sprout fleet up` before this one started: SIGTERM, then wait until
    /// it is gone (reaped here if it is our child after all). Never SIGKILL:
    /// a pid we did not spawn may be reused once it is gone.
    public static func stopDetached(_ pid: pid_t, pollEvery microseconds: UInt32 = 20_000) {
        guard kill(pid, SIGTERM) == 0 else { return }
        while kill(pid, 0) == 0 {
            if waitpid(pid, nil, WNOHANG) == pid { return }
            usleep(microseconds)
        }
    }
}

extension Spawn {
    /// Reads child `pid`'s log at `path` again and again until `found`
    /// finds what it waits for in it (the port it says it took, say). Nil if
    /// the child exits first, or `seconds` (if given) pass; the log as read last.
    public static func awaitLog<T>(
        _ path: String, of pid: pid_t, within seconds: Double? = nil, every: Duration = .milliseconds(20), _ found: (String) -> T?
    ) async throws -> (value: T?, log: String) {
        let deadline = seconds.map { monotonicSeconds() + $0 }
        while true {
            let text = (try? Descriptor.readFile(path)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            if let value = found(text) { return (value, text) }
            if waitpid(pid, nil, WNOHANG) == pid || deadline.map({ monotonicSeconds() > $0 }) == true { return (nil, text) }
            try await Task.sleep(for: every)
        }
    }
}

/// Decodes a `waitpid` status.
public func decodeWaitStatus(_ status: Int32) -> (code: Int32?, signal: Int32?) {
    let sig = status & 0x7F
    if sig == 0 { return ((status >> 8) & 0xFF, nil) }
    return (nil, sig)
}

extension Spawn {
    /// An overlay mount made in the namespace before the program starts.
    public struct OverlayMount: Sendable {
        public var options: String
        public var mountPoint: String

        public init(options: String, mountPoint: String) {
            self.options = options
            self.mountPoint = mountPoint
        }
    }

    /// Starts `path` inside the mount namespace at `namespace` (a
    /// `/proc/PID/ns/mnt` path), after `overlay` is mounted there: what
    /// `nsenter` running a shell that mounts and then execs did, without
    /// starting those two programs first (about 5 ms on every start and
    /// resume here). The child gets its own process group, default signal
    /// handling, /dev/null as stdin, and no descriptor above 2.
    public static func spawnInMountNamespace(_ namespace: String, overlay: OverlayMount?, path: String, argv: [String], env: [String],
                                             stdout: Int32?, stderr: Int32?) throws -> pid_t {
        let namespaceFD = open(namespace, O_RDONLY | O_CLOEXEC)
        guard namespaceFD >= 0 else { throw SproutError.system("open \(namespace)") }
        defer { close(namespaceFD) }
        let texts: [String] = [path, overlay?.options ?? "", overlay?.mountPoint ?? ""]
        let strings = texts.map { strdup($0) }
        let cArgv = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup($0) } + [nil]
        defer {
            (strings + cArgv + cEnv).forEach { free($0) }
        }
        var spec = csprout_ns_spawn()
        spec.namespace_fd = namespaceFD
        spec.path = UnsafePointer(strings[0])
        spec.overlay_options = overlay == nil ? nil : UnsafePointer(strings[1])
        spec.mount_point = UnsafePointer(strings[2])
        spec.stdout_fd = stdout ?? -1
        spec.stderr_fd = stderr ?? -1
        let pid: pid_t = cArgv.withUnsafeBufferPointer { argvBuffer in
            cEnv.withUnsafeBufferPointer { envBuffer in
                spec.argv = argvBuffer.baseAddress
                spec.envp = envBuffer.baseAddress
                return SpawnExclusion.spawning { csprout_spawn_in_namespace(&spec) }
            }
        }
        guard pid > 0 else {
            let code = errno
            let step = switch spec.stage {
            case 1: "enter the mount namespace \(namespace)"
            case 2: "mount the overlay at \(overlay?.mountPoint ?? "")"
            case 3: "set up the descriptors of \(argv.first ?? path)"
            default: "start \(argv.first ?? path)"
            }
            throw SproutError.system("cannot \(step)", errno: code)
        }
        return pid
    }
}

extension Spawn {
    /// Waits for child `pid` to exit and reaps it: its wait status, or nil
    /// when `timeout` seconds passed first (it is then left running). Woken
    /// by the exit itself (a pidfd), not by looking every few milliseconds.
    public static func waitForExit(_ pid: pid_t, timeout: Double) -> Int32? {
        let deadline = monotonicSeconds() + timeout
        var status: Int32 = 0
        let pidfd = csprout_pidfd_open(pid)
        if pidfd >= 0 {
            defer { close(pidfd) }
            while true {
                let left = deadline - monotonicSeconds()
                guard left > 0 else { return nil }
                var entry = pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)
                let n = poll(&entry, 1, Int32(min(left * 1000, 60_000).rounded(.up)))
                if n > 0 { break }
                if n < 0 && errno != EINTR { break }
            }
        }
        while true {
            let r = waitpid(pid, &status, pidfd >= 0 ? 0 : WNOHANG)
            if r == pid { return status }
            if r == -1 && errno != EINTR { return status }
            if r == 0 {
                guard monotonicSeconds() < deadline else { return nil }
                usleep(2_000)
            }
        }
    }
}
