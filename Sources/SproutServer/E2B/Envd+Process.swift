import AsyncAlgorithms
import EnvdProto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// Events of envd's `process.Process` streams (messages from `EnvdProto`).
enum EnvdProcess {
    static func event(_ event: Process_ProcessEvent.OneOf_Event) -> Process_StartResponse {
        var response = Process_StartResponse()
        response.event.event = event
        return response
    }

    static func data(_ output: Process_ProcessEvent.DataEvent.OneOf_Output) -> Process_StartResponse {
        var data = Process_ProcessEvent.DataEvent()
        data.output = output
        return event(.data(data))
    }

    static func end(_ exit: ProcessExit) -> Process_StartResponse {
        var end = Process_ProcessEvent.EndEvent()
        if let signal = exit.signal {
            let name = signal == 9 ? "killed" : signal == 15 ? "terminated" : "signal \(signal)"
            end.exitCode = -1
            end.exited = false
            end.status = "signal: \(name)"
        } else {
            let code = exit.code ?? 0
            end.exitCode = code
            end.exited = true
            end.status = "exit status \(code)"
        }
        return event(.end(end))
    }

    /// A terminal size: envd's are 32-bit, a terminal's 16.
    static func size(_ pty: Process_PTY) -> (cols: UInt16, rows: UInt16) {
        func clamp(_ value: UInt32, _ fallback: UInt16) -> UInt16 { value == 0 ? fallback : UInt16(min(value, UInt32(UInt16.max))) }
        return (clamp(pty.size.cols, 80), clamp(pty.size.rows, 24))
    }
}

extension EnvdService {
    func processCall(_ method: String, _ request: Request, streaming: Bool) async throws -> Response {
        switch method {
        case "Start":
            let body = try await ConnectRPC.decodeStreamRequest(Process_StartRequest.self, request)
            return try await start(body, request)
        case "Connect":
            let body = try await ConnectRPC.decodeStreamRequest(Process_ConnectRequest.self, request)
            let session = try await withAgent { agent in
                try await agent.attach(ProcessSelector(id: try await resolve(body.process, agent).id))
            }
            return stream(session, request, pty: session.info.pty)
        case "List":
            _ = try await ConnectRPC.decodeUnary(Process_ListRequest.self, request)
            let processes = try await withAgent { try await $0.processes() }.filter { $0.exit == nil }
            var list = Process_ListResponse()
            list.processes = processes.map { p in
                var info = Process_ProcessInfo()
                info.config.cmd = p.cmd.first ?? ""
                info.config.args = Array(p.cmd.dropFirst())
                info.config.cwd = p.cwd
                info.pid = UInt32(bitPattern: p.pid)
                if let tag = p.tag { info.tag = tag }
                return info
            }
            return try ConnectRPC.unary(list, for: request)
        case "SendSignal":
            let body = try await ConnectRPC.decodeUnary(Process_SendSignalRequest.self, request)
            guard body.signal == .sigkill || body.signal == .sigterm else {
                throw ConnectRPC.Failure(.invalid_argument, "unknown signal \(body.signal.rawValue)")
            }
            try await withAgent { agent in
                _ = try await agent.signal(ProcessSelector(id: try await resolve(body.process, agent).id), Int32(body.signal.rawValue))
            }
            return try ConnectRPC.unary(Process_SendSignalResponse(), for: request)
        case "SendInput":
            let body = try await ConnectRPC.decodeUnary(Process_SendInputRequest.self, request)
            let bytes = Self.inputBytes(body.input)
            try await onProcess(body.process) { try await $0.send(bytes) }
            return try ConnectRPC.unary(Process_SendInputResponse(), for: request)
        case "CloseStdin":
            let body = try await ConnectRPC.decodeUnary(Process_CloseStdinRequest.self, request)
            try await onProcess(body.process) { try await $0.sendEndOfInput() }
            return try ConnectRPC.unary(Process_CloseStdinResponse(), for: request)
        case "Update":
            let body = try await ConnectRPC.decodeUnary(Process_UpdateRequest.self, request)
            if body.hasPty, body.pty.hasSize {
                let size = EnvdProcess.size(body.pty)
                try await onProcess(body.process) { try await $0.sendResize(cols: size.cols, rows: size.rows) }
            }
            return try ConnectRPC.unary(Process_UpdateResponse(), for: request)
        case "StreamInput":
            return try await streamInput(request)
        default:
            throw Self.unimplemented("process.Process", method)
        }
    }

