import Foundation
import MultipartKit
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// envd's HTTP file routes: `GET /files?path=` (the bytes) and `POST /files`
/// (multipart, a `file` part per file whose filename is its path, or
/// `application/octet-stream` with `path=`); the answer lists what was written.
extension EnvdService {
    static let maxMultipartBytes = 256 << 20

    struct WriteInfo: Encodable { var path: String; var name: String; var type = "file"; var metadata: [String: String]? }

    static let metadataHeaderPrefix = "x-metadata-"

    func download(_ request: Request) async throws -> Response {
        guard let raw = request.uri.queryParameters.get("path") else { throw SproutError(.invalidArgument, "missing path") }
        let path = try user.resolve(String(raw))
        let file = try await withAgent { try await $0.openRead(path) }
        guard Self.acceptsGzip(request.headers[.acceptEncoding]) else { return AgentRoutes.response(streaming: file) }
        return Response(
            status: .ok, headers: [.contentType: "application/octet-stream", .contentEncoding: "gzip", .vary: "Accept-Encoding"],
            body: ResponseBody { writer in
                defer { file.close() }
                let gzip = try Gzip()
                for try await chunk in file {
                    let encoded = try gzip.encode(chunk)
                    if !encoded.isEmpty { try await writer.write(ByteBuffer(bytes: encoded)) }
                }
                try await writer.write(ByteBuffer(bytes: try gzip.encode([], finish: true)))
                try await writer.finish(nil)
            })
    }

    /// Whether `Accept-Encoding` asks for gzip (and does not refuse it with q=0).
    static func acceptsGzip(_ header: String?) -> Bool {
        for item in (header ?? "").lowercased().split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.first == "gzip" || parts.first == "x-gzip" else { continue }
            let q = parts.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) } ?? 1
            return q > 0
        }
        return false
    }

    /// `X-Metadata-<key>: value` headers as `user.e2b.<key>` attributes.
    /// Header names have no case, and clients and proxies change it, so keys
    /// are kept in lower case.
    static func metadata(_ request: Request) throws -> [String: String]? {
        var out: [String: String] = [:]
        for field in request.headers where field.name.canonicalName.hasPrefix(metadataHeaderPrefix) {
            let key = String(field.name.canonicalName.dropFirst(metadataHeaderPrefix.count))
            guard !key.isEmpty else { throw SproutError(.invalidArgument, "an X-Metadata- header needs a key") }
            out[EnvdFilesystem.metadataPrefix + key] = field.value
        }
        return out.isEmpty ? nil : out
    }

    func writeInfo(_ path: String, _ xattrs: [String: String]?) -> WriteInfo {
        let metadata = EnvdFilesystem.metadata(xattrs)
        return WriteInfo(path: path, name: String(path.split(separator: "/").last ?? ""), metadata: metadata.isEmpty ? nil : metadata)
    }

    func upload(_ request: Request) async throws -> Response {
        let contentType = request.headers[.contentType] ?? ""
        let encoding = request.headers[.contentEncoding]?.lowercased() ?? "identity"
        guard ["identity", "gzip"].contains(encoding) else {
            throw SproutError(.unsupported, "Content-Encoding \(encoding.prefix(20)) is not supported on uploads (gzip is)")
        }
        let gunzip = encoding == "gzip" ? try Gunzip(limit: services.config.maxUploadBytes) : nil
        let xattrs = try Self.metadata(request)
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: Self.maxMultipartBytes) } catch {
                throw SproutError(.tooLarge, "multipart uploads are limited to \(Self.maxMultipartBytes >> 20) MiB; send application/octet-stream for larger files")
            }
            var raw = Array(body.readableBytesView)
            if let gunzip {
                raw = try gunzip.decode(raw)
                guard try gunzip.finished() else { throw SproutError(.invalidArgument, "the gzip upload ended early") }
            }
            let parts = try Multipart.parse(raw, contentType: contentType)
            let fallback: String? = request.uri.queryParameters.get("path").map { String($0) }
            var written: [WriteInfo] = []
            let files = parts.filter { $0.name == "file" }
            for part in files {
                // One file with `path=` goes there (an upload URL); otherwise each part's filename is its path.
                guard let name = (files.count == 1 ? fallback : nil) ?? part.filename ?? fallback, !name.isEmpty else { throw SproutError(.invalidArgument, "a file part has no filename (its path)") }
                let path = try user.resolve(name)
                try await withAgent { agent in
                    try await makeParents(path, agent)
                    try await xattrStore.write(part.body, WriteRequest(path: path, mode: 0o644, owner: user.agentUser, xattrs: xattrs), agent: agent)
                }
                written.append(writeInfo(path, xattrs))
            }
            guard !written.isEmpty else { throw SproutError(.invalidArgument, "no part named 'file' in the upload") }
            return try JSONBody.response(written)
        }
        guard let raw = request.uri.queryParameters.get("path") else { throw SproutError(.invalidArgument, "missing path") }
        let path = try user.resolve(String(raw))
        let writeRequest = WriteRequest(path: path, mode: 0o644, owner: user.agentUser, xattrs: xattrs)
        let upload = try await withAgent { agent in
            try await makeParents(path, agent)
            return try await xattrStore.openWrite(writeRequest, agent: agent)
        }
        do {
            _ = try await AgentRoutes.stream(request.body, into: upload, limit: services.config.maxUploadBytes, decode: { try gunzip?.decode($0) ?? $0 }) {
                if let gunzip, try !gunzip.finished() { throw SproutError(.invalidArgument, "the gzip upload ended early") }
            }
        } catch {
            throw await services.lifecycle.explain(error, sandboxID)
        }
        try await withAgent { try await xattrStore.finished(writeRequest, agent: $0) }
        return try JSONBody.response([writeInfo(path, xattrs)])
    }

    /// Parents are made as envd makes them (0755).
    func makeParents(_ path: String, _ agent: AgentClient) async throws {
        let parent = "/" + path.split(separator: "/").dropLast().joined(separator: "/")
        if parent != "/", (try? await agent.stat(parent)) == nil { try await agent.makeDirectory(parent, owner: user.agentUser) }
    }
}

