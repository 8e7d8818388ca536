import AsyncAlgorithms
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOSSL
import SproutAPI
import SproutCore
import SproutSystem

/// An interactive terminal in a sandbox (or a streamed exec: the same
/// WebSocket session), over hummingbird-websocket's client.
/// Binary messages carry the terminal's bytes both ways; text messages carry
/// control (`{"resize":{"cols":C,"rows":R}}` out, the exit event in).
/// Closing the session ends the WebSocket; the sandbox keeps running.
public final class TerminalSession: Sendable {
    public enum Message: Sendable, Equatable {
        case text(String)
        case binary([UInt8])
    }

    private let incoming = AsyncThrowingChannel<Message, any Error>()
    private let outgoing = AsyncChannel<Message>()
    private let connection: Task<Void, Never>

    /// Connects; returns once the server has accepted the upgrade.
    init(url: String, headers: HTTPFields, tls: TLSConfiguration? = nil, sniHostname: String? = nil) async throws {
        let ready = AsyncThrowingChannel<Void, any Error>()
        let incoming = self.incoming, outgoing = self.outgoing
        var logger = Logger(label: "sprout.terminal")
        logger.logLevel = .critical
        var configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 20, additionalHeaders: headers)
        configuration.sniHostname = sniHostname
        connection = Task {
            do {
                try await WebSocketClient.connect(url: url, configuration: configuration, tlsConfiguration: tls, logger: logger) { inbound, outbound, _ in
                    ready.finish()
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for await message in outgoing {
                                switch message {
                                case .text(let text): try await outbound.write(.text(text))
                                case .binary(let bytes): try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
                                }
                            }
                            try await outbound.close(.normalClosure, reason: nil)
                        }
                        for try await message in inbound.messages(maxSize: 16 << 20) {
                            switch message {
                            case .text(let text): await incoming.send(.text(text))
                            case .binary(let buffer): await incoming.send(.binary(Array(buffer.readableBytesView)))
                            }
                        }
                        group.cancelAll()
                    }
                }
                ready.finish()
                incoming.finish()
            } catch {
                ready.fail(error)
                incoming.fail(error)
            }
            outgoing.finish()
        }
        do {
            for try await _ in ready {}
        } catch {
            connection.cancel()
            throw error
        }
    }

    /// Sends a message; waits until the connection has taken it.
    public func send(_ message: Message) async throws {
        guard !connection.isCancelled else { throw SproutError(.unavailable, "the terminal is closed") }
        await outgoing.send(message)
    }

    /// The next message, or nil once the server has closed the terminal.
    public func receive() async throws -> Message? {
        var iterator = incoming.makeAsyncIterator()
        return try await iterator.next()
    }

    /// Closes the WebSocket (the server ends its side of the terminal).
    public func close() {
        outgoing.finish()
    }
}

extension SproutAPIClient {
    /// Opens an interactive terminal (WebSocket) in the sandbox.
    public func terminal(_ id: String, cols: UInt16, rows: UInt16, command: String? = nil) async throws -> TerminalSession {
        var target = sandboxPath(id, "pty") + "?cols=\(cols)&rows=\(rows)"
        if let command { target += "&cmd=\(percentEncode(command))" }
        return try await webSocket(target, sandbox: id, what: "a terminal")
    }

    /// Runs a process with its standard input streamed from `input` (nil:
    /// the input has ended, which closes the process's stdin), like `docker
    /// exec -i`; events arrive as from `exec`. Returns how it ended.
    public func execStreaming(
        _ id: String, _ request: API.Exec, input: @escaping @Sendable () async throws -> [UInt8]?,
        onEvent: @escaping @Sendable (API.ExecEvent) -> Void = { _ in }
    ) async throws -> API.Exit {
        let session = try await webSocket(sandboxPath(id, "exec"), sandbox: id, what: "a streamed exec")
        defer { session.close() }
        try await session.send(.text(String(decoding: try JSONEncoder().encode(request), as: UTF8.self)))
        let sender = Task {
            while let chunk = try await input() {
                if !chunk.isEmpty { try await session.send(.binary(chunk)) }
            }
            try await session.send(.text(String(decoding: try JSONEncoder().encode(API.ExecControl(endOfInput: true)), as: UTF8.self)))
        }
        defer { sender.cancel() }
        while let message = try await session.receive() {
            guard case .text(let text) = message else { continue }
            let event: API.ExecEvent
            do { event = try JSONDecoder().decode(API.ExecEvent.self, from: Data(text.utf8)) } catch {
                throw SproutError(.malformed, "unexpected exec event from the server: \(error)")
            }
            onEvent(event)
            if let exit = event.exit { return exit }
            if let error = event.error { throw error.sproutError }
        }
        throw SproutError(.unavailable, "the exec stream ended without an exit status")
    }

    /// The WebSocket client sends the host as SNI and checks the certificate
    /// against it, which an IP address cannot be: a loopback address is
    /// checked as `localhost`; another address, when a CA file or pin is
    /// given, is checked against that trust alone (not by name).
    func webSocketTLS() -> (TLSConfiguration?, String?) {
        guard scheme == "https", IPAddressBytes.parse(host) != nil else { return (tlsConfiguration, nil) }
        if IPAddressBytes.isLoopback(host) { return (tlsConfiguration, "localhost") }
        guard var tls = tlsConfiguration else { return (nil, nil) }
        tls.certificateVerification = .noHostnameVerification
        return (tls, "sprout-server")
    }

    /// A WebSocket to `target` with this client's key.
    func webSocket(_ target: String, sandbox id: String, what: String) async throws -> TerminalSession {
        var headers = HTTPFields()
        if let apiKey, let name = HTTPField.Name("X-API-Key") { headers[name] = apiKey }
        do {
            let (tls, sni) = webSocketTLS()
            return try await TerminalSession(url: (scheme == "https" ? "wss" : "ws") + baseURL.drop { $0 != ":" } + target, headers: headers,
                                             tls: tls, sniHostname: sni)
        } catch let error as WebSocketClientError where error == .webSocketUpgradeFailed {
            // The upgrade answer carries the reason only in its body, which
            // the WebSocket client drops: ask the REST API, which gives it.
            _ = try await sandbox(id)
            throw SproutError(.unavailable, "the server refused \(what) for \(id)")
        } catch let error as SproutError {
            throw error
        } catch {
            throw SproutError(.unavailable, "cannot open \(what) at \(baseURL): \(Self.describe(error))")
        }
    }
}
