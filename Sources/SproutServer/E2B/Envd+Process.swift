import AsyncAlgorithms
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// envd's `process.Process` messages in Connect's JSON mapping.
enum EnvdProcess {
    struct Config: Codable, Sendable {
        var cmd: String
        var args: [String]?
        var envs: [String: String]?
        var cwd: String?
    }
    struct PTY: Codable, Sendable {
        struct Size: Codable, Sendable { var cols: UInt16?; var rows: UInt16? }
        var size: Size?
    }
    struct StartRequest: Decodable { var process: Config; var pty: PTY?; var tag: String?; var stdin: Bool? }
    /// `{"pid": N}` or `{"tag": "…"}`.
    struct Selector: Codable, Sendable { var pid: Int32?; var tag: String? }
    struct SelectRequest: Decodable { var process: Selector }
    struct Input: Codable { var stdin: String?; var pty: String? }
    struct SendInputRequest: Decodable { var process: Selector; var input: Input }
    struct SendSignalRequest: Decodable {
        var process: Selector
        var signal: SignalName
    }
    /// Enums arrive by name (`SIGNAL_SIGKILL`) or by number.
    struct SignalName: Decodable {
        var number: Int32
        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let n = try? container.decode(Int32.self) {
                number = n
            } else {
                switch try container.decode(String.self) {
                case "SIGNAL_SIGKILL": number = 9
                case "SIGNAL_SIGTERM": number = 15
                case let other: throw ConnectRPC.Failure(.invalid_argument, "unknown signal \(other.prefix(40))")
                }
            }
        }
    }
    struct UpdateRequest: Decodable { var process: Selector; var pty: PTY? }
    struct StreamInputRequest: Decodable {
        struct Start: Decodable { var process: Selector }
        struct DataEvent: Decodable { var input: Input }
        var start: Start?
        var data: DataEvent?
    }
    struct Info: Encodable { var config: Config; var pid: Int32; var tag: String? }
    struct ListResponse: Encodable { var processes: [Info] }
    struct Empty: Codable {}

    /// `{"event": {...}}`, one of start, data, end, keepalive.
    struct EventMessage: Encodable {
        struct Event: Encodable {
            struct Start: Encodable { var pid: Int32 }
            struct DataEvent: Encodable { var stdout: String?; var stderr: String?; var pty: String? }
            struct End: Encodable { var exitCode: Int32; var exited: Bool; var status: String; var error: String? }
            var start: Start?
            var data: DataEvent?
            var end: End?
            var keepalive: Empty?
        }
        var event: Event
    }

    static func end(_ exit: ProcessExit) -> EventMessage {
        if let signal = exit.signal {
            let name = signal == 9 ? "killed" : signal == 15 ? "terminated" : "signal \(signal)"
            return EventMessage(event: .init(end: .init(exitCode: -1, exited: false, status: "signal: \(name)")))
        }
        let code = exit.code ?? 0
        return EventMessage(event: .init(end: .init(exitCode: code, exited: true, status: "exit status \(code)")))
    }
}

