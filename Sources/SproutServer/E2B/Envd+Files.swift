import Foundation
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

    func download(_ request: Request, _ context: SproutContext) async throws -> Response {
        guard let raw = request.uri.queryParameters.get("path") else { throw SproutError(.invalidArgument, "missing path") }
        let path = try user.resolve(String(raw))
        let file = try await withAgent(context) { try await $0.openRead(path) }
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
        WriteInfo(path: path, name: String(path.split(separator: "/").last ?? ""), metadata: EnvdFilesystem.metadata(xattrs))
    }

    func upload(_ request: Request, _ context: SproutContext) async throws -> Response {
        let contentType = request.headers[.contentType] ?? ""
        let encoding = request.headers[.contentEncoding]?.lowercased() ?? "identity"
        guard ["identity", "gzip"].contains(encoding) else {
            throw SproutError(.unsupported, "Content-Encoding \(encoding.prefix(20)) is not supported on uploads (gzip is)")
        }
        let gunzip = encoding == "gzip" ? try Gunzip(limit: 64 << 30) : nil
        let xattrs = try Self.metadata(request)
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: Self.maxMultipartBytes) } catch {
                throw SproutError(.tooLarge, "multipart uploads are limited to \(Self.maxMultipartBytes >> 20) MiB; send application/octet-stream for larger files")
            }
            var raw = Array(body.readableBytesView)
            if let gunzip {
                raw = try gunzip.decode(raw)
                guard gunzip.ended else { throw SproutError(.invalidArgument, "the gzip upload ended early") }
            }
            let parts = try Multipart.parse(raw, contentType: contentType)
            let fallback: String? = request.uri.queryParameters.get("path").map { String($0) }
            var written: [WriteInfo] = []
            let files = parts.filter { $0.name == "file" }
            for part in files {
                // One file with `path=` goes there (an upload URL); otherwise each part's filename is its path.
                guard let name = (files.count == 1 ? fallback : nil) ?? part.filename ?? fallback, !name.isEmpty else { throw SproutError(.invalidArgument, "a file part has no filename (its path)") }
                let path = try user.resolve(name)
                try await withAgent(context) { agent in
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
        let upload = try await withAgent(context) { agent in
            try await makeParents(path, agent)
            return try await xattrStore.openWrite(writeRequest, agent: agent)
        }
        do {
            for try await buffer in request.body {
                let bytes = Array(buffer.readableBytesView)
                let decoded = try gunzip?.decode(bytes) ?? bytes
                if !decoded.isEmpty { try await upload.write(decoded) }
            }
            if let gunzip, !gunzip.ended { throw SproutError(.invalidArgument, "the gzip upload ended early") }
            _ = try await upload.finish()
        } catch {
            upload.abort()
            throw await services.lifecycle.explain(error, sandboxID)
        }
        try await withAgent(context) { try await xattrStore.finished(writeRequest, agent: $0) }
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
enum Multipart {
    struct Part { var name: String?; var filename: String?; var body: [UInt8] }

    static func parse(_ body: [UInt8], contentType: String) throws -> [Part] {
        guard let range = contentType.range(of: "boundary=") else { throw SproutError(.invalidArgument, "multipart body without a boundary") }
        var boundary = String(contentType[range.upperBound...])
        if let semicolon = boundary.firstIndex(of: ";") { boundary = String(boundary[..<semicolon]) }
        boundary = boundary.trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
        guard !boundary.isEmpty, boundary.count <= 200 else { throw SproutError(.invalidArgument, "bad multipart boundary") }
        let delimiter = Array(("--" + boundary).utf8)
        var parts: [Part] = []
        guard var position = find(delimiter, in: body, from: 0) else { throw SproutError(.invalidArgument, "multipart body has no parts") }
        while true {
            position += delimiter.count
            if body.count >= position + 2, body[position] == UInt8(ascii: "-"), body[position + 1] == UInt8(ascii: "-") { break }
            position += 2  // CRLF after the delimiter
            guard let headerEnd = find(Array("\r\n\r\n".utf8), in: body, from: position) else { throw SproutError(.invalidArgument, "a multipart part has no header end") }
            let headers = String(decoding: body[position..<headerEnd], as: UTF8.self)
            let start = headerEnd + 4
            guard let next = find(Array("\r\n".utf8) + delimiter, in: body, from: start) else { throw SproutError(.invalidArgument, "a multipart part is not terminated") }
            var part = Part(name: nil, filename: nil, body: Array(body[start..<next]))
            for line in headers.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
                part.name = parameter("name", in: String(line))
                part.filename = parameter("filename", in: String(line))
            }
            parts.append(part)
            position = next + 2
        }
        return parts
    }

    static func parameter(_ key: String, in line: String) -> String? {
        for piece in line.split(separator: ";").dropFirst() {
            let kv = piece.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0] == key { return kv[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        }
        return nil
    }

    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard needle.count <= haystack.count, from <= haystack.count - needle.count else { return nil }
        var i = from
        let first = needle[0]
        while i <= haystack.count - needle.count {
            if haystack[i] == first && Array(haystack[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }
}
