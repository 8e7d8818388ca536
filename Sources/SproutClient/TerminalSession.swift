import AsyncAlgorithms
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import SproutAPI
import SproutCore

/// An interactive terminal in a sandbox, over hummingbird-websocket's client.
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
    init(url: String, headers: HTTPFields) async throws {
        let ready = AsyncThrowingChannel<Void, any Error>()
        let incoming = self.incoming, outgoing = self.outgoing
        var logger = Logger(label: "sprout.terminal")
        logger.logLevel = .critical
        let configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 20, additionalHeaders: headers)
        connection = Task {
            do {
                try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) { inbound, outbound, _ in
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
        var headers = HTTPFields()
        if let apiKey, let name = HTTPField.Name("X-API-Key") { headers[name] = apiKey }
        do {
            return try await TerminalSession(url: (scheme == "https" ? "wss" : "ws") + baseURL.drop { $0 != ":" } + target, headers: headers)
        } catch let error as WebSocketClientError where error == .webSocketUpgradeFailed {
            // The upgrade answer carries the reason only in its body, which
            // the WebSocket client drops: ask the REST API, which gives it.
            _ = try await sandbox(id)
            throw SproutError(.unavailable, "the server refused the terminal for \(id)")
        } catch let error as SproutError {
            throw error
        } catch {
            throw SproutError(.unavailable, "cannot open a terminal at \(baseURL): \(Self.describe(error))")
        }
    }
}
