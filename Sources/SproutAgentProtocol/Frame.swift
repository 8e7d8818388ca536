import Glibc
import SproutCore
import SproutSystem

/// What a frame carries. The numbers are part of the wire format.
public enum FrameKind: UInt8, Sendable {
    /// A JSON document: a request envelope, a reply, an event or a control message.
    case message = 1
    /// Bytes a process wrote to its standard output (or a terminal's output).
    case stdout = 2
    /// Bytes a process wrote to its standard error.
    case stderr = 3
    /// Bytes for a process's standard input (or a terminal's input).
    case stdin = 4
    /// A chunk of file content.
    case data = 5
    /// End of a byte stream (stdin closed, file complete). Empty payload.
    case end = 6
}

/// One unit on the wire: `u32 big-endian payload length`, `u8 kind`, payload.
public struct Frame: Sendable {
    public var kind: FrameKind
    public var payload: [UInt8]

    public init(kind: FrameKind, payload: [UInt8]) {
        self.kind = kind
        self.payload = payload
    }

    public static let headerSize = 5
}

/// A bidirectional stream of frames over one file descriptor (a TCP socket,
/// or a pipe pair for the stdio transport).
///
/// Reads happen on one thread at a time; writes are serialised by a lock so
/// several threads (a process's stdout and stderr readers) can share it.
/// Neither ever touches a descriptor number after `close`, which may have
/// been reused by then for another connection (whose bytes a late read
/// would steal).
public final class FrameChannel: @unchecked Sendable {
    public let readFD: Int32
    public let writeFD: Int32
    /// Serialises writes and guards `isClosed`, so no thread ever writes to a
    /// descriptor number that was closed (and perhaps reused).
    private let writeLock = Lock()
    /// Held by `receive` for a whole frame; `close` waits for it (after the
    /// shutdown that wakes a blocked read) before the descriptor goes.
    private let readLock = Lock()
    /// Guards `isClosed`; never held across a blocking call.
    private let stateLock = Lock()
    private var isClosed = false
    private var buffer: UnsafeMutableRawBufferPointer
    private var start = 0
    private var end = 0

    public init(fd: Int32) {
        self.readFD = fd
        self.writeFD = fd
        self.buffer = .allocate(byteCount: 64 * 1024, alignment: 8)
    }

    /// A channel over two descriptors (e.g. stdin and stdout).
    public init(readFD: Int32, writeFD: Int32) {
        self.readFD = readFD
        self.writeFD = writeFD
        self.buffer = .allocate(byteCount: 64 * 1024, alignment: 8)
    }

    deinit {
        close()
        buffer.deallocate()
    }

    // MARK: Writing

