import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Every process the agent started, and the one thread that reaps children.
///
/// The agent is PID 1 inside a sandbox (and a child subreaper on a host), so it
/// must reap every child, including orphans it never started. One reaper
/// thread calls `waitpid(-1)`; a spawn holds `lock` until the new process is
/// registered, so the reaper can never see a pid it does not yet know.
final class ProcessTable: @unchecked Sendable {
    private let lock = Lock()
    private var byID: [String: ManagedProcess] = [:]
    private var byPID: [pid_t: ManagedProcess] = [:]
    private var order: [String] = []
    private var counter = 0
    /// Bumped on every spawn; the reaper sleeps on it when there are no children.
    private var generation = 0
    /// Finished processes kept for `list` and late `attach`.
    static let keepFinished = 256

    /// This agent's own executable, re-run by `ExecAs` to start a process as a user.
    static let agentPath: String = OwnExecutable.path ?? CommandLine.arguments[0]

    init() {
        startThread { [self] in reapForever() }
    }

    /// Starts a process described by `spec`.
    func start(_ spec: ProcessSpec, defaults: ProcessDefaults) throws -> (ManagedProcess, [(Int32, FrameKind)]) {
        let account = try Accounts.find(optional: spec.user)
        let plan = try LaunchPlan(spec: spec, defaults: defaults, account: account)
        var closeInParent: [Int32] = []
        var readers: [(Int32, FrameKind)] = []
        var options = Spawn.Options()
        options.cwd = plan.cwd
        var inputFD: Int32?
        var terminalFD: Int32?
        do {
            if let size = spec.pty {
                let (master, slavePath) = try Terminal.open(size: size)
                terminalFD = master
                inputFD = master
                // The user owns its terminal, as after a login.
                try Accounts.chown(slavePath, to: account)
                options.terminalPath = slavePath
                readers.append((master, .stdout))
            } else {
                let out = try Spawn.pipe()
                readers.append((out.read, .stdout))
                closeInParent.append(out.write)
                options.stdout = out.write
                let err = try Spawn.pipe()
                readers.append((err.read, .stderr))
                closeInParent.append(err.write)
                options.stderr = err.write
                if spec.stdin == true {
                    let input = try Spawn.pipe()
                    closeInParent.append(input.read)
                    inputFD = input.write
                    options.stdin = input.read
                }
            }
            let process = try lock.withLock { () throws -> ManagedProcess in
                if let tag = spec.tag, byID.values.contains(where: { $0.tag == tag && $0.isRunning }) {
                    throw SproutError(.alreadyExists, "a running process already has the tag '\(tag)'")
                }
                let pid: pid_t
                if let account {
                    let argv = ExecAs.arguments(agent: Self.agentPath, account: account, path: plan.executable, argv: plan.argv)
                    pid = try Spawn.spawn(path: Self.agentPath, argv: argv, env: plan.env, options: options)
                } else {
                    pid = try Spawn.spawn(path: plan.executable, argv: plan.argv, env: plan.env, options: options)
                }
                counter += 1
                let process = ManagedProcess(
                    id: "p\(counter)", pid: pid, tag: spec.tag, cmd: plan.argv, cwd: plan.cwd,
                    inputFD: inputFD, terminalFD: terminalFD, streamCount: readers.count)
                byID[process.id] = process
                byPID[pid] = process
                order.append(process.id)
                generation += 1
                lock.broadcast()
                pruneLocked()
                return process
            }
            closeInParent.forEach { Glibc.close($0) }
            return (process, readers)
        } catch {
            closeInParent.forEach { Glibc.close($0) }
            readers.forEach { Glibc.close($0.0) }
            if let inputFD, inputFD != terminalFD { Glibc.close(inputFD) }
            throw error
        }
    }

    /// Starts a process on descriptors the caller provides (`sudo`'s, the
    /// policy's own checks). It is reaped like every child but not listed:
    /// the API did not start it.
    func startUnlisted(executable: String, argv: [String], env: [String], account: Account?, options: Spawn.Options) throws -> ManagedProcess {
        try lock.withLock {
            let pid: pid_t
            if let account {
                let wrapped = ExecAs.arguments(agent: Self.agentPath, account: account, path: executable, argv: argv)
                pid = try Spawn.spawn(path: Self.agentPath, argv: wrapped, env: env, options: options)
            } else {
                pid = try Spawn.spawn(path: executable, argv: argv, env: env, options: options)
            }
            let process = ManagedProcess(id: "unlisted-\(pid)", pid: pid, tag: nil, cmd: argv, cwd: options.cwd ?? "/",
                                         inputFD: nil, terminalFD: nil, streamCount: 0)
            byPID[pid] = process
            generation += 1
            lock.broadcast()
            return process
        }
    }