extension EnvdService {
    func processCall(_ method: String, _ request: Request, streaming: Bool) async throws -> Response {
        switch method {
        case "Start":
            let body = try await ConnectRPC.decodeStreamRequest(EnvdProcess.StartRequest.self, request)
            return try await start(body, request)
        case "Connect":
            let body = try await ConnectRPC.decodeStreamRequest(EnvdProcess.SelectRequest.self, request)
            let session = try await withAgent { agent in
                try await agent.attach(ProcessSelector(id: try await resolve(body.process, agent).id))
            }
            return stream(session, request, pty: session.info.pty)
        case "List":
            _ = try await ConnectRPC.decodeUnary(EnvdProcess.Empty.self, request)
            let processes = try await withAgent { try await $0.processes() }.filter { $0.exit == nil }
            return try ConnectRPC.unary(EnvdProcess.ListResponse(processes: processes.map { p in
                EnvdProcess.Info(config: .init(cmd: p.cmd.first ?? "", args: Array(p.cmd.dropFirst()), envs: [:], cwd: p.cwd), pid: p.pid, tag: p.tag)
            }))
        case "SendSignal":
            let body = try await ConnectRPC.decodeUnary(EnvdProcess.SendSignalRequest.self, request)
            try await withAgent { agent in
                _ = try await agent.signal(ProcessSelector(id: try await resolve(body.process, agent).id), body.signal.number)
            }
            return try ConnectRPC.unary(EnvdProcess.Empty())
        case "SendInput":
            let body = try await ConnectRPC.decodeUnary(EnvdProcess.SendInputRequest.self, request)
            let bytes = try Self.inputBytes(body.input)
            try await onProcess(body.process) { try await $0.send(bytes) }
            return try ConnectRPC.unary(EnvdProcess.Empty())
        case "CloseStdin":
            let body = try await ConnectRPC.decodeUnary(EnvdProcess.SelectRequest.self, request)
            try await onProcess(body.process) { try await $0.sendEndOfInput() }
            return try ConnectRPC.unary(EnvdProcess.Empty())
        case "Update":
            let body = try await ConnectRPC.decodeUnary(EnvdProcess.UpdateRequest.self, request)
            if let size = body.pty?.size {
                try await onProcess(body.process) { try await $0.sendResize(cols: size.cols ?? 80, rows: size.rows ?? 24) }
            }
            return try ConnectRPC.unary(EnvdProcess.Empty())
        case "StreamInput":
            return try await streamInput(request)
        default:
            throw Self.unimplemented("process.Process", method)
        }
    }

    /// The agent's process for an envd selector (PIDs are the real ones in the sandbox).
    func resolve(_ selector: EnvdProcess.Selector, _ agent: AgentClient) async throws -> AgentProcess {
        let running = try await agent.processes().filter { $0.exit == nil }
        if let pid = selector.pid, let process = running.first(where: { $0.pid == pid }) { return process }
        if let tag = selector.tag, let process = running.first(where: { $0.tag == tag }) { return process }
        let name = selector.pid.map { "pid \($0)" } ?? selector.tag.map { "tag \($0.prefix(64))" } ?? "no selector"
        throw ConnectRPC.Failure(.not_found, "process with \(name) not found")
    }

    /// Attaches to a process, does `body` on the session, detaches.
    func onProcess(_ selector: EnvdProcess.Selector, _ body: @Sendable (ProcessSession) async throws -> Void) async throws {
        try await withAgent { agent in
            let session = try await agent.attach(ProcessSelector(id: try await resolve(selector, agent).id))
            defer { session.close() }
            try await body(session)
        }
    }

    static func inputBytes(_ input: EnvdProcess.Input) throws -> [UInt8] {
        guard let encoded = input.stdin ?? input.pty else { return [] }
        guard let data = Data(base64Encoded: encoded) else { throw ConnectRPC.Failure(.invalid_argument, "input must be base64") }
        return Array(data)
    }

    func start(_ body: EnvdProcess.StartRequest, _ request: Request) async throws -> Response {
        guard !body.process.cmd.isEmpty else { throw ConnectRPC.Failure(.invalid_argument, "process.cmd is empty") }
        // HOME, USER, LOGNAME and SHELL are the user's login ones (the agent's).
        let env = sandbox.environment.merging(body.process.envs ?? [:]) { _, call in call }
        // Like envd: a command starts in its user's home unless told otherwise.
        let cwd = try body.process.cwd.map { try user.resolve($0) } ?? user.home
        let pty = body.pty.map { TerminalSize(cols: $0.size?.cols ?? 80, rows: $0.size?.rows ?? 24) }
        let spec = ProcessSpec(cmd: [body.process.cmd] + (body.process.args ?? []), cwd: cwd, env: env, tag: body.tag,
                               stdin: pty == nil ? (body.stdin ?? true) : nil, pty: pty, user: user.agentUser)
        let session = try await withAgent { try await $0.start(spec) }
        // `Connect-Timeout-Ms` bounds the process's life, as envd does: it is
        // killed then, whether or not a client still follows it; its exit,
        // once the stream sees it, cancels the kill.
        let (agent, id) = (sandbox.agent, session.info.id)
        let timeout = request.headers[HTTPField.Name("Connect-Timeout-Ms")!].flatMap { Int($0) } ?? 0
        let deadline = timeout <= 0 ? nil : Task {
            guard (try? await Task.sleep(for: .milliseconds(timeout))) != nil else { return }
            _ = try? await agent.signal(ProcessSelector(id: id), 9)
        }
        return stream(session, request, pty: pty != nil, onExit: { deadline?.cancel() })
    }

