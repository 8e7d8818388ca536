import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAgentProtocol
import SproutAPI
import SproutAgentClient
import SproutCore

/// The agent's process and file operations, proxied under
/// `/v1/sandboxes/{id}/...` so a client needs only the API URL and key.
struct AgentRoutes {
    let services: SproutServices
    let maxUploadBytes: Int64

    func register(on group: RouterGroup<SproutContext>) {
        group.post("sandboxes/:id/exec", use: exec)
        group.get("sandboxes/:id/processes") { _, context in
            try JSONBody.response(try await withAgent(context) { try await $0.processes() }.map(API.Process.init))
        }
        group.get("sandboxes/:id/processes/:pid/output", use: output)
        group.post("sandboxes/:id/processes/:pid/signal") { request, context in
            let body = try await JSONBody.decode(API.Signal.self, from: request)
            let pid = try context.parameters.require("pid")
            return try JSONBody.response(API.Process(try await withAgent(context) { try await $0.signal(ProcessSelector(id: pid), body.signal) }))
        }
        group.get("sandboxes/:id/files", use: download)
        group.put("sandboxes/:id/files", use: upload)
        group.delete("sandboxes/:id/files") { request, context in
            let path = try Self.path(request)
            let recursive = request.uri.queryParameters.get("recursive") == "true"
            try await withAgent(context) { try await $0.remove(path, recursive: recursive) }
            return Response(status: .noContent)
        }
        group.get("sandboxes/:id/files/list") { request, context in
            let path = try Self.path(request)
            let depth = try Self.intParameter(request, "depth", default: 1, range: 1...64)
            let store = try xattrStore(context)
            return try JSONBody.response(API.Entries(entries: try await withAgent(context) { try await store.fill(try await $0.list(path, depth: depth)) }.map(API.FileEntry.init)))
        }
        group.get("sandboxes/:id/files/stat") { request, context in
            let path = try Self.path(request)
            let store = try xattrStore(context)
            return try JSONBody.response(API.FileEntry(try await withAgent(context) { try await store.fill(try await $0.stat(path)) }))
        }
        group.post("sandboxes/:id/files/xattrs") { request, context in
            let body = try await JSONBody.decode(API.Xattrs.self, from: request)
            try Self.validatePath(body.path)
            let store = try xattrStore(context)
            return try JSONBody.response(API.FileEntry(try await withAgent(context) {
                try await store.update(body.path, set: body.set ?? [:], remove: body.remove ?? [], agent: $0)
            }))
        }
        group.post("sandboxes/:id/files/mkdir") { request, context in
            let path = try Self.path(request)
            let owner = request.uri.queryParameters.get("owner").map { String($0) }
            let info = try await withAgent(context) { agent in
                try await agent.makeDirectory(path, owner: owner)
                return try await agent.stat(path)
            }
            return try JSONBody.response(API.FileEntry(info), status: .created)
        }
    }

    func xattrStore(_ context: SproutContext) throws -> SandboxXattrs {
        services.lifecycle.xattrs(try context.parameters.require("id"))
    }

    /// Runs `body` against the sandbox's agent (see `SandboxLifecycle.withAgent`).
    func withAgent<T: Sendable>(_ context: SproutContext, _ body: (AgentClient) async throws -> T) async throws -> T {
        try await services.lifecycle.withAgent(try context.parameters.require("id"), for: try context.caller(), body)
    }

    /// The `path` query parameter: absolute, no `..`, no NUL.
    static func path(_ request: Request) throws -> String {
        guard let path = request.uri.queryParameters.get("path"), !path.isEmpty else {
            throw SproutError(.invalidArgument, "the path query parameter is required")
        }
        // The decoder above repairs or passes through bytes that are not
        // UTF-8; a path must be UTF-8 as sent.
        guard let raw = rawQueryValue(request.uri.query ?? "", "path"), String(validating: raw, as: UTF8.self) != nil else {
            throw SproutError(.invalidArgument, "path is not valid UTF-8")
        }
        try validatePath(path)
        return path
    }

