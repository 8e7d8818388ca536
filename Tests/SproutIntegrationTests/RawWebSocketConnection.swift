#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import SproutCore
import SproutSystem

/// A minimal blocking WebSocket client (RFC 6455, no extensions), for tests
/// that talk to the server's WebSocket routes frame by frame.
final class WebSocketConnection: @unchecked Sendable {
    enum Message: Sendable, Equatable {
        case text(String)
        case binary([UInt8])
    }

    private let http: HTTPConnection
    private var pending: [UInt8]
    private let writeLock = Lock()
    private let closedState = Locked(false)

    /// Connects and performs the opening handshake. Throws the server's
    /// error (status and body) if it refuses the upgrade.
    init(
        host: String, port: UInt16, target: String, headers: [(String, String)] = [], timeoutSeconds: Double = 10, resetOnClose: Bool = false,
        authority: String? = nil
    ) throws {
        http = try HTTPConnection(host: host, port: port, timeoutSeconds: timeoutSeconds, resetOnClose: resetOnClose)
        let key = Data(Identifiers.randomBytes(16)).base64EncodedString()
        var head = "GET \(target) HTTP/1.1\r\nHost: \(authority ?? "\(host):\(port)")\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        head += "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n"
        for (name, value) in headers {
            guard !(name + value).contains(where: { $0 == "\r" || $0 == "\n" }) else {
                throw SproutError(.invalidArgument, "invalid header \(name)")
            }
            head += "\(name): \(value)\r\n"
        }
        head += "\r\n"
        try Descriptor.writeAll(http.fd, Array(head.utf8))
        let response = try http.readResponseHead()
        guard response.status == 101 else {
            let body = (try? http.readBody(limit: 65536)) ?? []
            throw Self.errorFromResponse(status: response.status, body: body)
        }
        pending = http.takeBuffered()
    }

    static func errorFromResponse(status: Int, body: [UInt8]) -> SproutError {
        let text = String(decoding: body.prefix(300), as: UTF8.self).trimmed
        return SproutError(.unavailable, "WebSocket upgrade refused with HTTP \(status)" + (text.isEmpty ? "" : ": \(text)"))
    }

    deinit { http.close() }

    // MARK: Sending

    func send(_ message: Message) throws {
        switch message {
        case .text(let s): try sendFrame(opcode: 1, Array(s.utf8))
        case .binary(let b): try sendFrame(opcode: 2, b)
        }
    }

    /// Sends a close frame and shuts the connection down.
    func close(code: UInt16 = 1000) {
        let already = closedState.withLock { c -> Bool in
            defer { c = true }
            return c
        }
        guard !already else { return }
        try? sendFrame(opcode: 8, [UInt8(code >> 8), UInt8(code & 0xFF)])
        Socket.shutdownBoth(http.fd)
    }

    private func sendFrame(opcode: UInt8, _ payload: [UInt8]) throws {
        var frame: [UInt8] = [0x80 | opcode]
        let n = payload.count
        if n < 126 {
            frame.append(0x80 | UInt8(n))
        } else if n < 65536 {
            frame += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xFF)]
        } else {
            frame.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { frame.append(UInt8((UInt64(n) >> UInt64(shift)) & 0xFF)) }
        }
        let mask = Identifiers.randomBytes(4)
        frame += mask
        frame.reserveCapacity(frame.count + n)
        for i in 0..<n { frame.append(payload[i] ^ mask[i & 3]) }
        try writeLock.withLock { try Descriptor.writeAll(http.fd, frame) }
    }

    // MARK: Receiving

    /// The next message, or nil when the peer closed the connection.
    func receive() throws -> Message? {
        var assembled: [UInt8] = []
        var messageOpcode: UInt8 = 0
        while true {
            guard let header = try read(2) else { return nil }
            let fin = header[0] & 0x80 != 0
            let opcode = header[0] & 0x0F
            var length = UInt64(header[1] & 0x7F)
            if length == 126 {
                guard let ext = try read(2) else { return nil }
                length = UInt64(ext[0]) << 8 | UInt64(ext[1])
            } else if length == 127 {
                guard let ext = try read(8) else { return nil }
                length = ext.reduce(0) { $0 << 8 | UInt64($1) }
            }
            guard length <= 64 << 20 else { throw SproutError(.tooLarge, "WebSocket frame of \(length) bytes") }
            var maskKey: [UInt8]?
            if header[1] & 0x80 != 0 { maskKey = try read(4) }
            guard var payload = try read(Int(length)) else { return nil }
            if let maskKey { for i in 0..<payload.count { payload[i] ^= maskKey[i & 3] } }
            switch opcode {
            case 8:  // close
                close()
                return nil
            case 9:  // ping
                try sendFrame(opcode: 10, payload)
            case 10:  // pong
                continue
            case 0, 1, 2:
                if opcode != 0 { messageOpcode = opcode }
                assembled += payload
                if fin {
                    return messageOpcode == 1 ? .text(String(decoding: assembled, as: UTF8.self)) : .binary(assembled)
                }
            default:
                throw SproutError(.malformed, "unknown WebSocket opcode \(opcode)")
            }
        }
    }

    private func read(_ count: Int) throws -> [UInt8]? {
        while pending.count < count {
            var chunk = [UInt8](repeating: 0, count: Swift.max(65536, count - pending.count))
            let n: Int
            do {
                n = try chunk.withUnsafeMutableBytes { try Descriptor.read(http.fd, into: $0.baseAddress!, count: $0.count) }
            } catch {
                if closedState.current { return nil }
                throw error
            }
            if n == 0 { return nil }
            pending += chunk[0..<n]
        }
        let out = Array(pending[0..<count])
        pending.removeFirst(count)
        return out
    }
}
