import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import SproutAPI
import SproutAgentClient
import SproutCore
import SproutSystem
import SproutBlocking

/// Port previews: `/v1/sandboxes/{id}/ports/{port}/...` reaches a server
/// listening on that port inside the sandbox, over HTTP or WebSocket.
struct PortRoutes {
    let services: SproutServices
    var keys: KeyStore { services.keys }
    static let maxRequestBody = 16 << 20
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "proxy-authorization",
        "proxy-authenticate", "host", "content-length", "x-api-key",
    ]

    func register(http group: RouterGroup<SproutContext>) {
        for method in [HTTPRequest.Method.get, .post, .put, .delete, .patch, .head, .options] {
            group.on("sandboxes/:id/ports/:port/**", method: method, use: proxy)
            group.on("sandboxes/:id/ports/:port", method: method, use: proxy)
        }
    }

    func register(webSocket group: RouterGroup<SproutContext>) {
        for path in ["sandboxes/:id/ports/:port/**", "sandboxes/:id/ports/:port"] {
            group.ws(RouterPath(path)) { _, context in
                let (address, port) = try await target(context)
                // Refuse the upgrade (503) if nothing listens, rather than accept and close.
                guard try await onThread({ Socket.answers(host: address, port: port, timeoutSeconds: 5) }) else {
                    throw SproutError(.unavailable, "nothing answers on port \(port) in the sandbox")
                }
                return .upgrade([:])
            } onUpgrade: { inbound, outbound, wsContext in
                let (address, port) = try await target(wsContext.requestContext)
                let uri = wsContext.request.uri
                let path = Self.upstreamTarget(wsContext.requestContext, query: uri.query)
                let upstream = try await SandboxWebSocket.connect(host: address, port: port, target: path)
                let keyID = try wsContext.requestContext.caller().keyID
                let id = try wsContext.requestContext.parameters.require("id")
                try await services.lifecycle.activity.holding(id) {
                    try await Relay.run(upstream: upstream, inbound: inbound, outbound: outbound) { [keys] in await keys.untilRevoked(keyID) }
                }
            }
        }
    }

    func target(_ context: SproutContext) async throws -> (String, UInt16) {
        let text = try context.parameters.require("port")
        guard let port = UInt16(text), port > 0 else { throw SproutError(.invalidArgument, "port must be 1-65535, got \(text)") }
        let address = try await services.lifecycle.address(try context.parameters.require("id"), for: try context.caller())
        return (address, port)
    }

    static func upstreamTarget(_ context: SproutContext, query: String?) -> String {
        let rest = context.parameters.getCatchAll().joined(separator: "/")
        let path = "/" + rest
        if let query, !query.isEmpty { return path + "?" + query }
        return path
    }

    @Sendable func proxy(_ request: Request, context: SproutContext) async throws -> Response {
        let (address, port) = try await target(context)
        let prefix = "/v1/sandboxes/\(try context.parameters.require("id"))/ports/\(port)"
        return try await Self.forward(request, to: address, port: port, target: Self.upstreamTarget(context, query: request.uri.query),
                                      extraHeaders: [("X-Forwarded-Prefix", prefix)], clientGone: context.clientGone)
    }

    /// Sends `request` to a server inside a sandbox and streams its answer back.
    /// While the answer is quiet, `clientGone` is asked each second: once the
    /// client has hung up, the upstream connection is reset, so the server
    /// inside sees its client leave (the code interpreter interrupts a call
    /// whose caller timed out).
    static func forward(_ request: Request, to address: String, port: UInt16, target: String,
                        extraHeaders: [(String, String)] = [], dropping: Set<String> = [],
                        clientGone: @escaping @Sendable () async -> Bool) async throws -> Response {
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: Self.maxRequestBody)
        } catch {
            throw SproutError(.tooLarge, "preview request bodies are limited to \(Self.maxRequestBody) bytes")
        }
        var headers: [(String, String)] = []
        for field in request.headers where !Self.hopByHop.contains(field.name.canonicalName) && !dropping.contains(field.name.canonicalName) {
            headers.append((field.name.rawName, field.value))
        }
        headers += extraHeaders
        let exchange: SandboxHTTPExchange
        do {
            exchange = try await SandboxHTTPExchange.start(
                host: address, port: port, method: request.method.rawValue, target: target, headers: headers, body: body)
        } catch let error as SproutError where error.code == .unavailable || error.code == .timeout {
            throw SproutError(.unavailable, "nothing answers on port \(port) in the sandbox: \(error.message)")
        }
        var fields = HTTPFields()
        for (name, value) in exchange.head.headers where !Self.hopByHop.contains(name.lowercased()) {
            if let fieldName = HTTPField.Name(name) { fields.append(HTTPField(name: fieldName, value: value)) }
        }
        let status = HTTPResponse.Status(code: Int(exchange.head.status.code), reasonPhrase: exchange.head.status.reasonPhrase)
        return Response(status: status, headers: fields, body: ResponseBody { writer in
            defer { exchange.close() }
            for try await piece in exchange.body() {
                switch piece {
                case .body(let bytes): try await writer.write(bytes)
                case .quiet: if await clientGone() { throw SproutError(.unavailable, "the client went away") }
                case .head: continue
                }
            }
            try await writer.finish(nil)
        })
    }
}

/// Relays messages between a server-side WebSocket and one into a sandbox.
enum Relay {
    /// Relays until either side closes or `until` returns (a revoked key).
    static func run(
        upstream: SandboxWebSocket.Channel, inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter,
        until: @escaping @Sendable () async -> Void
    ) async throws {
        try await upstream.executeThenClose { fromSandbox, toSandbox in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await frame in fromSandbox {
                        switch frame.opcode {
                        case .text: try await outbound.write(.text(String(buffer: frame.unmaskedData)))
                        case .binary: try await outbound.write(.binary(frame.unmaskedData))
                        case .ping: try await toSandbox.write(SandboxWebSocket.frame(.pong, frame.unmaskedData))
                        case .connectionClose: return
                        default: continue
                        }
                    }
                }
                group.addTask {
                    for try await message in inbound.messages(maxSize: 16 << 20) {
                        switch message {
                        case .text(let text): try await toSandbox.write(SandboxWebSocket.frame(.text, ByteBuffer(string: text)))
                        case .binary(let bytes): try await toSandbox.write(SandboxWebSocket.frame(.binary, bytes))
                        }
                    }
                    // The client closed: so does the relay, telling the server inside.
                    try? await toSandbox.write(SandboxWebSocket.frame(.connectionClose, ByteBuffer(bytes: [0x03, 0xE8])))
                }
                group.addTask { await until() }
                try await group.next()
                group.cancelAll()
            }
        }
    }
}
