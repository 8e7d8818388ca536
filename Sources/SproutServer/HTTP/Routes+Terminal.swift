import Foundation
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import SproutAgentProtocol
import SproutAPI
import SproutAgentClient
import SproutCore

/// `GET /v1/sandboxes/{id}/pty?cols=&rows=` (WebSocket): an interactive
/// terminal. Binary messages carry terminal bytes both ways; text messages
/// carry JSON control: `{"resize": {"cols", "rows"}}` or `{"signal": N}` from
/// the client, `{"exit": {...}}` from the server just before it closes.
struct TerminalRoutes {
    let services: SproutServices
    var keys: KeyStore { services.keys }
    static let defaultShell = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"

    /// Without an upgrade the route explains itself instead of a bare 404.
    func register(http group: RouterGroup<SproutContext>) {
        group.get("sandboxes/:id/pty") { _, context -> Response in
            _ = try await services.lifecycle.agent(try context.parameters.require("id"), for: try context.caller())
            throw SproutError(.invalidArgument, "the terminal needs a WebSocket upgrade (Upgrade: websocket)")
        }
    }

    func register(webSocket group: RouterGroup<SproutContext>) {
        group.ws("sandboxes/:id/pty") { request, context in
            _ = try Self.size(request)
            _ = try await services.lifecycle.agent(try context.parameters.require("id"), for: try context.caller())
            return .upgrade(AuthMiddleware.webSocketHeaders(request))
        } onUpgrade: { inbound, outbound, wsContext in
            let context = wsContext.requestContext
            let size = try Self.size(wsContext.request)
            let id = try context.parameters.require("id")
            let sandbox = try await services.lifecycle.open(id, for: try context.caller())
            let command = wsContext.request.uri.queryParameters.get("cmd")
            let keyID = try context.caller().keyID
            let session = try await sandbox.agent.start(ProcessSpec(shell: command ?? Self.defaultShell, cwd: sandbox.workdir, env: sandbox.environment,
                                                                    pty: size, user: sandbox.user))
            defer { session.close() }
            try await services.lifecycle.activity.holding(id) { try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await item in session {
                        switch item {
                        case .stdout(let bytes), .stderr(let bytes):
                            try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                        case .error(let error):
                            try await outbound.write(.text(Self.json(API.ExecEvent(error: error))))
                        case .exit(let status):
                            try await outbound.write(.text(Self.json(API.ExecEvent(exit: API.Exit(status)))))
                            return
                        }
                    }
                }
                group.addTask {
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        switch message {
                        case .binary(let buffer):
                            try await session.send(Array(buffer.readableBytesView))
                        case .text(let text):
                            let control = try JSONDecoder().decode(Control.self, from: Data(text.utf8))
                            if let resize = control.resize { try await session.sendResize(cols: resize.cols, rows: resize.rows) }
                            if let signal = control.signal { try await session.sendSignal(signal) }
                        }
                    }
                }
                // A revoked key ends the terminal at once (the process keeps running, like a disconnect).
                group.addTask { [keys] in await keys.untilRevoked(keyID) }
                try await group.next()
                group.cancelAll()
            } }
        }
    }

    static func size(_ request: Request) throws -> TerminalSize {
        let cols = request.uri.queryParameters.get("cols").flatMap { UInt16($0) } ?? 80
        let rows = request.uri.queryParameters.get("rows").flatMap { UInt16($0) } ?? 24
        guard (1...1000).contains(cols), (1...1000).contains(rows) else {
            throw SproutError(.invalidArgument, "cols and rows must be 1-1000")
        }
        return TerminalSize(cols: cols, rows: rows)
    }

    static func json<T: Encodable>(_ value: T) -> String {
        String(decoding: (try? JSONEncoder.sorted.encode(value)) ?? Data(), as: UTF8.self)
    }
}
