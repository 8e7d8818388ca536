import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem
import SproutBlocking

/// A file being read from the agent, chunk by chunk, with backpressure.
public final class FileDownload: AsyncSequence, Sendable {
    public typealias Element = [UInt8]
    public let info: FileInfo
    private let channel: FrameChannel
    private let queue = HandoffQueue<[UInt8]>(limit: 8)

    init(info: FileInfo, channel: FrameChannel) {
        self.info = info
        self.channel = channel
        startThread { [channel, queue] in
            do {
                while let frame = try channel.receive() {
                    switch frame.kind {
                    case .data:
                        guard queue.push(frame.payload) else { return }
                    case .end:
                        queue.finish()
                        return
                    case .message:
                        let event = try WireJSON.decode(Event.self, frame.payload)
                        if let error = event.error { throw error.sproutError }
                    default:
                        throw SproutError(.malformed, "unexpected \(frame.kind) frame in a download")
                    }
                }
                throw SproutError(.unavailable, "the agent closed the connection before the file was complete")
            } catch {
                queue.finish(throwing: error)
            }
        }
    }

    deinit { close() }

    public func close() {
        queue.cancel()
        channel.close()
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Keeps the stream open while it is iterated (its deinit closes it).
        let owner: FileDownload
        let queue: HandoffQueue<[UInt8]>
        public mutating func next() async throws -> [UInt8]? { try await queue.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(owner: self, queue: queue) }
}

/// A file being written to the agent. Nothing appears under the target name
/// unless `finish()` succeeds; `abort()` (or dropping it) discards the upload.
public final class FileUpload: @unchecked Sendable {
    private let channel: FrameChannel
    private var finished = false
    /// Sends from async code go through one thread of their own.
    private let writer = WorkerThread()

    init(channel: FrameChannel) { self.channel = channel }

    /// `send`, from async code, off the cooperative pool (in order).
    public func write(_ bytes: [UInt8]) async throws {
        try await writer.run { [self] in try send(bytes) }
    }

    deinit { abort() }

    /// Sends bytes (blocking until the socket takes them).
    public func send(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let end = Swift.min(offset + AgentProtocol.fileChunkSize, bytes.count)
            try channel.send(.data, UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            offset = end
        }
    }

    public func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send($0) }
    }

    /// Completes the upload; returns the number of bytes written.
    public func finish() async throws -> Int64 {
        finished = true
        writer.close()
        let channel = self.channel
        return try await onThread {
            defer { channel.close() }
            try channel.send(.end, [])
            let reply = try AgentClient.checked(try channel.receiveMessage(Reply.self))
            return reply.size ?? 0
        }
    }

    /// Drops the connection; the agent removes the partial file.
    public func abort() {
        finished = true
        writer.close()
        channel.close()
    }
}

extension AgentClient {
    /// Opens a file for streaming download.
    public func openRead(_ path: String) async throws -> FileDownload {
        try await onThread { [self] in
            let (channel, reply) = try connect(.read(PathRequest(path: path)))
            guard let info = reply.file else {
                channel.close()
                throw SproutError(.malformed, "read reply without file")
            }
            return FileDownload(info: info, channel: channel)
        }
    }

    /// Opens a file for streaming upload.
    public func openWrite(_ path: String, mode: UInt32? = nil) async throws -> FileUpload {
        try await openWrite(WriteRequest(path: path, mode: mode))
    }

    /// Opens a file for streaming upload as `request` says (owner, mode, extended attributes).
    public func openWrite(_ request: WriteRequest) async throws -> FileUpload {
        try await onThread { [self] in
            let (channel, _) = try connect(.write(request))
            return FileUpload(channel: channel)
        }
    }
}