    public func send(_ kind: FrameKind, _ payload: UnsafeRawBufferPointer) throws {
        guard payload.count <= AgentProtocol.maxFramePayload else {
            throw SproutError(.tooLarge, "frame of \(payload.count) bytes exceeds \(AgentProtocol.maxFramePayload)")
        }
        var header: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, kind.rawValue)
        let n = UInt32(payload.count)
        header.0 = UInt8(n >> 24)
        header.1 = UInt8((n >> 16) & 0xFF)
        header.2 = UInt8((n >> 8) & 0xFF)
        header.3 = UInt8(n & 0xFF)
        try writeLock.withLock {
            guard !stateLock.withLock({ isClosed }) else { throw SproutError(.unavailable, "connection closed") }
            try withUnsafeBytes(of: &header) { h in
                if payload.isEmpty {
                    try Descriptor.writeAll(writeFD, h)
                } else {
                    try Descriptor.writeAll(writeFD, h, payload)
                }
            }
        }
    }

    public func send(_ kind: FrameKind, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send(kind, $0) }
    }

    public func send<M: Encodable>(message: M) throws {
        try send(.message, try WireJSON.encode(message))
    }

    // MARK: Reading

    /// The next frame, or nil when the peer closed the stream cleanly between
    /// frames; after `close`, an error.
    public func receive() throws -> Frame? {
        try readLock.withLock {
            guard !stateLock.withLock({ isClosed }) else { throw SproutError(.unavailable, "connection closed") }
            return try receiveFrame()
        }
    }

    private func receiveFrame() throws -> Frame? {
        var header = [UInt8](repeating: 0, count: Frame.headerSize)
        let gotHeader = try header.withUnsafeMutableBytes { try readExactly($0, eofAllowed: true) }
        guard gotHeader else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard let kind = FrameKind(rawValue: header[4]) else {
            throw SproutError(.malformed, "unknown frame kind \(header[4])")
        }
        guard length <= AgentProtocol.maxFramePayload else {
            throw SproutError(.tooLarge, "frame of \(length) bytes exceeds the limit of \(AgentProtocol.maxFramePayload)")
        }
        var payload = [UInt8](repeating: 0, count: length)
        if length > 0 {
            _ = try payload.withUnsafeMutableBytes { try readExactly($0, eofAllowed: false) }
        }
        return Frame(kind: kind, payload: payload)
    }

    /// Fills `dst`; returns false only if the stream ended before its first byte
    /// and `eofAllowed`.
    private func readExactly(_ dst: UnsafeMutableRawBufferPointer, eofAllowed: Bool) throws -> Bool {
        var filled = 0
        while filled < dst.count {
            if start < end {
                let n = min(end - start, dst.count - filled)
                (dst.baseAddress! + filled).copyMemory(from: buffer.baseAddress! + start, byteCount: n)
                start += n
                filled += n
                continue
            }
            let remaining = dst.count - filled
            if remaining >= buffer.count {
                // Large payloads bypass the buffer.
                let n = try Descriptor.read(readFD, into: dst.baseAddress! + filled, count: remaining)
                if n == 0 { return try endOfStream(filled: filled, eofAllowed: eofAllowed) }
                filled += n
            } else {
                let n = try Descriptor.read(readFD, into: buffer.baseAddress!, count: buffer.count)
                if n == 0 { return try endOfStream(filled: filled, eofAllowed: eofAllowed) }
                start = 0
                end = n
            }
        }
        return true
    }

    private func endOfStream(filled: Int, eofAllowed: Bool) throws -> Bool {
        if filled == 0 && eofAllowed { return false }
        throw SproutError(.malformed, "connection closed in the middle of a frame")
    }

    /// Receives the next frame and decodes it as a JSON message of type `M`.
    public func receiveMessage<M: Decodable>(_ type: M.Type) throws -> M {
        guard let frame = try receive() else {
            throw SproutError(.unavailable, "connection closed by peer")
        }
        guard frame.kind == .message else {
            throw SproutError(.malformed, "expected a message frame, got \(frame.kind)")
        }
        return try WireJSON.decode(type, frame.payload)
    }

    // MARK: Closing

    /// Closes the descriptor(s). Safe to call more than once, from any thread:
    /// a write blocked on a slow peer is woken first, and no write can start after.
    public func close() {
        // Wake a writer blocked on a slow peer so it releases the write lock.
        let already = stateLock.withLock { () -> Bool in
            if !isClosed { Socket.shutdownBoth(writeFD) }
            return isClosed
        }
        guard !already else { return }
        // A socket's reader was woken by the shutdown; wait for it to leave
        // read(2). (A pipe's cannot be woken: the stdio transport has one
        // reader, which ends with the stream.)
        let socket = readFD == writeFD
        if socket { readLock.lock() }
        defer { if socket { readLock.unlock() } }
        writeLock.withLock {
            stateLock.withLock {
                guard !isClosed else { return }
                isClosed = true
                Descriptor.close(readFD)
                if writeFD != readFD { Descriptor.close(writeFD) }
            }
        }
    }

    /// Ends a socket's connection with a reset alone: no FIN first, as
    /// `close` sends to wake a blocked writer. A FIN leaves a moment in which
    /// the peer's own FIN can arrive and put this end in TIME_WAIT before the
    /// reset goes out. For a channel no other thread is using.
    public func abort() {
        guard readFD == writeFD else { return close() }
        stateLock.withLock {
            guard !isClosed else { return }
            isClosed = true
            Socket.setAbortiveClose(readFD)
            Descriptor.close(readFD)
        }
    }
}
