import AsyncAlgorithms
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import SproutCore
import SproutSystem

/// One HTTP/1.1 exchange with a server inside a sandbox, over SwiftNIO: the
/// port previews' proxy. The connection closes with a reset (`SO_LINGER` 0),
/// so the sandbox's end of it never waits in TIME_WAIT, which gVisor cannot
/// checkpoint. The answer's body streams with backpressure: a slow client
/// slows the reads from the sandbox, nothing piles up in memory.
final class SandboxHTTPExchange: Sendable {
    enum Piece: Sendable {
        case head(HTTPResponseHead)
        case body(ByteBuffer)
        /// A quiet second: the reader's cue to check on its client.
        case quiet
    }

    let head: HTTPResponseHead
    private let pieces: AsyncThrowingChannel<Piece, Error>
    private let pump: Task<Void, Never>
    private let ticker: Task<Void, Never>

    private init(head: HTTPResponseHead, pieces: AsyncThrowingChannel<Piece, Error>, pump: Task<Void, Never>, ticker: Task<Void, Never>) {
        self.head = head
        self.pieces = pieces
        self.pump = pump
        self.ticker = ticker
    }

    /// Sends the request and returns once the answer's head has come.
    static func start(host: String, port: UInt16, method: String, target: String, headers: [(String, String)], body: ByteBuffer,
                      connectTimeout: TimeAmount = .seconds(5)) async throws -> SandboxHTTPExchange {
        let channel = try await connectIntoSandbox(host: host, port: port, timeout: connectTimeout) { channel in
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
        }
        var fields = HTTPHeaders(headers)
        fields.replaceOrAdd(name: "Host", value: "\(host):\(port)")
        fields.replaceOrAdd(name: "Connection", value: "close")
        fields.replaceOrAdd(name: "Content-Length", value: String(body.readableBytes))
        let request = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: target, headers: fields)
        let pieces = AsyncThrowingChannel<Piece, Error>()
        let pump = Task {
            do {
                try await channel.executeThenClose { inbound, outbound in
                    try await outbound.write(.head(request))
                    if body.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(body))) }
                    try await outbound.write(.end(nil))
                    for try await part in inbound {
                        switch part {
                        case .head(let head): await pieces.send(.head(head))
                        case .body(let bytes): await pieces.send(.body(bytes))
                        case .end:
                            pieces.finish()
                            return
                        }
                    }
                    throw SproutError(.unavailable, "the server in the sandbox closed the connection mid-answer")
                }
            } catch {
                pieces.fail(error)
            }
        }
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                guard !Task.isCancelled else { return }
                await pieces.send(.quiet)
            }
        }
        var iterator = pieces.makeAsyncIterator()
        do {
            while true {
                guard let piece = try await iterator.next() else {
                    throw SproutError(.unavailable, "the server in the sandbox closed the connection without answering")
                }
                if case .head(let head) = piece {
                    return SandboxHTTPExchange(head: head, pieces: pieces, pump: pump, ticker: ticker)
                }
            }
        } catch {
            pump.cancel()
            ticker.cancel()
            throw error
        }
    }

    /// The answer's body, with a `.quiet` piece for each second nothing came; ends with it.
    func body() -> AsyncThrowingChannel<Piece, Error> { pieces }

    /// Ends the exchange: the connection into the sandbox is reset (also mid-answer).
    func close() {
        ticker.cancel()
        pump.cancel()
    }

    deinit { close() }
}

/// A WebSocket connection to a server inside a sandbox (the port previews'
/// WebSocket side), over SwiftNIO: the HTTP upgrade, then frames, whole
/// (fragments aggregated); the socket closes with a reset like the HTTP side's.
enum SandboxWebSocket {
    typealias Channel = NIOAsyncChannel<WebSocketFrame, WebSocketFrame>

    private enum Upgrade: Sendable {
        case websocket(Channel)
        case refused
    }

    /// With `tls`, over TLS (an API server to an `https` node).
    static func connect(
        host: String, port: UInt16, tls: NIOSSLContext? = nil, target: String, headers extra: [(String, String)] = [],
        connectTimeout: TimeAmount = .seconds(5)
    ) async throws -> Channel {
        let upgraded = try await connectIntoSandbox(host: host, port: port, timeout: connectTimeout) { channel in
            if let tls {
                // No SNI for an address (TLS names hosts only).
                try channel.pipeline.syncOperations.addHandler(
                    try NIOSSLClientHandler(context: tls, serverHostname: IPAddressBytes.parse(host) == nil ? host : nil))
            }
            let upgrader = NIOTypedWebSocketClientUpgrader<Upgrade>(maxFrameSize: 16 << 20) { channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16,
                                                    maxAccumulatedFrameSize: 16 << 20))
                    return Upgrade.websocket(try Channel(wrappingChannelSynchronously: channel))
                }
            }
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "\(host):\(port)")
            headers.add(name: "Content-Length", value: "0")
            for (name, value) in extra { headers.add(name: name, value: value) }
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: target, headers: headers)
            let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                upgradeRequestHead: head, upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in channel.eventLoop.makeCompletedFuture { Upgrade.refused } })
            return try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                configuration: .init(upgradeConfiguration: configuration))
        }
        switch try await upgraded.get() {
        case .websocket(let channel): return channel
        case .refused: throw SproutError(.unavailable, "the server on port \(port) in the sandbox refused the WebSocket upgrade")
        }
    }

    /// A client frame (clients mask theirs).
    static func frame(_ opcode: WebSocketOpcode, _ data: ByteBuffer) -> WebSocketFrame {
        WebSocketFrame(fin: true, opcode: opcode, maskKey: .random(), data: data)
    }
}

/// A TCP connection into a sandbox whose socket closes with a reset
/// (`SO_LINGER` 0), its pipeline set up by `setup` on the event loop; what
/// `setup` returns. Both preview clients connect through it.
private func connectIntoSandbox<Output: Sendable>(
    host: String, port: UInt16, timeout: TimeAmount, _ setup: @escaping @Sendable (any Channel) throws -> Output
) async throws -> Output {
    do {
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(timeout)
            .connect(host: host, port: Int(port)) { channel in
                guard let options = channel as? SocketOptionProvider else {
                    return channel.eventLoop.makeFailedFuture(SproutError(.internal, "a TCP channel without socket options"))
                }
                return options.setSoLinger(linger(l_onoff: 1, l_linger: 0)).flatMapThrowing { try setup(channel) }
            }
    } catch {
        throw SproutError(.unavailable, "cannot connect to \(host):\(port): \(error)")
    }
}
