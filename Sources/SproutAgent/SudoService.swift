import CSprout
import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// The agent's side of `sudo` (see `Sudo`): one thread per caller, which
/// checks the sandbox's policy, starts the command on the caller's own
/// descriptors and answers with its exit.
final class SudoService: @unchecked Sendable {
    private let processes: ProcessTable
    private let policy = SudoPolicy()

    init(processes: ProcessTable) {
        self.processes = processes
    }

    /// Listens on the abstract socket `name` and serves callers on threads of their own.
    func start(name: String) throws {
        let listener = csprout_unix_listen_abstract(name)
        guard listener >= 0 else { throw SproutError.system("listen on @\(name)") }
        startThread { [self] in
            while true {
                let fd = csprout_accept4_cloexec(listener)
                if fd < 0 {
                    if errno != EINTR { sleepSeconds(0.01) }
                    continue
                }
                startThread { [self] in serve(fd) }
            }
        }
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var stdio: [Int32] = []
        defer { stdio.forEach { close($0) } }
        do {
            let (request, descriptors, uid) = try receiveRequest(fd)
            stdio = descriptors
            guard stdio.count == 3 else { throw SproutError(.malformed, "expected standard input, output and error") }
            let caller = try Accounts.find(uid: uid)
            let launch = try policy.decide(request, caller: caller, processes: processes)
            switch launch {
            case .done(let status): try Sudo.send(Sudo.Reply(error: nil, exit: status), on: fd)
            case .run(let command): try run(command, stdio: stdio, socket: fd)
            }
        } catch let error as SproutError {
            try? Sudo.send(Sudo.Reply(error: error.message, exit: nil), on: fd)
        } catch {
            try? Sudo.send(Sudo.Reply(error: "\(error)", exit: nil), on: fd)
        }
    }

    /// The first message: the caller's descriptors and credentials with the
    /// frame's length, then the frame. Returns the request, the descriptors
    /// and the caller's user id.
    private func receiveRequest(_ fd: Int32) throws -> (Sudo.Request, [Int32], uid_t) {
        var header = [UInt8](repeating: 0, count: 4)
        var fds = [Int32](repeating: -1, count: 8)
        var count: Int32 = 0
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        var hasCredentials: Int32 = 0
        let n = header.withUnsafeMutableBytes { raw in
            fds.withUnsafeMutableBufferPointer {
                csprout_receive_request(fd, raw.baseAddress, 4, $0.baseAddress, 8, &count, &pid, &uid, &gid, &hasCredentials)
            }
        }
        let received = Array(fds.prefix(Int(count)))
        guard n > 0, hasCredentials != 0 else {
            received.forEach { close($0) }
            throw SproutError(.malformed, n > 0 ? "a request without its sender's credentials" : "no request")
        }
        do {
            if n < 4, let rest = try Sudo.readExactly(fd, 4 - n) { header = Array(header.prefix(n)) + rest }
            let length = header.reduce(0) { $0 << 8 | Int($1) }
            guard length <= 4 << 20, let body = try Sudo.readExactly(fd, length) else {
                throw SproutError(.malformed, "a sudo request was cut short")
            }
            return (try WireJSON.decode(Sudo.Request.self, body), received, uid)
        } catch {
            received.forEach { close($0) }
            throw error
        }
    }

    /// Runs the command to its end, relaying the signals the caller sends,
    /// and answers with its exit.
    private func run(_ command: SudoPolicy.Command, stdio: [Int32], socket: Int32) throws {
        var options = Spawn.Options()
        options.stdin = stdio[0]
        options.stdout = stdio[1]
        options.stderr = stdio[2]
        options.cwd = command.cwd
        let process = try processes.startUnlisted(
            executable: command.executable, argv: command.argv, env: command.environment, account: command.account, options: options)
        let relaying = Lock()
        let relay = RelayState()
        startThread {
            // Until the caller hangs up (or we shut the socket once the command ended).
            while let message = try? Sudo.receive(Sudo.ClientMessage.self, on: socket) {
                if message.signal > 0 && message.signal < 65 { kill(process.pid, message.signal) }
            }
            relaying.withLock {
                relay.done = true
                relaying.broadcast()
            }
        }
        let exit = process.waitForExit()
        try? Sudo.send(Sudo.Reply(error: nil, exit: exit), on: socket)
        Socket.shutdownBoth(socket)
        relaying.withLock { while !relay.done { relaying.wait() } }
    }
}

/// Whether the relay of a caller's signals ended (guarded by its lock).
private final class RelayState: @unchecked Sendable {
    var done = false
}
