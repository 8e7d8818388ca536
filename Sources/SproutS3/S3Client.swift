import AsyncHTTPClient
import Crypto
import Foundation
import Glibc
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SproutCore
import SproutStore
import SproutSystem

/// The S3 calls Sprout's store needs, signed with SigV4 over
/// async-http-client: put (in parts past `partSize`), get (whole, or to a
/// file checked against its SHA-256), head, delete, list, and the bucket's
/// creation. Keys are relative to the location's prefix. Every body is sent
/// with its SHA-256 signed, so the server checks what it stores. Transient
/// failures (a connection refused or reset, 500, 503) are retried a few
/// times; everything else is one `SproutError` naming the store and the key.
public final class S3Client: Sendable {
    public let location: S3Location
    let signer: SigV4
    let http: HTTPClient
    let clock: @Sendable () -> Date
    /// Files past this are sent in parts of this size.
    public let partSize: Int
    private let counter = Locked(0)

    public init(location: S3Location, credentials: S3Credentials, partSize: Int = 16 << 20, clock: @escaping @Sendable () -> Date = { Date() }) {
        self.location = location
        signer = SigV4(accessKey: credentials.accessKey, secretKey: credentials.secretKey, region: location.region)
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.timeout.connect = .seconds(10)
        configuration.decompression = .disabled
        // A refused connection fails the request at once (this client retries
        // it a few times), not after the pool's retries until the connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.partSize = max(5 << 20, partSize)
        self.clock = clock
    }

    public func shutdown() async {
        try? await http.shutdown()
    }

    /// Requests sent so far (each try of a retried one counts).
    public var requestCount: Int { counter.withLock { $0 } }

    // MARK: Objects

    public func put(_ key: String, bytes: [UInt8]) async throws {
        _ = try await send("PUT", key: key, body: bytes, expect: [200])
    }

