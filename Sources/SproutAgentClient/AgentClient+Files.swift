import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem
import SproutBlocking

extension AgentClient {
    public func stat(_ path: String) async throws -> FileInfo {
        guard let file = try await call(.stat(PathRequest(path: path))).file else {
            throw SproutError(.malformed, "stat reply without file")
        }
        return file
    }

    public func list(_ path: String, depth: Int = 1) async throws -> [FileInfo] {
        try await call(.list(ListRequest(path: path, depth: depth))).entries ?? []
    }

    /// Creates `path` and its missing parents, owned by `owner` (default root).
    public func makeDirectory(_ path: String, owner: String? = nil) async throws {
        _ = try await call(.mkdir(MakeDirRequest(path: path, owner: owner)))
    }

    /// Sets and removes `user.*` extended attributes; returns the file as it is after.
    public func setXattrs(_ path: String, set: [String: String] = [:], remove: [String] = []) async throws -> FileInfo {
        guard let file = try await call(.setXattrs(XattrRequest(path: path, set: set, remove: remove))).file else {
            throw SproutError(.malformed, "xattr reply without file")
        }
        return file
    }

    public func move(_ from: String, to: String) async throws {
        _ = try await call(.move(MoveRequest(from: from, to: to)))
    }

    public func remove(_ path: String, recursive: Bool = false) async throws {
        _ = try await call(.remove(RemoveRequest(path: path, recursive: recursive)))
    }

    /// Writes `bytes` to `path`, creating parent directories.
    @discardableResult
    public func write(_ bytes: [UInt8], to path: String, mode: UInt32? = nil) async throws -> Int64 {
        try await write(bytes, WriteRequest(path: path, mode: mode))
    }

    /// Writes `bytes` as `request` says (owner, mode, extended attributes).
    @discardableResult
    public func write(_ bytes: [UInt8], _ request: WriteRequest) async throws -> Int64 {
        try await upload(request) { channel in
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + AgentProtocol.fileChunkSize, bytes.count)
                try bytes[offset..<end].withUnsafeBytes { try channel.send(.data, $0) }
                offset = end
            }
        }
    }

    /// Streams a local file to `path` in chunks (owned by `owner`, a user
    /// of the sandbox, with the directories it makes; default root).
    @discardableResult
    public func upload(localPath: String, to path: String, mode: UInt32? = nil, owner: String? = nil) async throws -> Int64 {
        let fd = open(localPath, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system(localPath) }
        defer { close(fd) }
        return try await upload(WriteRequest(path: path, mode: mode, owner: owner)) { channel in
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: AgentProtocol.fileChunkSize, alignment: 8)
            defer { chunk.deallocate() }
            while true {
                let n = try Descriptor.read(fd, into: chunk.baseAddress!, count: chunk.count)
                if n == 0 { break }
                try channel.send(.data, UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
            }
        }
    }

    private func upload(_ request: WriteRequest, body: @escaping @Sendable (FrameChannel) throws -> Void) async throws -> Int64 {
        try await onThread { [self] in
            let (channel, _) = try connect(.write(request))
            defer { channel.close() }
            do {
                try body(channel)
                try channel.send(.end, [])
            } catch {
                // The agent may have answered with the reason (e.g. disk full).
                if let reply = try? channel.receiveMessage(Reply.self), let remote = reply.error {
                    throw remote.sproutError
                }
                throw error
            }
            let reply = try Self.checked(try channel.receiveMessage(Reply.self))
            return reply.size ?? 0
        }
    }

    /// Reads a whole file into memory; refuses files larger than `limit`.
    public func read(_ path: String, limit: Int = 64 << 20) async throws -> [UInt8] {
        try await onThread { [self] in
            var out: [UInt8] = []
            try download(path) { info in
                guard info.size <= Int64(limit) else {
                    throw SproutError(.tooLarge, "\(path) has \(info.size) bytes, more than the limit of \(limit)")
                }
                out.reserveCapacity(Int(info.size))
            } chunk: { out += $0 }
            return out
        }
    }

    /// Streams `path` into a local file, written to a temporary name and
    /// renamed into place once complete.
    @discardableResult
    public func download(_ path: String, to localPath: String) async throws -> Int64 {
        try await onThread { [self] in
            let temp = localPath + ".part-\(Identifiers.random(length: 6))"
            let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw SproutError.system(temp) }
            var done = false
            defer {
                close(fd)
                if !done { unlink(temp) }
            }
            var total: Int64 = 0
            try download(path) { _ in } chunk: { bytes in
                try Descriptor.writeAll(fd, bytes)
                total += Int64(bytes.count)
            }
            try sysCall("rename \(localPath)") { rename(temp, localPath) }
            done = true
            return total
        }
    }

    private func download(_ path: String, start: (FileInfo) throws -> Void, chunk: ([UInt8]) throws -> Void) throws {
        let (channel, reply) = try connect(.read(PathRequest(path: path)))
        defer { channel.close() }
        guard let info = reply.file else { throw SproutError(.malformed, "read reply without file") }
        try start(info)
        while let frame = try channel.receive() {
            switch frame.kind {
            case .data: try chunk(frame.payload)
            case .end: return
            case .message:
                let event = try WireJSON.decode(Event.self, frame.payload)
                if let error = event.error { throw error.sproutError }
            default: throw SproutError(.malformed, "unexpected \(frame.kind) frame in a download")
            }
        }
        throw SproutError(.unavailable, "connection closed before the download of \(path) was complete")
    }

    /// Watches a directory; events arrive until the session is closed.
    public func watch(_ path: String, recursive: Bool = false) async throws -> WatchSession {
        try await onThread { [self] in
            let (channel, _) = try connect(.watch(WatchRequest(path: path, recursive: recursive)))
            return WatchSession(channel: channel)
        }
    }
}

/// A stream of file system changes under a watched directory.
public final class WatchSession: AsyncSequence, Sendable {
    public typealias Element = WatchEvent
    private let channel: FrameChannel
    private let queue = HandoffQueue<WatchEvent>(limit: 1024)

    init(channel: FrameChannel) {
        self.channel = channel
        startThread { [channel, queue] in
            while true {
                do {
                    guard let frame = try channel.receive() else {
                        queue.finish()
                        return
                    }
                    guard frame.kind == .message else { continue }
                    let event = try WireJSON.decode(Event.self, frame.payload)
                    if let error = event.error { throw error.sproutError }
                    if let change = event.watch, !queue.push(change) { return }
                } catch {
                    queue.finish(throwing: error)
                    return
                }
            }
        }
    }

    deinit { close() }

    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Keeps the stream open while it is iterated (its deinit closes it).
        let owner: WatchSession
        let queue: HandoffQueue<WatchEvent>
        public mutating func next() async throws -> WatchEvent? { try await queue.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(owner: self, queue: queue) }

    public func close() {
        queue.cancel()
        channel.close()
    }
}
