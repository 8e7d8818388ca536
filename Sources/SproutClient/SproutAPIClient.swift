#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOSSL
import SproutAPI
import SproutCore

/// A typed client for the Sprout REST API (used by the CLI and tests), on
/// async-http-client: pooled keep-alive connections, timeouts, and HTTPS
/// with the system's trust store.
public struct SproutAPIClient: Sendable {
    /// `http` or `https`.
    public let scheme: String
    public let host: String
    public let port: Int
    public let apiKey: String?
    let http: HTTPClient
    /// How an HTTPS server is trusted, when not by the system's trust store.
    let tlsConfiguration: TLSConfiguration?

    /// `url` is `http[s]://HOST[:PORT]`; `tls` says how an HTTPS server is
    /// trusted (default: the system's trust store).
    public init(url: String, apiKey: String?, tls: ClientTLS = ClientTLS(), http: HTTPClient? = nil) throws {
        guard let scheme = ["http", "https"].first(where: { url.hasPrefix($0 + "://") }) else {
            throw SproutError(.invalidArgument, "the API URL must start with http:// or https:// (got \(url))")
        }
        self.scheme = scheme
        var rest = url.dropFirst(scheme.count + 3)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = UInt16(rest[rest.index(after: colon)...]), p > 0 else { throw SproutError(.invalidArgument, "bad port in \(url)") }
            host = String(rest[..<colon])
            port = Int(p)
        } else {
            host = String(rest)
            port = scheme == "https" ? 443 : 80
        }
        guard !host.isEmpty else { throw SproutError(.invalidArgument, "no host in \(url)") }
        self.apiKey = apiKey
        if scheme == "https" && !tls.isDefault {
            let configuration = try tls.configuration(host: host, port: port)
            tlsConfiguration = configuration
            self.http = http ?? ClientTLS.httpClient(for: configuration, key: "\(tls.caFile ?? "")|\(tls.fingerprint ?? "")|\(host):\(port)")
        } else {
            tlsConfiguration = nil
            self.http = http ?? SproutAPIClient.sharedHTTPClient
        }
    }

    /// The process's one HTTP client. Unlike `HTTPClient.shared` it has no
    /// read timeout (an exec or a followed build log may be silent for
    /// minutes) and follows no redirects; it lives as long as the process.
    public static let sharedHTTPClient = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: settings(tls: nil))

    static func settings(tls: TLSConfiguration?) -> HTTPClient.Configuration {
        HTTPClient.Configuration(
            tlsConfiguration: tls,
            redirectConfiguration: .disallow,
            timeout: .init(connect: .seconds(10), read: nil),
            connectionPool: .init(idleTimeout: .seconds(60)),
            decompression: .disabled)
    }

    /// `scheme://host:port`.
    public var baseURL: String { "\(scheme)://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)" }

    /// How long a request may take to get its response head.
    static let headTimeout: TimeAmount = .hours(2)

    /// Sends a request; a checked response that is not 2xx throws the server's error.
    func send(_ method: HTTPMethod, _ target: String, body: HTTPClientRequest.Body? = nil,
              contentType: String? = nil, checked: Bool = true) async throws -> HTTPClientResponse {
        var request = HTTPClientRequest(url: baseURL + target)
        request.method = method
        if let apiKey { request.headers.add(name: "X-API-Key", value: apiKey) }
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        if let body { request.body = body }
        let response: HTTPClientResponse
        do {
            response = try await http.execute(request, timeout: Self.headTimeout)
        } catch let error as SproutError {
            throw error
        } catch {
            throw await explain(error)
        }
        if checked { try await Self.check(response) }
        return response
    }

    /// Throws the server's error for a non-2xx response.
    static func check(_ response: HTTPClientResponse) async throws {
        guard !(200..<300).contains(response.status.code) else { return }
        let body = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
        if let envelope = try? JSONDecoder().decode(API.ErrorEnvelope.self, from: Data(body.readableBytesView)) {
            throw envelope.error.sproutError
        }
        throw SproutError(.internal, "HTTP \(response.status.code) \(response.status.reasonPhrase)")
    }

    /// A failed request as the user needs to hear it: a certificate this
    /// client does not trust is named by its fingerprint, with the two ways on.
    func explain(_ error: any Error) async -> SproutError {
        let text = Self.describe(error)
        if scheme == "https", error is NIOSSLError || text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("handshakeFailed") {
            let seen = try? await TLSProbe.peerCertificate(host: host, port: port).get()
            let fingerprint = seen.flatMap { try? ClientTLS.fingerprint($0) }
            return SproutError(.unavailable,
                "cannot verify the TLS certificate of \(baseURL)" + (fingerprint.map { " (SHA-256 fingerprint \($0))" } ?? "")
                + ": give the CA that signed it with --ca-file FILE, or pin it with --fingerprint" + (fingerprint.map { " \($0)" } ?? "")
                + " once you have checked it with the server's owner (\(text))")
        }
        return SproutError(.unavailable, "cannot reach the Sprout server at \(baseURL): \(text)")
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? HTTPClientError { return error.description }
        return String(describing: error)
    }

    static func json(_ value: some Encodable) throws -> HTTPClientRequest.Body {
        .bytes(ByteBuffer(bytes: try JSONEncoder().encode(value)))
    }

    /// A whole response body, up to `limit` bytes.
    static func collect(_ response: HTTPClientResponse, limit: Int) async throws -> [UInt8] {
        do {
            return Array(try await response.body.collect(upTo: limit).readableBytesView)
        } catch let error as NIOTooManyBytesError {
            throw SproutError(.tooLarge, "the response is larger than \(limit) bytes (\(error))")
        } catch {
            throw SproutError(.unavailable, "the response was cut short: \(describe(error))")
        }
    }

    /// One JSON request, one JSON response.
    func call<Response: Decodable & Sendable>(_ method: HTTPMethod, _ target: String, body: (some Encodable & Sendable)? = nil as String?,
                                              as type: Response.Type) async throws -> Response {
        let response = try await send(method, target, body: try body.map(Self.json), contentType: body == nil ? nil : "application/json")
        let bytes = try await Self.collect(response, limit: 64 << 20)
        do {
            return try JSONDecoder().decode(Response.self, from: Data(bytes))
        } catch {
            throw SproutError(.malformed, "unexpected response from the server: \(error)")
        }
    }

    /// A request whose response has no body worth decoding.
    func callExpectingNoBody(_ method: HTTPMethod, _ target: String) async throws {
        let response = try await send(method, target)
        _ = try await Self.collect(response, limit: 1 << 20)
    }

    // MARK: Server

    public func health() async throws -> API.Health {
        try await call(.GET, "/health", as: API.Health.self)
    }

    public func metrics() async throws -> String {
        String(decoding: try await Self.collect(try await send(.GET, "/metrics"), limit: 64 << 20), as: UTF8.self)
    }

    // MARK: Sandboxes

    public func createSandbox(_ request: API.CreateSandbox) async throws -> API.Sandbox {
        try await call(.POST, "/v1/sandboxes", body: request, as: API.Sandbox.self)
    }

    public func sandboxes(includeEnded: Bool = false) async throws -> [API.Sandbox] {
        try await call(.GET, "/v1/sandboxes" + (includeEnded ? "?all=true" : ""), as: [API.Sandbox].self)
    }

    public func sandbox(_ id: String) async throws -> API.Sandbox {
        try await call(.GET, "/v1/sandboxes/\(percentEncode(id))", as: API.Sandbox.self)
    }

    /// What happened to a sandbox: its state changes and why, out-of-memory kills.
    public func events(_ id: String) async throws -> [API.SandboxEvent] {
        try await call(.GET, "/v1/sandboxes/\(percentEncode(id))/events", as: [API.SandboxEvent].self)
    }

    @discardableResult
    public func killSandbox(_ id: String) async throws -> API.Sandbox {
        try await call(.DELETE, "/v1/sandboxes/\(percentEncode(id))", as: API.Sandbox.self)
    }

    @discardableResult
    public func setTimeout(_ id: String, seconds: Int) async throws -> API.Sandbox {
        try await call(.POST, "/v1/sandboxes/\(percentEncode(id))/timeout", body: API.SetTimeout(timeoutSeconds: seconds), as: API.Sandbox.self)
    }

    /// The sandbox's resource samples with `start <= timestamp <= end` (seconds since the epoch).
    public func metrics(_ id: String, start: Double? = nil, end: Double? = nil) async throws -> [API.SandboxMetric] {
        var query: [String] = []
        if let start { query.append("start=\(start)") }
        if let end { query.append("end=\(end)") }
        let target = "/v1/sandboxes/\(percentEncode(id))/metrics" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        return try await call(.GET, target, as: [API.SandboxMetric].self)
    }

    /// Replaces a running sandbox's outbound policy.
    public func setNetwork(_ id: String, _ network: API.SetNetwork) async throws -> API.Sandbox {
        try await call(.PUT, "/v1/sandboxes/\(percentEncode(id))/network", body: network, as: API.Sandbox.self)
    }

    /// Checkpoints a running sandbox's memory and stops it; `resume` brings every process back.
    @discardableResult
    public func pause(_ id: String, autoResume: Bool = false, memory: Bool = true) async throws -> API.Sandbox {
        try await call(.POST, "/v1/sandboxes/\(percentEncode(id))/pause", body: API.Pause(autoResume: autoResume, memory: memory ? nil : false),
                       as: API.Sandbox.self)
    }

    @discardableResult
    /// `node` (a fleet's API server, admin): resume on that node, moving the sandbox there.
    public func resume(_ id: String, node: String? = nil) async throws -> API.Sandbox {
        try await call(.POST, "/v1/sandboxes/\(percentEncode(id))/resume" + (node.map { "?node=\(percentEncode($0))" } ?? ""), as: API.Sandbox.self)
    }

    /// Snapshots a running sandbox once and starts `count` sandboxes from it; the original keeps running.
    public func fork(_ id: String, count: Int) async throws -> [API.Sandbox] {
        try await call(.POST, "/v1/sandboxes/\(percentEncode(id))/fork", body: API.Fork(count: count), as: API.ForkResult.self).sandboxes
    }

    /// Freezes a running sandbox's changes into a new env.
    public func snapshot(_ id: String, name: String? = nil) async throws -> API.Env {
        try await call(.POST, "/v1/sandboxes/\(percentEncode(id))/snapshot", body: API.Snapshot(name: name), as: API.Env.self)
    }

    public func envs() async throws -> [API.Env] {
        try await call(.GET, "/v1/envs", as: [API.Env].self)
    }

    public func env(_ id: String) async throws -> API.Env {
        try await call(.GET, "/v1/envs/\(percentEncode(id))", as: API.Env.self)
    }

    /// Points (or stops pointing) the env's name at it.
    @discardableResult
    public func setPublished(_ id: String, _ published: Bool) async throws -> API.Env {
        try await call(.POST, "/v1/envs/\(percentEncode(id))/" + (published ? "publish" : "unpublish"), as: API.Env.self)
    }

    public func envTree(_ id: String) async throws -> API.EnvTree {
        try await call(.GET, "/v1/envs/\(percentEncode(id))/tree", as: API.EnvTree.self)
    }

    /// Deletes an env (with `force`: its descendants too) and collects its layers.
    @discardableResult
    public func deleteEnv(_ id: String, force: Bool = false) async throws -> [String] {
        try await call(.DELETE, "/v1/envs/\(percentEncode(id))?force=\(force)", as: API.Deleted.self).deleted
    }

    /// Which of `digests` this team still has to upload.
    public func missingBlobs(_ digests: [String]) async throws -> [String] {
        try await call(.POST, "/v1/blobs/missing", body: API.BlobList(digests: digests), as: API.BlobList.self).digests
    }

    /// Uploads a blob under its SHA-256; the server refuses content that does not match.
    public func uploadBlob(_ digest: String, bytes: [UInt8]) async throws {
        let response = try await send(.PUT, "/v1/blobs/\(percentEncode(digest))", body: .bytes(ByteBuffer(bytes: bytes)),
                                      contentType: "application/octet-stream")
        _ = try await Self.collect(response, limit: 1 << 20)
    }

    /// Streams the local file `path` up as the blob `digest` (its SHA-256).
    public func uploadBlob(_ digest: String, localPath: String) async throws {
        let file = try await BlockingIO.run { try LocalFile(reading: localPath) }
        defer { file.close() }
        let response = try await send(.PUT, "/v1/blobs/\(percentEncode(digest))", body: .stream(file.chunks(), length: .known(file.size)),
                                      contentType: "application/octet-stream")
        _ = try await Self.collect(response, limit: 1 << 20)
    }

    /// Makes an env of an image archive uploaded as a blob.
    public func importImage(_ request: API.ImportImage) async throws -> API.Env {
        try await call(.POST, "/v1/envs/import", body: request, as: API.Env.self)
    }

    /// Starts a build (or gets the env at once if it exists unchanged).
    public func push(_ request: API.Push) async throws -> API.PushResult {
        try await call(.POST, "/v1/envs", body: request, as: API.PushResult.self)
    }

    /// A build's state; with `wait`, answers once it has ended.
    public func build(_ id: String, wait: Bool = false) async throws -> API.Build {
        try await call(.GET, "/v1/builds/\(percentEncode(id))" + (wait ? "?wait=true" : ""), as: API.Build.self)
    }

    @discardableResult
    public func cancelBuild(_ id: String) async throws -> API.Build {
        try await call(.DELETE, "/v1/builds/\(percentEncode(id))", as: API.Build.self)
    }

    /// Streams a build's log to `onChunk` until it ends (with `follow`) or up to now.
    public func buildLogs(_ id: String, follow: Bool, onChunk: @escaping @Sendable ([UInt8]) -> Void) async throws {
        let response = try await send(.GET, "/v1/builds/\(percentEncode(id))/logs?follow=\(follow)")
        do {
            for try await buffer in response.body { onChunk(Array(buffer.readableBytesView)) }
        } catch {
            throw SproutError(.unavailable, "the build log stream was cut short: \(Self.describe(error))")
        }
    }

    // MARK: Keys

    public func createKey(_ request: API.CreateKey) async throws -> API.CreatedKey {
        try await call(.POST, "/v1/keys", body: request, as: API.CreatedKey.self)
    }

    public func keys() async throws -> [API.Key] {
        try await call(.GET, "/v1/keys", as: [API.Key].self)
    }

    @discardableResult
    public func revokeKey(_ id: String) async throws -> API.Key {
        try await call(.DELETE, "/v1/keys/\(percentEncode(id))", as: API.Key.self)
    }

    /// The fleet's nodes (admin; a server that is a node of a fleet).
    public func nodes() async throws -> [API.Node] {
        try await call(.GET, "/v1/nodes", as: [API.Node].self)
    }

    /// No new sandboxes on the node; through an API server, its sandboxes moved to others.
    public func drainNode(_ id: String) async throws -> API.NodeDrain {
        try await call(.POST, "/v1/nodes/\(percentEncode(id))/drain", as: API.NodeDrain.self)
    }

    /// A collection of the server's object store now (admin).
    public func collectStore(graceSeconds: Double? = nil) async throws -> API.StoreCollection {
        try await call(.POST, "/v1/store/collect", body: API.CollectStore(graceSeconds: graceSeconds), as: API.StoreCollection.self)
    }
}