    /// Uploads the file at `path` as `key`: one request up to `partSize`, else a multipart upload.
    public func put(_ key: String, file path: String) async throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system("open \(path)") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SproutError.system("stat \(path)") }
        let size = Int(st.st_size)
        if size <= partSize {
            try await put(key, bytes: try Self.read(fd, offset: 0, count: size, path: path))
            return
        }
        let started = try await send("POST", key: key, query: [("uploads", "")], body: [], expect: [200])
        guard let uploadID = XMLText.first("UploadId", in: started.text) else {
            throw SproutError(.malformed, "the store at \(location.endpoint.absoluteString) began an upload of \(key) without an UploadId")
        }
        do {
            var parts: [String] = []
            var offset = 0
            while offset < size {
                let count = min(partSize, size - offset)
                let bytes = try Self.read(fd, offset: offset, count: count, path: path)
                let reply = try await send("PUT", key: key, query: [("partNumber", "\(parts.count + 1)"), ("uploadId", uploadID)], body: bytes, expect: [200])
                guard let etag = reply.headers.first(name: "etag") else {
                    throw SproutError(.malformed, "the store at \(location.endpoint.absoluteString) took part \(parts.count + 1) of \(key) without an ETag")
                }
                parts.append(etag)
                offset += count
            }
            let list = parts.enumerated().map { "<Part><PartNumber>\($0.offset + 1)</PartNumber><ETag>\(XMLText.escape($0.element))</ETag></Part>" }
            let done = try await send("POST", key: key, query: [("uploadId", uploadID)],
                                      body: Array("<CompleteMultipartUpload>\(list.joined())</CompleteMultipartUpload>".utf8), expect: [200])
            // S3 can answer 200 and put the failure in the body.
            if let code = XMLText.first("Code", in: done.text) {
                throw SproutError(.unavailable, "the store at \(location.endpoint.absoluteString) did not complete the upload of \(key): \(code)")
            }
        } catch {
            _ = try? await send("DELETE", key: key, query: [("uploadId", uploadID)], body: [], expect: [204, 200, 404])
            throw error
        }
    }

    /// The object's bytes (only `range`'s, when given), or nil if there is none.
    public func get(_ key: String, range: Range<Int64>? = nil, limit: Int = 64 << 20) async throws -> [UInt8]? {
        let headers = range.map { [("range", "bytes=\($0.lowerBound)-\($0.upperBound - 1)")] } ?? []
        let reply = try await send("GET", key: key, headers: headers, body: [], expect: [200, 206, 404], limit: limit)
        if reply.status == 404 { return nil }
        if let range, reply.body.count != range.count {
            throw SproutError(.unavailable, "the store at \(location.endpoint.absoluteString) sent \(reply.body.count) of the \(range.count) bytes asked of \(key)")
        }
        return reply.body
    }

    /// Writes the object to `path` (created or truncated) and returns its
    /// size; with `sha256`, fails unless the bytes hash to it (hex).
    public func download(_ key: String, to path: String, sha256: String? = nil) async throws -> Int64 {
        try await retrying(key: key) {
            let response = try await self.execute("GET", key: key, query: [], headers: [], body: [], timeout: .minutes(60))
            guard response.status == .ok else {
                let body = try await response.body.collect(upTo: 64 << 10)
                throw self.failure(response.status.code, key: key, body: String(buffer: body))
            }
            let file = try HashingFile(creating: path)
            for try await buffer in response.body {
                try buffer.withUnsafeReadableBytes { try file.write($0) }
            }
            if let length = response.headers.first(name: "content-length").flatMap(Int64.init), length != file.size {
                throw SproutError(.unavailable, "the store at \(self.location.endpoint.absoluteString) sent \(file.size) of \(length) bytes of \(key)")
            }
            if let sha256, file.digest() != sha256 {
                throw SproutError(.malformed, "\(key) from the store at \(self.location.endpoint.absoluteString) does not match its SHA-256")
            }
            return file.size
        }
    }

    /// The object's size, or nil if there is none.
    public func head(_ key: String) async throws -> Int64? {
        let reply = try await send("HEAD", key: key, body: [], expect: [200, 404])
        guard reply.status == 200 else { return nil }
        return reply.headers.first(name: "content-length").flatMap(Int64.init) ?? 0
    }

    /// The object's size and when it was last written, or nil if there is none.
    public func info(_ key: String) async throws -> Listed? {
        let reply = try await send("HEAD", key: key, body: [], expect: [200, 404])
        guard reply.status == 200 else { return nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return Listed(key: key, size: reply.headers.first(name: "content-length").flatMap(Int64.init) ?? 0,
                      lastModified: reply.headers.first(name: "last-modified").flatMap { formatter.date(from: $0) })
    }

    /// Removes the object; removing one that is not there is not an error.
    public func delete(_ key: String) async throws {
        _ = try await send("DELETE", key: key, body: [], expect: [200, 204, 404])
    }

    /// Copies the object onto itself with its metadata replaced: S3's way
    /// to renew an object's `LastModified` without sending its bytes again.
    /// False if there is no such object.
    public func touch(_ key: String) async throws -> Bool {
        let source = "/" + location.bucket + "/" + percentEncode(location.prefix + key)
        let reply = try await send("PUT", key: key, headers: [("x-amz-copy-source", source), ("x-amz-metadata-directive", "REPLACE")],
                                   body: [], expect: [200, 404])
        if reply.status == 404 { return false }
        // S3 can answer a copy with 200 and put the failure in the body.
        if reply.text.contains("<Error>"), let code = XMLText.first("Code", in: reply.text) {
            if code == "NoSuchKey" { return false }
            throw SproutError(.unavailable, "the store at \(location.endpoint.absoluteString) did not renew \(key): \(code)")
        }
        return true
    }

    public struct Listed: Sendable, Equatable {
        public var key: String
        public var size: Int64
        /// When it was last written (the store's clock).
        public var lastModified: Date?

        public init(key: String, size: Int64, lastModified: Date? = nil) {
            (self.key, self.size, self.lastModified) = (key, size, lastModified)
        }
    }

    /// S3's `2009-10-12T17:50:30.000Z`.
    static func timestamp(_ text: String?) -> Date? {
        guard let text else { return nil }
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return withFraction.date(from: text) ?? ISO8601DateFormatter().date(from: text)
    }

    /// Every object whose key starts with `prefix`, in key order (ListObjectsV2, page by page).
    public func list(prefix: String = "") async throws -> [Listed] {
        var out: [Listed] = []
        var token: String?
        repeat {
            var query = [("list-type", "2"), ("prefix", location.prefix + prefix)]
            if let token { query.append(("continuation-token", token)) }
            let reply = try await send("GET", key: nil, query: query, body: [], expect: [200], limit: 16 << 20)
            let text = reply.text
            for entry in XMLText.all("Contents", in: text) {
                guard let key = XMLText.first("Key", in: entry) else { continue }
                out.append(Listed(key: String(key.dropFirst(location.prefix.count)), size: XMLText.first("Size", in: entry).flatMap(Int64.init) ?? 0,
                                  lastModified: Self.timestamp(XMLText.first("LastModified", in: entry))))
            }
            token = XMLText.first("IsTruncated", in: text) == "true" ? XMLText.first("NextContinuationToken", in: text) : nil
        } while token != nil
        return out
    }

    /// Whether the bucket is there and these credentials may use it: a
    /// store that cannot be reached, or refuses them, throws.
    public func checkBucket() async throws {
        let reply = try await send("HEAD", key: nil, body: [], expect: [200, 404])
        if reply.status == 404 {
            throw SproutError(.notFound, "the store at \(location.endpoint.absoluteString) has no bucket \(location.bucket)")
        }
    }

    /// Creates the bucket; one that exists and is ours already is fine.
    public func createBucket() async throws {
        let reply = try await send("PUT", key: nil, body: [], expect: [200, 409])
        if reply.status == 409, XMLText.first("Code", in: reply.text) != "BucketAlreadyOwnedByYou" {
            throw failure(409, key: nil, body: reply.text)
        }
    }

    // MARK: Requests

    struct Reply {
        var status: UInt
        var headers: HTTPHeaders
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    private func send(
        _ method: String, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [], body: [UInt8], expect: Set<UInt>,
        limit: Int = 1 << 20
    ) async throws -> Reply {
        try await retrying(key: key) {
            let response = try await self.execute(method, key: key, query: query, headers: headers, body: body, timeout: .minutes(10))
            let collected = method == "HEAD" ? [] : Array(buffer: try await response.body.collect(upTo: limit))
            guard expect.contains(response.status.code) else {
                throw self.failure(response.status.code, key: key, body: String(decoding: collected, as: UTF8.self))
            }
            return Reply(status: response.status.code, headers: response.headers, body: collected)
        }
    }

    /// Runs `body` again after a transient failure, at most four times in all.
    private func retrying<T>(key: String?, _ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await body()
            } catch let error as Transient where attempt < 4 {
                _ = error
                try await Task.sleep(for: .milliseconds(100 * attempt))
            } catch let error as Transient {
                throw error.error
            }
        }
    }

    /// A failure worth another try; `error` says what it was.
    struct Transient: Error {
        var error: SproutError
    }

    private func execute(
        _ method: String, key: String?, query: [(String, String)], headers extra: [(String, String)], body: [UInt8], timeout: TimeAmount
    ) async throws -> HTTPClientResponse {
        counter.withLock { $0 += 1 }
        let path = "/" + location.bucket + (key.map { "/" + percentEncode(location.prefix + $0) } ?? "")
        var components = URLComponents(url: location.endpoint, resolvingAgainstBaseURL: false)!
        components.percentEncodedPath = path
        components.percentEncodedQuery = query.isEmpty ? nil : SigV4.canonicalQuery(query)
        var request = HTTPClientRequest(url: components.string!)
        request.method = HTTPMethod(rawValue: method)
        let host = location.endpoint.port.map { "\(location.endpoint.host!):\($0)" } ?? location.endpoint.host!
        var headers = [("host", host)] + extra
        if method == "PUT" || method == "POST" { headers.append(("content-length", "\(body.count)")) }
        let signed = signer.sign(method: method, path: path, query: query, headers: headers, payloadHash: SigV4.payloadHash(body), date: clock())
        for (name, value) in headers + signed { request.headers.replaceOrAdd(name: name, value: value) }
        if !body.isEmpty || method == "PUT" || method == "POST" { request.body = .bytes(ByteBuffer(bytes: body)) }
        do {
            let response = try await http.execute(request, timeout: timeout)
            if [500, 502, 503, 504].contains(response.status.code) {
                let text = (try? await response.body.collect(upTo: 64 << 10)).map { String(buffer: $0) } ?? ""
                throw Transient(error: failure(response.status.code, key: key, body: text))
            }
            return response
        } catch let error as HTTPClientError where [.remoteConnectionClosed, .connectTimeout, .readTimeout].contains(error) {
            throw Transient(error: SproutError(.unavailable, "the store at \(location.endpoint.absoluteString) did not answer: \(error)"))
        } catch let error as Transient {
            throw error
        } catch let error as SproutError {
            throw error
        } catch {
            // Connection refused and reset come from NIO as its own errors.
            throw Transient(error: SproutError(.unavailable, "the store at \(location.endpoint.absoluteString) cannot be reached: \(error)"))
        }
    }

    func failure(_ status: UInt, key: String?, body: String) -> SproutError {
        let code = XMLText.first("Code", in: body) ?? "HTTP \(status)"
        let message = XMLText.first("Message", in: body).map { ": \($0)" } ?? ""
        let what = key.map { "\($0) in " } ?? ""
        let text = "the store refused a request for \(what)s3://\(location.bucket) at \(location.endpoint.absoluteString) (\(code)\(message))"
        switch status {
        case 401, 403: return SproutError(.unauthorized, text)
        case 404: return SproutError(.notFound, text)
        case 409: return SproutError(.conflict, text)
        case 500...599: return SproutError(.unavailable, text)
        default: return SproutError(.invalidArgument, text)
        }
    }

    static func read(_ fd: Int32, offset: Int, count: Int, path: String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw SproutError(.io, "\(path) ended or failed while being read for upload") }
            done += n
        }
        return bytes
    }
}

/// The few XML elements S3's replies carry, found by name (S3 does not nest
/// an element in one of the same name).
enum XMLText {
    /// The text of the first `<name>` element, unescaped.
    static func first(_ name: String, in text: String) -> String? {
        all(name, in: text).first.map(unescape)
    }

    /// The raw contents of every `<name>` element.
    static func all(_ name: String, in text: String) -> [String] {
        var out: [String] = []
        var rest = text[...]
        while let open = rest.range(of: "<\(name)>"), let close = rest[open.upperBound...].range(of: "</\(name)>") {
            out.append(String(rest[open.upperBound..<close.lowerBound]))
            rest = rest[close.upperBound...]
        }
        return out
    }

    static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        return s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&#34;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
