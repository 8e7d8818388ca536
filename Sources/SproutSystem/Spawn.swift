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
        csprout_spawn_addclosefrom(&actions, 3)
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
    /// Stops a child: SIGTERM, then SIGKILL after `graceSeconds`; reaps it.
    public static func terminate(_ pid: pid_t, graceSeconds: Double) {
        kill(pid, SIGTERM)
        let deadline = monotonicSeconds() + graceSeconds
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if monotonicSeconds() > deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                return
            }
            usleep(5000)
        }
    }
}

/// Decodes a `waitpid` status.
public func decodeWaitStatus(_ status: Int32) -> (code: Int32?, signal: Int32?) {
    let sig = status & 0x7F
    if sig == 0 { return ((status >> 8) & 0xFF, nil) }
    return (nil, sig)
}