    /// The agent's process for an envd selector (PIDs are the real ones in the sandbox).
    func resolve(_ selector: Process_ProcessSelector, _ agent: AgentClient) async throws -> AgentProcess {
        let running = try await agent.processes().filter { $0.exit == nil }
        switch selector.selector {
        case .pid(let pid):
            if let process = running.first(where: { UInt32(bitPattern: $0.pid) == pid }) { return process }
            throw ConnectRPC.Failure(.not_found, "process with pid \(pid) not found")
        case .tag(let tag):
            if let process = running.first(where: { $0.tag == tag }) { return process }
            throw ConnectRPC.Failure(.not_found, "process with tag \(tag.prefix(64)) not found")
        case nil:
            throw ConnectRPC.Failure(.invalid_argument, "the process selector names neither a pid nor a tag")
        }
    }

    /// Attaches to a process, does `body` on the session, detaches.
    func onProcess(_ selector: Process_ProcessSelector, _ body: @Sendable (ProcessSession) async throws -> Void) async throws {
        try await withAgent { agent in
            let session = try await agent.attach(ProcessSelector(id: try await resolve(selector, agent).id))
            defer { session.close() }
            try await body(session)
        }
    }

    static func inputBytes(_ input: Process_ProcessInput) -> [UInt8] {
        switch input.input {
        case .stdin(let bytes), .pty(let bytes): Array(bytes)
        case nil: []
        }
    }

    func start(_ body: Process_StartRequest, _ request: Request) async throws -> Response {
        guard !body.process.cmd.isEmpty else { throw ConnectRPC.Failure(.invalid_argument, "process.cmd is empty") }
        // HOME, USER, LOGNAME and SHELL are the user's login ones (the agent's).
        let env = sandbox.environment.merging(body.process.envs) { _, call in call }
        // Like envd: a command starts in the env's workdir (a template's) or its user's home unless told otherwise.
        let cwd = try body.process.hasCwd ? user.resolve(body.process.cwd) : (sandbox.workdir ?? user.home)
        let pty = body.hasPty ? EnvdProcess.size(body.pty) : nil
        let spec = ProcessSpec(cmd: [body.process.cmd] + body.process.args, cwd: cwd, env: env, tag: body.hasTag ? body.tag : nil,
                               stdin: pty == nil ? (body.hasStdin ? body.stdin : true) : nil,
                               pty: pty.map { TerminalSize(cols: $0.cols, rows: $0.rows) }, user: user.agentUser)
        let session: ProcessSession
        do {
            session = try await withAgent { try await $0.start(spec) }
        } catch let error as SproutError where error.code == .notFound && spec.cmd?.first == "/bin/bash" {
            // The SDK runs every command with `/bin/bash -l -c`; an image without bash (busybox, alpine) gets its sh.
            var plain = spec
            plain.cmd?[0] = "/bin/sh"
            session = try await withAgent { try await $0.start(plain) }
        }
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
        let id = sandboxID, activity = services.lifecycle.activity, service = self, codec = ConnectRPC.Codec(request)
        return Response(status: .ok, headers: [.contentType: codec.streamContentType], body: ResponseBody { writer in
            defer { session.close() }
            let frames = AsyncChannel<ByteBuffer>()
            try await activity.holding(id) { try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var failure: ConnectRPC.Failure?
                    do {
                        var started = Process_ProcessEvent.StartEvent()
                        started.pid = UInt32(bitPattern: session.info.pid)
                        await frames.send(try ConnectRPC.message(EnvdProcess.event(.start(started)), codec))
                        for try await item in session {
                            switch item {
                            case .stdout(let bytes):
                                await frames.send(try ConnectRPC.message(EnvdProcess.data(pty ? .pty(Data(bytes)) : .stdout(Data(bytes))), codec))
                            case .stderr(let bytes):
                                await frames.send(try ConnectRPC.message(EnvdProcess.data(.stderr(Data(bytes))), codec))
                            case .error: continue
                            case .exit(let status):
                                onExit()
                                await frames.send(try ConnectRPC.message(EnvdProcess.end(status), codec))
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
                            await frames.send(try ConnectRPC.message(EnvdProcess.event(.keepalive(.init())), codec))
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
        let codec = ConnectRPC.Codec(request)
        guard let first = try await reader.next() else { throw ConnectRPC.Failure(.invalid_argument, "the stream carried no start message") }
        guard case .start(let start) = try codec.decode(Process_StreamInputRequest.self, first).event else {
            throw ConnectRPC.Failure(.invalid_argument, "the first message must be start")
        }
        let session = try await withAgent { agent in
            try await agent.attach(ProcessSelector(id: try await resolve(start.process, agent).id))
        }
        defer { session.close() }
        while let bytes = try await reader.next() {
            if case .data(let data) = try codec.decode(Process_StreamInputRequest.self, bytes).event {
                try await session.send(Self.inputBytes(data.input))
            }
        }
        var body = try ConnectRPC.message(Process_StreamInputResponse(), codec)
        var end = ConnectRPC.endOfStream(nil)
        body.writeBuffer(&end)
        return Response(status: .ok, headers: [.contentType: codec.streamContentType], body: .init(byteBuffer: body))
    }
}