    /// The percent-decoded bytes of the first `name=` in a raw query string.
    static func rawQueryValue(_ query: String, _ name: String) -> [UInt8]? {
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0] == Substring(name) else { continue }
            var bytes: [UInt8] = []
            var input = Array(parts[1].utf8)[...]
            while let byte = input.popFirst() {
                if byte == UInt8(ascii: "%"), input.count >= 2,
                    let value = UInt8(String(decoding: input.prefix(2), as: UTF8.self), radix: 16)
                {
                    bytes.append(value)
                    input = input.dropFirst(2)
                } else {
                    bytes.append(byte == UInt8(ascii: "+") ? 0x20 : byte)
                }
            }
            return bytes
        }
        return nil
    }

    static func validatePath(_ path: String) throws {
        guard path.hasPrefix("/") else { throw SproutError(.invalidArgument, "path must be absolute: \(path)") }
        guard !path.contains("\0") else { throw SproutError(.invalidArgument, "path contains a NUL byte") }
        guard !path.split(separator: "/").contains("..") else {
            throw SproutError(.invalidArgument, "path must not contain '..': \(path)")
        }
        guard path.utf8.count <= 4096 else { throw SproutError(.invalidArgument, "path is longer than 4096 bytes") }
    }

    static func intParameter(_ request: Request, _ name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = request.uri.queryParameters.get(name) else { return value }
        guard let n = Int(text), range.contains(n) else {
            throw SproutError(.invalidArgument, "\(name) must be an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }

    // MARK: Exec

    /// Runs a process and streams its life as NDJSON: `started`, then
    /// `stdout`/`stderr` (base64) as produced, then `exit`.
    @Sendable func exec(_ request: Request, context: SproutContext) async throws -> Response {
        let body = try await JSONBody.decode(API.Exec.self, from: request)
        var stdin: [UInt8]?
        if let encoded = body.stdin {
            guard let data = Data(base64Encoded: encoded) else { throw SproutError(.invalidArgument, "stdin must be base64") }
            stdin = Array(data)
        }
        if let cwd = body.cwd { try Self.validatePath(cwd) }
        let id = try context.parameters.require("id")
        let sandboxes = services.lifecycle
        let sandbox = try await services.lifecycle.open(id, for: try context.caller())
        let env = sandbox.environment.merging(body.env ?? [:]) { _, request in request }
        let session = try await services.lifecycle.withAgent(sandbox) { agent in
            let session = try await agent.start(ProcessSpec(
                cmd: body.cmd, shell: body.shell, cwd: body.cwd ?? sandbox.workdir, env: env, tag: body.tag, stdin: stdin != nil,
                user: body.user ?? sandbox.user))
            if let stdin {
                do {
                    try await session.send(stdin)
                    try await session.sendEndOfInput()
                } catch {
                    // The process may end before it takes its input (`exit 9`),
                    // and the agent may close the stream first; the stream says
                    // how it ended, and an agent that died is reported there.
                }
            }
            return session
        }
        if body.detach == true {
            // Closing our end leaves the process running (the agent keeps it).
            defer { session.close() }
            var data = try JSONEncoder.sorted.encode(API.ExecEvent(started: API.Process(session.info)))
            data.append(10)
            return Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
        }
        return Self.stream(session, sandbox: id, sandboxes: sandboxes)
    }

    /// Reattaches to a running (or finished) process: the same NDJSON stream
    /// as exec, from now on. `{process}` is its id (`p3`) or its tag.
    @Sendable func output(_ request: Request, context: SproutContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let name = try context.parameters.require("pid")
        let isID = name.first == "p" && name.dropFirst().allSatisfy(\.isNumber) && name.count > 1
        let selector = isID ? ProcessSelector(id: name) : ProcessSelector(tag: name)
        let session = try await withAgent(context) { try await $0.attach(selector) }
        return Self.stream(session, sandbox: id, sandboxes: services.lifecycle)
    }

    /// A process's life as NDJSON: `started`, output as produced, then `exit`.
    static func stream(_ session: ProcessSession, sandbox id: String, sandboxes: SandboxLifecycle) -> Response {
        Response(status: .ok, headers: [.contentType: "application/x-ndjson"], body: ResponseBody { writer in
          try await sandboxes.activity.holding(id) {
            defer { session.close() }
            try await writer.write(Self.line(API.ExecEvent(started: API.Process(session.info))))
            do {
                for try await item in session { try await writer.write(Self.line(API.ExecEvent(item))) }
            } catch {
                // The status line is long sent: the stream ends with the reason instead of an exit.
                let reason = await sandboxes.explain(error, id)
                let body = (reason as? SproutError).map(API.ErrorDetail.init) ?? API.ErrorDetail(code: "internal", message: "\(reason)")
                try await writer.write(Self.line(API.ExecEvent(error: body)))
            }
            try await writer.finish(nil)
          }
        })
    }

    static func line(_ event: API.ExecEvent) -> ByteBuffer {
        var data = (try? JSONEncoder.sorted.encode(event)) ?? Data()
        data.append(10)
        return ByteBuffer(bytes: data)
    }

    // MARK: Files

    @Sendable func download(_ request: Request, context: SproutContext) async throws -> Response {
        let path = try Self.path(request)
        return Self.response(streaming: try await withAgent(context) { try await $0.openRead(path) })
    }

    /// A file read from the agent as a response body of its size.
    static func response(streaming file: FileDownload) -> Response {
        let size = Int(file.info.size)
        return Response(
            status: .ok, headers: [.contentType: "application/octet-stream", .contentLength: String(size)],
            body: ResponseBody(contentLength: size) { writer in
                defer { file.close() }
                for try await chunk in file { try await writer.write(ByteBuffer(bytes: chunk)) }
                try await writer.finish(nil)
            })
    }

    @Sendable func upload(_ request: Request, context: SproutContext) async throws -> Response {
        let path = try Self.path(request)
        var mode: UInt32?
        if let text = request.uri.queryParameters.get("mode") {
            guard let m = UInt32(text, radix: 8), m <= 0o7777 else { throw SproutError(.invalidArgument, "mode must be octal, e.g. 644") }
            mode = m
        }
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }), length > maxUploadBytes {
            throw SproutError(.tooLarge, "upload of \(length) bytes exceeds the limit of \(maxUploadBytes)")
        }
        let owner = request.uri.queryParameters.get("owner").map { String($0) }
        let upload = try await withAgent(context) { try await $0.openWrite(WriteRequest(path: path, mode: mode, owner: owner)) }
        do {
            let size = try await Self.stream(request.body, into: upload, limit: maxUploadBytes)
            return try JSONBody.response(["size": size], status: .created)
        } catch {
            throw await services.lifecycle.explain(error, try context.parameters.require("id"))
        }
    }

    /// A request body into a file the agent writes, chunk by chunk as it
    /// arrives, each through `decode` (gzip's, for E2B); `check` runs after
    /// the last chunk (the gzip stream ended). Anything that fails aborts the
    /// write, so no partial file is left. Returns the file's size.
    static func stream(_ body: RequestBody, into upload: FileUpload, limit: Int64,
                       decode: ([UInt8]) throws -> [UInt8] = { $0 }, check: () throws -> Void = {}) async throws -> Int64 {
        do {
            var total: Int64 = 0
            for try await buffer in body {
                let bytes = try decode(Array(buffer.readableBytesView))
                total += Int64(bytes.count)
                guard total <= limit else { throw SproutError(.tooLarge, "upload exceeds the limit of \(limit) bytes") }
                if !bytes.isEmpty { try await upload.write(bytes) }
            }
            try check()
            return try await upload.finish()
        } catch {
            upload.abort()
            throw error
        }
    }
}
