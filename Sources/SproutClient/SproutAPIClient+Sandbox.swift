#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SproutAPI
import SproutCore
import SproutSystem

extension SproutAPIClient {
    func sandboxPath(_ id: String, _ rest: String) -> String { "/v1/sandboxes/\(percentEncode(id))/\(rest)" }

    /// Runs a process in a sandbox; `onEvent` sees every event as it arrives.
    /// Returns the exit status.
    public func exec(_ id: String, _ request: API.Exec, onEvent: @escaping @Sendable (API.ExecEvent) -> Void = { _ in }) async throws -> API.Exit {
        let response = try await send(.POST, sandboxPath(id, "exec"), body: try Self.json(request), contentType: "application/json")
        return try await processEvents(response, onEvent: onEvent)
    }

    /// Starts a process and returns as soon as it runs (`exec` with `detach`).
    public func start(_ id: String, _ request: API.Exec) async throws -> API.Process {
        var request = request
        request.detach = true
        let response = try await send(.POST, sandboxPath(id, "exec"), body: try Self.json(request), contentType: "application/json")
        var bytes: [UInt8] = []
        for try await buffer in response.body { bytes += buffer.readableBytesView }
        guard let started = try JSONDecoder().decode(API.ExecEvent.self, from: Data(bytes)).started else {
            throw SproutError(.malformed, "the server did not say the process started")
        }
        return started
    }

    /// Follows a process started earlier (by id `p3` or tag) from now until it ends.
    public func attach(_ id: String, process: String, onEvent: @escaping @Sendable (API.ExecEvent) -> Void = { _ in }) async throws -> API.Exit {
        let response = try await send(.GET, sandboxPath(id, "processes/\(percentEncode(process))/output"))
        return try await processEvents(response, onEvent: onEvent)
    }

    private func processEvents(_ response: HTTPClientResponse, onEvent: @escaping @Sendable (API.ExecEvent) -> Void) async throws -> API.Exit {
        var pending: [UInt8] = []
        var exit: API.Exit?
        var failure: API.ErrorDetail?
        do {
            for try await buffer in response.body {
                pending += buffer.readableBytesView
                var start = 0
                while let newline = pending[start...].firstIndex(of: 10) {
                    let event = try JSONDecoder().decode(API.ExecEvent.self, from: Data(pending[start..<newline]))
                    start = newline + 1
                    if let status = event.exit { exit = status }
                    if let error = event.error { failure = error }
                    onEvent(event)
                }
                pending.removeFirst(start)
            }
        } catch let error as DecodingError {
            throw SproutError(.malformed, "unexpected exec event from the server: \(error)")
        } catch where exit == nil {
            throw SproutError(.unavailable, "the exec stream was cut short: \(Self.describe(error))")
        }
        guard let exit else {
            // The server ends a stream it could not finish with the reason.
            if let failure { throw failure.sproutError }
            throw SproutError(.unavailable, "the exec stream ended without an exit status")
        }
        return exit
    }

    /// Runs a process and collects its output.
    public func run(_ id: String, _ request: API.Exec) async throws -> API.Output {
        let collected = OutputCollector()
        let exit = try await exec(id, request) { event in collected.add(event) }
        var result = collected.result
        result.exit = exit
        return result
    }

    public func processes(_ id: String) async throws -> [API.Process] {
        try await call(.GET, sandboxPath(id, "processes"), as: [API.Process].self)
    }

    // MARK: Files

    /// Streams a local file into the sandbox; returns the size written.
    @discardableResult
    public func upload(_ id: String, localPath: String, to path: String, mode: UInt32? = nil, owner: String? = nil) async throws -> Int64 {
        let file = try await BlockingIO.run { try LocalFile(reading: localPath) }
        defer { file.close() }
        var target = sandboxPath(id, "files") + "?path=\(percentEncode(path))"
        if let mode { target += "&mode=\(String(mode, radix: 8))" }
        if let owner { target += "&owner=\(percentEncode(owner))" }
        let response = try await send(.PUT, target, body: .stream(file.chunks(), length: .known(file.size)),
                                      contentType: "application/octet-stream")
        let body = try await Self.collect(response, limit: 65536)
        struct Size: Decodable { var size: Int64 }
        return (try? JSONDecoder().decode(Size.self, from: Data(body)).size) ?? file.size
    }

    /// Writes bytes to a file in the sandbox.
    public func write(_ id: String, bytes: [UInt8], to path: String) async throws {
        let response = try await send(.PUT, sandboxPath(id, "files") + "?path=\(percentEncode(path))",
                                      body: .bytes(ByteBuffer(bytes: bytes)), contentType: "application/octet-stream")
        _ = try await Self.collect(response, limit: 65536)
    }