    /// A process's life as a Connect server stream: `start`, `data`…, `end`,
    /// with `keepalive` events at the requested interval. Ending the stream
    /// (the client going away) detaches; the process keeps running.
    func stream(_ session: ProcessSession, _ request: Request, pty: Bool, onExit: @escaping @Sendable () -> Void = {}) -> Response {
        let interval = request.headers[HTTPField.Name("Keepalive-Ping-Interval")!].flatMap { Double($0) }.map { max(1, $0) }
        let id = sandboxID, activity = services.lifecycle.activity, service = self
        return Response(status: .ok, headers: [.contentType: ConnectRPC.streamContentType], body: ResponseBody { writer in
            defer { session.close() }
            let frames = AsyncChannel<ByteBuffer>()
            try await activity.holding(id) { try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var failure: ConnectRPC.Failure?
                    do {
                        await frames.send(try ConnectRPC.message(EnvdProcess.EventMessage(event: .init(start: .init(pid: session.info.pid)))))
                        for try await item in session {
                            switch item {
                            case .stdout(let bytes):
                                let text = Data(bytes).base64EncodedString()
                                await frames.send(try ConnectRPC.message(EnvdProcess.EventMessage(event: .init(data: pty ? .init(pty: text) : .init(stdout: text)))))
                            case .stderr(let bytes):
                                await frames.send(try ConnectRPC.message(EnvdProcess.EventMessage(event: .init(data: .init(stderr: Data(bytes).base64EncodedString())))))
                            case .error: continue
                            case .exit(let status):
                                onExit()
                                await frames.send(try ConnectRPC.message(EnvdProcess.end(status)))
                            }
                        }
                    } catch {
                        failure = await service.streamFailure(error)
                    }
                    await frames.send(ConnectRPC.endOfStream(failure))
                    frames.finish()
                }
                if let interval {
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: .seconds(interval))
                            await frames.send(try ConnectRPC.message(EnvdProcess.EventMessage(event: .init(keepalive: .init()))))
                        }
                    }
                }
                for await frame in frames { try await writer.write(frame) }
                group.cancelAll()
            } }
            try await writer.finish(nil)
        })
    }

    /// `StreamInput`: a client stream of `start{process}`, then `data{input}`
    /// and `keepalive`; input keeps its order.
    func streamInput(_ request: Request) async throws -> Response {
        var reader = ConnectRPC.EnvelopeReader(request.body)
        guard let first = try await reader.next() else { throw ConnectRPC.Failure(.invalid_argument, "the stream carried no start message") }
        guard let start = try JSONDecoder().decode(EnvdProcess.StreamInputRequest.self, from: first).start else {
            throw ConnectRPC.Failure(.invalid_argument, "the first message must be start")
        }
        let session = try await withAgent { agent in
            try await agent.attach(ProcessSelector(id: try await resolve(start.process, agent).id))
        }
        defer { session.close() }
        while let json = try await reader.next() {
            let message = try JSONDecoder().decode(EnvdProcess.StreamInputRequest.self, from: json)
            if let data = message.data { try await session.send(try Self.inputBytes(data.input)) }
        }
        var body = try ConnectRPC.message(EnvdProcess.Empty())
        var end = ConnectRPC.endOfStream(nil)
        body.writeBuffer(&end)
        return Response(status: .ok, headers: [.contentType: ConnectRPC.streamContentType], body: .init(byteBuffer: body))
    }
}
