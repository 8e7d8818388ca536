import AsyncAlgorithms
import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import SproutAgentProtocol
import SproutAPI
import SproutAgentClient
import SproutCore

/// `GET /v1/sandboxes/{id}/exec` (WebSocket): a process with its standard
/// input streamed, as `docker exec -i` has it. The client's first message is
/// the `Exec` body (JSON text); then binary messages are input and text
/// messages `ExecControl` (`{"endOfInput": true}` closes its stdin,
/// `{"signal": N}`). The server sends every `ExecEvent` as a text message,
/// as the NDJSON exec does, and closes after `exit`. Closing early leaves the
/// process running, as with any stream.
struct ExecStreamRoutes {
    let services: SproutServices
    var keys: KeyStore { services.keys }

    func register(webSocket group: RouterGroup<SproutContext>) {
        group.ws("sandboxes/:id/exec") { request, context in
            _ = try await services.lifecycle.agent(try context.parameters.require("id"), for: try context.caller())
            return .upgrade(AuthMiddleware.webSocketHeaders(request))
        } onUpgrade: { inbound, outbound, wsContext in
            let context = wsContext.requestContext
            let id = try context.parameters.require("id")
            let keyID = try context.caller().keyID
            let started = AsyncChannel<ProcessSession>()
            try await services.lifecycle.activity.holding(id) { try await withThrowingTaskGroup(of: Void.self) { group in
                // The one reader of the client's messages: the request, then input.
                group.addTask {
                    var messages = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                    let session: ProcessSession
                    do {
                        session = try await start(try await messages.next(), sandbox: id, context)
                    } catch {
                        let reason = (error as? SproutError).map(API.ErrorDetail.init)
                            ?? API.ErrorDetail(code: "invalid_argument", message: "the exec request is not valid: \(error)")
                        try await outbound.write(.text(TerminalRoutes.json(API.ExecEvent(error: reason))))
                        return
                    }
                    await started.send(session)
                    while let message = try await messages.next() {
                        switch message {
                        case .binary(let buffer):
                            // Input the process no longer reads is dropped, as by a pipe.
                            try? await session.send(Array(buffer.readableBytesView))
                        case .text(let text):
                            let control = try JSONDecoder().decode(API.ExecControl.self, from: Data(text.utf8))
                            if control.endOfInput == true { try? await session.sendEndOfInput() }
                            if let signal = control.signal { try await session.sendSignal(signal) }
                        }
                    }
                    // The client went away: the process keeps running, like a disconnect.
                    try await Task.sleep(for: .seconds(86_400 * 365))
                }
                group.addTask {
                    for await session in started {
                        defer { session.close() }
                        try await outbound.write(.text(TerminalRoutes.json(API.ExecEvent(started: API.Process(session.info)))))
                        for try await item in session {
                            try await outbound.write(.text(TerminalRoutes.json(API.ExecEvent(item))))
                            if case .exit = item { return }
                        }
                        return
                    }
                }
                group.addTask { [keys] in await keys.untilRevoked(keyID) }
                try await group.next()
                group.cancelAll()
            } }
        }
    }

    /// Starts the process the first message asks for, its stdin open.
    func start(_ first: WebSocketMessage?, sandbox id: String, _ context: SproutContext) async throws -> ProcessSession {
        guard case .text(let text)? = first else {
            throw SproutError(.invalidArgument, "the first message is the exec request, as JSON text")
        }
        let body: API.Exec
        do { body = try JSONDecoder().decode(API.Exec.self, from: Data(text.utf8)) } catch {
            throw SproutError(.invalidArgument, "the exec request is not valid JSON: \(error)")
        }
        guard body.stdin == nil, body.detach != true else {
            throw SproutError(.invalidArgument, "a streamed exec takes its input as messages (no stdin, no detach)")
        }
        if let cwd = body.cwd { try AgentRoutes.validatePath(cwd) }
        let sandbox = try await services.lifecycle.open(id, for: try context.caller())
        let env = sandbox.environment.merging(body.env ?? [:]) { _, call in call }
        return try await sandbox.agent.start(ProcessSpec(
            cmd: body.cmd, shell: body.shell, cwd: body.cwd ?? sandbox.workdir, env: env, tag: body.tag, stdin: true, user: body.user ?? sandbox.user))
    }
}
