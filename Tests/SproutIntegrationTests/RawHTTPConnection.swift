import Glibc
import SproutCore
import SproutSystem

/// A minimal blocking HTTP/1.1 client connection (plain http only), for
/// tests that send what a well-behaved client would not (malformed requests,
/// raw headers) and for `WebSocketConnection`'s handshake. One request per
/// connection (`Connection: close`), streaming bodies both ways.
final class HTTPConnection: @unchecked Sendable {
    struct ResponseHead: Sendable {
        var status: Int
        var reason: String
        var headers: [(String, String)]

        func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    let fd: Int32
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    private var bodyMode: BodyMode = .untilClose
    private enum BodyMode { case length(Int64), chunked(remaining: Int64, done: Bool), untilClose, none }

    init(host: String, port: UInt16, timeoutSeconds: Double = 10, resetOnClose: Bool = false) throws {
        fd = try Socket.connectTCP(host: host, port: port, timeoutSeconds: timeoutSeconds, resetOnClose: resetOnClose)
    }

    deinit { close() }

    private var closed = false
    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    // MARK: Request

    /// Sends the request line and headers. With `bodyLength` nil and `chunked`
    /// true, the body follows as chunks (`sendChunk`, then `finishChunks`).
    func sendHead(method: String, target: String, host: String, headers: [(String, String)], bodyLength: Int64?, chunked: Bool = false) throws {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n"
        for (name, value) in headers {
            guard !name.contains(where: { $0 == "\r" || $0 == "\n" || $0 == ":" }),
                !value.contains(where: { $0 == "\r" || $0 == "\n" })
            else { throw SproutError(.invalidArgument, "invalid header \(name)") }
            head += "\(name): \(value)\r\n"
        }
        if let bodyLength {
            head += "Content-Length: \(bodyLength)\r\n"
        } else if chunked {
            head += "Transfer-Encoding: chunked\r\n"
        }
        head += "\r\n"
        try Descriptor.writeAll(fd, Array(head.utf8))
    }

    func sendBody(_ bytes: UnsafeRawBufferPointer) throws {
        try Descriptor.writeAll(fd, bytes)
    }

    func sendBody(_ bytes: [UInt8]) throws {
        try Descriptor.writeAll(fd, bytes)
    }

    func sendChunk(_ bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        try Descriptor.writeAll(fd, Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + [13, 10])
    }

    func finishChunks() throws {
        try Descriptor.writeAll(fd, Array("0\r\n\r\n".utf8))
    }

    // MARK: Response

    func readResponseHead(requestMethod: String = "GET") throws -> ResponseHead {
        guard let statusLine = try readLine() else {
            throw SproutError(.unavailable, "the server closed the connection without a response")
        }
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw SproutError(.malformed, "not an HTTP response: \(statusLine.prefix(80))")
        }
        var headers: [(String, String)] = []
        while let line = try readLine(), !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingSpaces))
        }
        let head = ResponseHead(status: status, reason: parts.count > 2 ? String(parts[2]) : "", headers: headers)
        if requestMethod == "HEAD" || status == 204 || status == 304 || (100..<200).contains(status) {
            bodyMode = .none
        } else if head.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            bodyMode = .chunked(remaining: 0, done: false)
        } else if let length = head.header("content-length").flatMap({ Int64($0) }) {
            bodyMode = .length(length)
        } else {
            bodyMode = .untilClose
        }
        return head
    }

    /// The next piece of the response body, or nil at its end.
    func readBodyChunk(max: Int = 1 << 20) throws -> [UInt8]? {
        switch bodyMode {
        case .none: return nil
        case .length(let remaining):
            guard remaining > 0 else { return nil }
            let bytes = try readSome(Swift.min(Int64(max), remaining))
            guard !bytes.isEmpty else { throw SproutError(.unavailable, "connection closed in the middle of the response body") }
            bodyMode = .length(remaining - Int64(bytes.count))
            return bytes
        case .untilClose:
            let bytes = try readSome(Int64(max))
            return bytes.isEmpty ? nil : bytes
        case .chunked(var remaining, let done):
            if done { return nil }
            if remaining == 0 {
                guard let sizeLine = try readLine() else { throw SproutError(.unavailable, "connection closed in a chunked body") }
                let sizeText = sizeLine.split(separator: ";").first.map(String.init)?.trimmingSpaces ?? ""
                guard let size = Int64(sizeText, radix: 16) else { throw SproutError(.malformed, "bad chunk size '\(sizeText)'") }
                if size == 0 {
                    while let line = try readLine(), !line.isEmpty {}  // trailers
                    bodyMode = .chunked(remaining: 0, done: true)
                    return nil
                }
                remaining = size
            }
            let bytes = try readSome(Swift.min(Int64(max), remaining))
            guard !bytes.isEmpty else { throw SproutError(.unavailable, "connection closed in a chunked body") }
            remaining -= Int64(bytes.count)
            if remaining == 0 { _ = try readLine() }  // CRLF after the chunk
            bodyMode = .chunked(remaining: remaining, done: false)
            return bytes
        }
    }

    /// Waits up to `milliseconds` for more of the body: true if some may be
    /// read now (or the stream ended or failed: the read will tell), false
    /// on a quiet wait. A proxy uses the quiet spells to see if its own
    /// client is still there.
    func waitForData(milliseconds: Int32) -> Bool {
        if bufferStart < buffer.count { return true }
        switch bodyMode {
        case .none, .chunked(_, true), .length(0): return true
        default: break
        }
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, milliseconds) != 0
    }

    /// The whole response body (up to `limit` bytes).
    func readBody(limit: Int = 64 << 20) throws -> [UInt8] {
        var out: [UInt8] = []
        while let chunk = try readBodyChunk() {
            out += chunk
            if out.count > limit { throw SproutError(.tooLarge, "response body larger than \(limit) bytes") }
        }
        return out
    }

    /// Reads one line (without CRLF) of the response; nil at end of stream.
    func readLine() throws -> String? {
        var line: [UInt8] = []
        while true {
            if bufferStart >= buffer.count {
                if try !fill() { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            }
            let byte = buffer[bufferStart]
            bufferStart += 1
            if byte == 10 {
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            line.append(byte)
            if line.count > 65536 { throw SproutError(.malformed, "header line too long") }
        }
    }

    /// Bytes already received but not yet consumed, then the raw socket (for upgrades).
    func takeBuffered() -> [UInt8] {
        defer {
            buffer = []
            bufferStart = 0
        }
        return Array(buffer[bufferStart...])
    }

    private func readSome(_ max: Int64) throws -> [UInt8] {
        if bufferStart >= buffer.count {
            if try !fill() { return [] }
        }
        let n = Swift.min(Int(max), buffer.count - bufferStart)
        defer { bufferStart += n }
        return Array(buffer[bufferStart..<(bufferStart + n)])
    }

    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        let n = try chunk.withUnsafeMutableBytes { try Descriptor.read(fd, into: $0.baseAddress!, count: $0.count) }
        buffer = Array(chunk[0..<n])
        bufferStart = 0
        return n > 0
    }
}

extension String {
    var trimmingSpaces: String {
        var s = Substring(self)
        while s.first == " " || s.first == "\t" { s.removeFirst() }
        while s.last == " " || s.last == "\t" || s.last == "\r" { s.removeLast() }
        return String(s)
    }
}
