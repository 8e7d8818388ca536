#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Glibc
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutSystem

extension SproutAPIClient {
    func sandboxPath(_ id: String, _ rest: String) -> String { "/v1/sandboxes/\(percentEncode(id))/\(rest)" }

    /// Runs a process in a sandbox; `onEvent` sees every event as it arrives
    /// (on a background thread). Returns the exit status.
    public func exec(_ id: String, _ request: API.Exec, onEvent: @escaping @Sendable (API.ExecEvent) -> Void = { _ in }) async throws -> ProcessExit {
        let json = Array(try JSONEncoder().encode(request))
        return try await onThread { [self] in
            let (connection, head) = try send("POST", sandboxPath(id, "exec"), json: json)
            defer { connection.close() }
            try Self.check(head, connection)
            var pending: [UInt8] = []
            var exit: ProcessExit?
            var failure: ErrorBody?
            while let chunk = try connection.readBodyChunk() {
                pending += chunk
                while let newline = pending.firstIndex(of: 10) {
                    let line = Array(pending[..<newline])
                    pending.removeFirst(newline + 1)
                    let event = try JSONDecoder().decode(API.ExecEvent.self, from: Data(line))
                    if let status = event.exit { exit = status }
                    if let error = event.error { failure = error }
                    onEvent(event)
                }
            }
            guard let exit else {
                // The server ends a stream it could not finish with the reason.
                if let failure { throw SproutError(SproutError.Code(rawValue: failure.code), failure.message) }
                throw SproutError(.unavailable, "the exec stream ended without an exit status")
            }
            return exit
        }
    }

    /// Runs a process and collects its output.
    public func run(_ id: String, _ request: API.Exec) async throws -> ProcessResult {
        let collected = Locked(ProcessResult(stdout: [], stderr: [], exit: ProcessExit()))
        let exit = try await exec(id, request) { event in
            collected.withLock {
                if let b = event.stdoutBytes { $0.stdout += b }
                if let b = event.stderrBytes { $0.stderr += b }
            }
        }
        var result = collected.current
        result.exit = exit
        return result
    }

    public func processes(_ id: String) async throws -> [AgentProcess] {
        try await call("GET", sandboxPath(id, "processes"), as: [AgentProcess].self)
    }

    // MARK: Files

    /// Streams a local file into the sandbox.
    @discardableResult
    public func upload(_ id: String, localPath: String, to path: String, mode: UInt32? = nil) async throws -> Int64 {
        try await onThread { [self] in
            let fd = open(localPath, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SproutError.system(localPath) }
            defer { close(fd) }
            var st = Glibc.stat()
            fstat(fd, &st)
            var target = sandboxPath(id, "files") + "?path=\(percentEncode(path))"
            if let mode { target += "&mode=\(String(mode, radix: 8))" }
            let connection = try HTTPConnection(host: connectHost, port: port)
            defer { connection.close() }
            try connection.sendHead(method: "PUT", target: target, host: "\(host):\(port)",
                                    headers: headers([("Content-Type", "application/octet-stream")]), bodyLength: Int64(st.st_size))
            let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
            defer { chunk.deallocate() }
            var sent: Int64 = 0
            while sent < Int64(st.st_size) {
                let n = try Descriptor.read(fd, into: chunk.baseAddress!, count: chunk.count)
                if n == 0 { break }
                do {
                    try connection.sendBody(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
                } catch {
                    break  // the server refused early; its answer says why
                }
                sent += Int64(n)
            }
            let head = try connection.readResponseHead(requestMethod: "PUT")
            try Self.check(head, connection)
            let body = try connection.readBody(limit: 65536)
            struct Size: Decodable { var size: Int64 }
            return (try? JSONDecoder().decode(Size.self, from: Data(body)).size) ?? sent
        }
    }

    /// Writes bytes to a file in the sandbox.
    public func write(_ id: String, bytes: [UInt8], to path: String) async throws {
        try await onThread { [self] in
            let connection = try HTTPConnection(host: connectHost, port: port)
            defer { connection.close() }
            try connection.sendHead(method: "PUT", target: sandboxPath(id, "files") + "?path=\(percentEncode(path))",
                                    host: "\(host):\(port)", headers: headers(), bodyLength: Int64(bytes.count))
            try connection.sendBody(bytes)
            try Self.check(try connection.readResponseHead(requestMethod: "PUT"), connection)
        }
    }

    /// Streams a file out of the sandbox into `localPath` (or to `fd` if given).
    @discardableResult
    public func download(_ id: String, path: String, toDescriptor fd: Int32) async throws -> Int64 {
        try await onThread { [self] in
            let (connection, head) = try send("GET", sandboxPath(id, "files") + "?path=\(percentEncode(path))")
            defer { connection.close() }
            try Self.check(head, connection)
            var total: Int64 = 0
            while let chunk = try connection.readBodyChunk() {
                try Descriptor.writeAll(fd, chunk)
                total += Int64(chunk.count)
            }
            return total
        }
    }

    public func read(_ id: String, path: String, limit: Int = 64 << 20) async throws -> [UInt8] {
        try await onThread { [self] in
            let (connection, head) = try send("GET", sandboxPath(id, "files") + "?path=\(percentEncode(path))")
            defer { connection.close() }
            try Self.check(head, connection)
            return try connection.readBody(limit: limit)
        }
    }

    public func list(_ id: String, path: String, depth: Int = 1) async throws -> [FileInfo] {
        try await call("GET", sandboxPath(id, "files/list") + "?path=\(percentEncode(path))&depth=\(depth)", as: API.Entries.self).entries
    }

    public func stat(_ id: String, path: String) async throws -> FileInfo {
        try await call("GET", sandboxPath(id, "files/stat") + "?path=\(percentEncode(path))", as: FileInfo.self)
    }

    public func remove(_ id: String, path: String, recursive: Bool = false) async throws {
        try await callExpectingNoBody("DELETE", sandboxPath(id, "files") + "?path=\(percentEncode(path))&recursive=\(recursive)")
    }

    public func makeDirectory(_ id: String, path: String) async throws {
        _ = try await call("POST", sandboxPath(id, "files/mkdir") + "?path=\(percentEncode(path))", as: FileInfo.self)
    }

    // MARK: Terminal and previews

    /// Opens an interactive terminal (WebSocket) in the sandbox.
    public func terminal(_ id: String, cols: UInt16, rows: UInt16, command: String? = nil) async throws -> WebSocketConnection {
        var target = sandboxPath(id, "pty") + "?cols=\(cols)&rows=\(rows)"
        if let command { target += "&cmd=\(percentEncode(command))" }
        let path = target
        return try await onThread { [self] in
            try WebSocketConnection(host: connectHost, port: port, target: path, headers: headers())
        }
    }

    /// A plain HTTP request to a port preview; returns status and body.
    public func preview(_ id: String, port previewPort: Int, path: String, method: String = "GET") async throws -> (Int, [UInt8]) {
        try await onThread { [self] in
            let connection = try HTTPConnection(host: connectHost, port: port)
            defer { connection.close() }
            try connection.sendHead(method: method, target: sandboxPath(id, "ports/\(previewPort)\(path)"), host: "\(host):\(port)",
                                    headers: headers(), bodyLength: method == "GET" ? nil : 0)
            let head = try connection.readResponseHead(requestMethod: method)
            return (head.status, try connection.readBody())
        }
    }
}