/// A small `multipart/form-data` reader (RFC 7578): parts with their name,
/// filename and bytes.
/// E2B's `multipart/form-data` uploads, parsed by multipart-kit's parser.
enum Multipart {
    struct Part { var name: String?; var filename: String?; var body: [UInt8] }

    static func parse(_ body: [UInt8], contentType: String) throws -> [Part] {
        guard let boundary = parameter("boundary", in: contentType), !boundary.isEmpty, boundary.count <= 200 else {
            throw SproutError(.invalidArgument, "multipart body without a boundary")
        }
        var parts: [Part] = []
        var current = Part(name: nil, filename: nil, body: [])
        var complete = false
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { name, value in
            guard name.lowercased() == "content-disposition" else { return }
            current.name = parameter("name", in: value)
            current.filename = parameter("filename", in: value)
        }
        parser.onBody = { current.body += $0.readableBytesView }
        parser.onPartComplete = {
            parts.append(current)
            current = Part(name: nil, filename: nil, body: [])
            complete = true
        }
        do { try parser.execute(body) } catch { throw SproutError(.invalidArgument, "the multipart body is malformed: \(error)") }
        guard complete else { throw SproutError(.invalidArgument, "the multipart body has no complete part") }
        return parts
    }

    /// A `key=value` parameter of a header value (`form-data; name="file"; filename="a.txt"`).
    static func parameter(_ key: String, in header: String) -> String? {
        for piece in header.split(separator: ";").dropFirst() {
            let kv = piece.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0].lowercased() == key { return kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\" ")) }
        }
        return nil
    }
}