    func find(_ selector: ProcessSelector) throws -> ManagedProcess {
        try lock.withLock {
            if let id = selector.id {
                guard let p = byID[id] else { throw SproutError(.notFound, "no process with id '\(id)'") }
                return p
            }
            if let tag = selector.tag {
                // Prefer the running process with this tag, else the newest.
                let tagged = order.compactMap { byID[$0] }.filter { $0.tag == tag }
                if let p = tagged.last(where: { $0.isRunning }) ?? tagged.last { return p }
                throw SproutError(.notFound, "no process with tag '\(tag)'")
            }
            throw SproutError(.invalidArgument, "name a process by id or tag")
        }
    }

    func list() -> [AgentProcess] {
        lock.withLock { order.compactMap { byID[$0]?.info } }
    }

    /// Drops the oldest finished processes beyond `keepFinished`.
    private func pruneLocked() {
        let finished = order.filter { byID[$0]?.isRunning == false }
        guard finished.count > Self.keepFinished else { return }
        let drop = Set(finished.prefix(finished.count - Self.keepFinished))
        for id in drop { byID.removeValue(forKey: id) }
        order.removeAll { drop.contains($0) }
    }

    private func reapForever() {
        while true {
            let seen = lock.withLock { generation }
            var status: Int32 = 0
            let pid = waitpid(-1, &status, 0)
            if pid > 0 {
                let process = lock.withLock { byPID.removeValue(forKey: pid) }
                process?.reaped(status)  // nil: an orphan we inherited; reaping it was the point
                continue
            }
            if errno == EINTR { continue }
            // ECHILD: nothing to wait for until the next spawn.
            lock.withLock {
                while generation == seen { lock.wait() }
            }
        }
    }
}

/// What every process gets unless its spec says otherwise.
public struct ProcessDefaults: Sendable {
    public var env: [String: String]
    public var cwd: String

    public init(env: [String: String] = [:], cwd: String = "/") {
        var base = [
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "LANG": "C.UTF-8",
        ]
        base.merge(env) { _, new in new }
        self.env = base
        self.cwd = cwd
    }
}

/// A validated spec turned into what `posix_spawn` needs.
struct LaunchPlan {
    var executable: String
    var argv: [String]
    var env: [String]
    var cwd: String

    init(spec: ProcessSpec, defaults: ProcessDefaults, account: Account? = nil) throws {
        switch (spec.cmd, spec.shell) {
        case (let cmd?, nil):
            guard let first = cmd.first, !first.isEmpty else {
                throw SproutError(.invalidArgument, "cmd must name a program")
            }
            argv = cmd
        case (nil, let shell?):
            argv = ["/bin/sh", "-c", shell]
        default:
            throw SproutError(.invalidArgument, "give exactly one of cmd and shell")
        }
        var environment = defaults.env
        var defaultCwd = defaults.cwd
        if let account {
            // What a login gives: its home, names and shell; the home is
            // where it starts unless the spec says otherwise.
            environment["HOME"] = account.home
            environment["USER"] = account.name
            environment["LOGNAME"] = account.name
            environment["SHELL"] = account.shell
            if FileSystem.isDirectory(account.home) { defaultCwd = account.home }
        }
        if spec.pty != nil { environment["TERM"] = "xterm-256color" }
        for (key, value) in spec.env ?? [:] {
            guard !key.isEmpty, !key.contains("="), !key.contains("\0"), !value.contains("\0") else {
                throw SproutError(.invalidArgument, "invalid environment variable name '\(key)'")
            }
            environment[key] = value
        }
        env = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        cwd = try FileService.resolve(spec.cwd ?? defaultCwd, base: defaultCwd)
        var st = stat()
        guard stat(cwd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw SproutError(.notFound, "working directory \(cwd) does not exist")
        }
        guard let resolved = Spawn.resolveExecutable(argv[0], searchPath: environment["PATH"] ?? "") else {
            throw SproutError(.notFound, "executable not found: \(argv[0])")
        }
        executable = resolved
    }
}
