import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// How an agent is set up.
public struct AgentConfiguration: Sendable {
    /// The access token every request must carry.
    public var token: String
    public var host: String
    public var port: UInt16
    public var defaults: ProcessDefaults

    public init(token: String, host: String = "0.0.0.0", port: UInt16 = AgentProtocol.defaultPort, defaults: ProcessDefaults = ProcessDefaults()) {
        self.token = token
        self.host = host
        self.port = port
        self.defaults = defaults
    }
}

/// The in-sandbox daemon: accepts connections and serves one request on each.
///
/// Every connection gets its own thread; a connection's first frame is a
/// `RequestEnvelope`, checked for protocol version and token before anything
/// else happens. A bad connection gets an error reply and is closed; it never
/// affects another.
public final class AgentServer: @unchecked Sendable {
    public let configuration: AgentConfiguration
    private let processes = ProcessTable()
    private let token: [UInt8]
    private let startedAt = monotonicSeconds()

    public init(configuration: AgentConfiguration) {
        self.configuration = configuration
        self.token = Array(configuration.token.utf8)
    }

    /// Binds the listening socket. Returns the descriptor and the bound port.
    public func bind() throws -> (fd: Int32, port: UInt16) {
        try Socket.listenTCP(host: configuration.host, port: configuration.port)
    }

    /// Serves `sudo` to the sandbox's own processes on the abstract Unix
    /// socket `name` (see `Sudo`).
    public func startSudo(name: String = Sudo.socketName) throws {
        try SudoService(processes: processes).start(name: name)
    }

    /// Accepts connections on `listener` forever.
    public func serve(listener: Int32) -> Never {
        while true {
            do {
                let fd = try Socket.accept(listener)
                Socket.setNoDelay(fd)
                startThread { [self] in handle(FrameChannel(fd: fd)) }
            } catch {
                // EMFILE and friends: back off briefly rather than spin.
                sleepSeconds(0.01)
            }
        }
    }

    /// Serves one connection, e.g. over stdin/stdout.
    public func handle(_ channel: FrameChannel) {
        var resetNow = false
        defer {
            if resetNow {
                channel.abort()
            } else {
                finish(channel)
            }
        }
        Socket.setReceiveTimeout(channel.readFD, seconds: AgentProtocol.handshakeTimeoutSeconds)
        let envelope: RequestEnvelope
        do {
            envelope = try channel.receiveMessage(RequestEnvelope.self)
        } catch let error as SproutError {
            try? channel.send(message: Reply.failure(error))
            return
        } catch {
            try? channel.send(message: Reply.failure(SproutError(.malformed, "\(error)")))
            return
        }
        Socket.setReceiveTimeout(channel.readFD, seconds: 0)
        guard envelope.protocolVersion == AgentProtocol.version else {
            try? channel.send(message: Reply.failure(SproutError(.protocolMismatch,
                "client speaks agent protocol \(envelope.protocolVersion), this agent speaks \(AgentProtocol.version)")))
            return
        }
        guard constantTimeEquals(Array(envelope.token.utf8), token) else {
            try? channel.send(message: Reply.failure(SproutError(.unauthorized, "invalid agent token")))
            return
        }
        do {
            if case .quiesce = envelope.request {
                try quiesce(channel)
                resetNow = true
            } else {
                try dispatch(envelope.request, channel)
            }
        } catch let error as SproutError {
            try? channel.send(message: Reply.failure(error))
        } catch {
            try? channel.send(message: Reply.failure(SproutError(.internal, "\(error)")))
        }
    }

    private func path(_ raw: String) throws -> String {
        try FileService.resolve(raw, base: configuration.defaults.cwd)
    }