    /// Streams a file out of the sandbox to the descriptor `fd` (not closed).
    @discardableResult
    public func download(_ id: String, path: String, toDescriptor fd: Int32) async throws -> Int64 {
        let response = try await send(.GET, sandboxPath(id, "files") + "?path=\(percentEncode(path))")
        var total: Int64 = 0
        do {
            for try await buffer in response.body {
                let bytes = Array(buffer.readableBytesView)
                try await BlockingIO.run { try Descriptor.writeAll(fd, bytes) }
                total += Int64(bytes.count)
            }
        } catch let error as SproutError {
            throw error
        } catch {
            throw SproutError(.unavailable, "the download was cut short: \(Self.describe(error))")
        }
        return total
    }

    public func read(_ id: String, path: String, limit: Int = 64 << 20) async throws -> [UInt8] {
        try await Self.collect(try await send(.GET, sandboxPath(id, "files") + "?path=\(percentEncode(path))"), limit: limit)
    }

    public func list(_ id: String, path: String, depth: Int = 1) async throws -> [API.FileEntry] {
        try await call(.GET, sandboxPath(id, "files/list") + "?path=\(percentEncode(path))&depth=\(depth)", as: API.Entries.self).entries
    }

    public func stat(_ id: String, path: String) async throws -> API.FileEntry {
        try await call(.GET, sandboxPath(id, "files/stat") + "?path=\(percentEncode(path))", as: API.FileEntry.self)
    }

    public func remove(_ id: String, path: String, recursive: Bool = false) async throws {
        try await callExpectingNoBody(.DELETE, sandboxPath(id, "files") + "?path=\(percentEncode(path))&recursive=\(recursive)")
    }

    public func makeDirectory(_ id: String, path: String, owner: String? = nil) async throws {
        let query = "?path=\(percentEncode(path))" + (owner.map { "&owner=\(percentEncode($0))" } ?? "")
        _ = try await call(.POST, sandboxPath(id, "files/mkdir") + query, as: API.FileEntry.self)
    }

    /// Sets and removes `user.*` extended attributes; returns the file as it is after.
    public func setXattrs(_ id: String, path: String, set: [String: String] = [:], remove: [String] = []) async throws -> API.FileEntry {
        try await call(.POST, sandboxPath(id, "files/xattrs"), body: API.Xattrs(path: path, set: set, remove: remove), as: API.FileEntry.self)
    }

    // MARK: Previews

    /// A plain HTTP request to a port preview; returns status and body, whatever the status.
    public func preview(_ id: String, port previewPort: Int, path: String, method: String = "GET") async throws -> (Int, [UInt8]) {
        let response = try await send(HTTPMethod(rawValue: method), sandboxPath(id, "ports/\(previewPort)\(path)"), checked: false)
        return (Int(response.status.code), try await Self.collect(response, limit: 64 << 20))
    }
}

/// Collects an exec's output from the callbacks of `exec`.
private final class OutputCollector: @unchecked Sendable {
    private let lock = NIOLock()
    private var value = API.Output(stdout: [], stderr: [], exit: API.Exit())
    func add(_ event: API.ExecEvent) {
        lock.withLock {
            if let b = event.stdoutBytes { value.stdout += b }
            if let b = event.stderrBytes { value.stderr += b }
        }
    }
    var result: API.Output { lock.withLock { value } }
}

/// Blocking file I/O goes to NIO's thread pool, never to Swift's cooperative pool.
public enum BlockingIO {
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}

/// A local file opened for an upload, read in chunks on the thread pool.
final class LocalFile: Sendable {
    let fd: Int32
    let size: Int64

    init(reading path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError(.notFound, "cannot open \(path): \(String(cString: strerror(errno)))") }
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            Glibc.close(fd)
            throw SproutError(.invalidArgument, "\(path) is not a regular file")
        }
        self.fd = fd
        self.size = Int64(st.st_size)
    }

    func close() { Glibc.close(fd) }

    /// The file's bytes, 1 MiB at a time, read only as fast as they are sent.
    func chunks() -> AsyncThrowingStream<ByteBuffer, any Error> {
        let fd = self.fd
        return AsyncThrowingStream(unfolding: {
            try await BlockingIO.run { () throws -> ByteBuffer? in
                var buffer = ByteBuffer()
                let n = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1 << 20) { raw in
                    try Descriptor.read(fd, into: raw.baseAddress!, count: raw.count)
                }
                return n == 0 ? nil : buffer
            }
        })
    }
}