    private func dispatch(_ request: AgentRequest, _ channel: FrameChannel) throws {
        switch request {
        case .health:
            var name = [CChar](repeating: 0, count: 256)
            gethostname(&name, name.count - 1)
            try channel.send(message: Reply(health: Health(
                protocolVersion: AgentProtocol.version, agentVersion: AgentProtocol.agentVersion,
                pid: getpid(), uptimeSeconds: monotonicSeconds() - startedAt, hostname: cStringToString(name),
                unixTime: SystemClock().now)))
        case .startProcess(let spec):
            let (process, readers) = try processes.start(spec, defaults: configuration.defaults)
            let key = try? process.attach(channel) { Reply(process: $0) }
            for (fd, kind) in readers { process.startReader(fd: fd, kind: kind) }
            if let key { serveProcessStream(process, key: key, channel) }
        case .attachProcess(let selector):
            let process = try processes.find(selector)
            guard let key = try process.attach(channel, reply: { Reply(process: $0) }) else {
                drain(channel)
                return
            }
            serveProcessStream(process, key: key, channel)
        case .listProcesses:
            try channel.send(message: Reply(processes: processes.list()))
        case .signalProcess(let request):
            let process = try processes.find(ProcessSelector(id: request.id, tag: request.tag))
            try process.signal(request.signal)
            try channel.send(message: Reply(process: process.info))
        case .stat(let request):
            try channel.send(message: Reply(file: FileService.info(try path(request.path))))
        case .list(let request):
            try channel.send(message: Reply(entries: FileService.list(try path(request.path), depth: request.depth ?? 1)))
        case .read(let request):
            try FileTransfer.send(path: try path(request.path), over: channel)
        case .write(let request):
            try FileTransfer.receive(request, path: try path(request.path), over: channel)
        case .mkdir(let request):
            let target = try path(request.path)
            try Accounts.makeDirectories(target, owner: try Accounts.find(optional: request.owner))
            try channel.send(message: Reply(file: FileService.info(target)))
        case .move(let request):
            let to = try path(request.to)
            try FileService.move(from: try path(request.from), to: to)
            try channel.send(message: Reply(file: FileService.info(to)))
        case .setXattrs(let request):
            let target = try path(request.path)
            try Xattrs.update(target, set: request.set ?? [:], remove: request.remove ?? [])
            try channel.send(message: Reply(file: FileService.info(target)))
        case .remove(let request):
            try FileService.remove(try path(request.path), recursive: request.recursive ?? false)
            try channel.send(message: Reply.ok)
        case .watch(let request):
            let watcher = try DirectoryWatcher(root: try path(request.path), recursive: request.recursive ?? false)
            try channel.send(message: Reply.ok)
            watcher.run(channel: channel)
        case .setClock(let request):
            try FileService.setClock(unixNanos: request.unixNanos)
            try channel.send(message: Reply.ok)
        case .killLargest:
            try channel.send(message: Reply(victim: MemoryReclaim.killLargest(except: getpid())))
        case .lookupUser(let request):
            try channel.send(message: Reply(account: try Accounts.find(request.name)))
        case .quiesce:
            break  // served by `handle`: it ends the connection its own way
        }
    }

    /// `net.quiesce`: answers once nothing but this connection is open (see
    /// `NetworkQuiet`), waits for the client's `end` (it has the answer),
    /// and then the caller resets this connection from here: the agent's end
    /// is closed as the reset goes out, so once the client sees the reset
    /// there is nothing connected left in the sandbox.
    private func quiesce(_ channel: FrameChannel) throws {
        try NetworkQuiet.wait(except: channel.readFD, timeoutSeconds: 2)
        try channel.send(message: Reply.ok)
        Socket.setReceiveTimeout(channel.readFD, seconds: 10)
        _ = try? channel.receive()
    }

    /// Reads the client's side of a process stream (input, end of input,
    /// control messages) until it disconnects. Disconnecting detaches the
    /// client; the process keeps running.
    private func serveProcessStream(_ process: ManagedProcess, key: Int, _ channel: FrameChannel) {
        defer { process.detach(key) }
        while true {
            let frame: Frame?
            do { frame = try channel.receive() } catch { return }
            guard let frame else { return }
            do {
                switch frame.kind {
                case .stdin: try process.writeInput(frame.payload)
                case .end: process.endInput()
                case .message:
                    let control = try WireJSON.decode(Control.self, frame.payload)
                    if let signal = control.signal { try process.signal(signal) }
                    if let size = control.resize { try process.resize(size) }
                default:
                    throw SproutError(.malformed, "unexpected \(frame.kind) frame on a process stream")
                }
            } catch let error as SproutError {
                // Report and keep the stream: one bad message does not end a session.
                try? channel.send(message: Event(error: ErrorBody(error)))
            } catch {
                try? channel.send(message: Event(error: ErrorBody(code: "internal", message: "\(error)")))
            }
        }
    }

    /// Ends a connection without leaving it in TIME_WAIT inside the sandbox:
    /// the client closes first (it does once it has the last frame), and only
    /// then does the agent. gVisor cannot checkpoint a sandbox that holds a
    /// TCP endpoint in any connected state, TIME_WAIT included, and an active
    /// close would hold one for a minute. A client that never closes gets a
    /// reset after 2 s instead of a FIN.
    private func finish(_ channel: FrameChannel) {
        if channel.readFD == channel.writeFD {
            Socket.setReceiveTimeout(channel.readFD, seconds: 2)
            var peerClosed = false
            while true {
                do {
                    guard try channel.receive() != nil else { peerClosed = true; break }
                } catch {
                    break
                }
            }
            if !peerClosed { return channel.abort() }
        }
        channel.close()
    }

    /// Waits for the client to close after the stream ended.
    private func drain(_ channel: FrameChannel) {
        Socket.setReceiveTimeout(channel.readFD, seconds: 30)
        while (try? channel.receive()) != nil {}
    }
}
