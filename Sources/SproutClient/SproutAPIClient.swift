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

/// A typed client for the Sprout REST API (used by the CLI and tests).
public struct SproutAPIClient: Sendable {
    public let host: String
    public let port: UInt16
    public let apiKey: String?

    /// `url` is `http://HOST[:PORT]`.
    public init(url: String, apiKey: String?) throws {
        guard url.hasPrefix("http://") else {
            throw SproutError(.invalidArgument, "the API URL must start with http:// (got \(url))")
        }
        var rest = url.dropFirst("http://".count)
        if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
        if let colon = rest.lastIndex(of: ":") {
            guard let p = UInt16(rest[rest.index(after: colon)...]) else { throw SproutError(.invalidArgument, "bad port in \(url)") }
            host = String(rest[..<colon])
            port = p
        } else {
            host = String(rest)
            port = 80
        }
        guard !host.isEmpty else { throw SproutError(.invalidArgument, "no host in \(url)") }
        self.apiKey = apiKey
    }

    var connectHost: String { host == "localhost" ? "127.0.0.1" : host }

    func headers(_ extra: [(String, String)] = []) -> [(String, String)] {
        var h = extra
        if let apiKey { h.append(("X-API-Key", apiKey)) }
        return h
    }

    /// Opens a connection and sends a request with a small body.
    func send(_ method: String, _ target: String, json: [UInt8]? = nil) throws -> (HTTPConnection, HTTPConnection.ResponseHead) {
        let connection = try HTTPConnection(host: connectHost, port: port)
        do {
            let extra: [(String, String)] = json == nil ? [] : [("Content-Type", "application/json")]
            try connection.sendHead(method: method, target: target, host: "\(host):\(port)", headers: headers(extra),
                                    bodyLength: json.map { Int64($0.count) } ?? (method == "GET" || method == "DELETE" ? nil : 0))
            if let json { try connection.sendBody(json) }
            let head = try connection.readResponseHead(requestMethod: method)
            return (connection, head)
        } catch let error as SproutError where error.code == .unavailable || error.code == .timeout {
            throw SproutError(.unavailable, "cannot reach the Sprout server at http://\(host):\(port): \(error.message)")
        }
    }

    /// Throws the server's error for a non-2xx response.
    static func check(_ head: HTTPConnection.ResponseHead, _ connection: HTTPConnection) throws {
        guard !(200..<300).contains(head.status) else { return }
        let body = (try? connection.readBody(limit: 1 << 20)) ?? []
        if let envelope = try? JSONDecoder().decode(API.ErrorEnvelope.self, from: Data(body)) {
            throw envelope.error.sproutError
        }
        throw SproutError(.internal, "HTTP \(head.status) \(head.reason)")
    }

    /// One JSON request, one JSON response.
    func call<Response: Decodable & Sendable>(_ method: String, _ target: String, body: (some Encodable & Sendable)? = nil as String?, as type: Response.Type) async throws -> Response {
        let json = try body.map { Array(try JSONEncoder().encode($0)) }
        return try await onThread { [self] in
            let (connection, head) = try send(method, target, json: json)
            defer { connection.close() }
            try Self.check(head, connection)
            let bytes = try connection.readBody(limit: 64 << 20)
            do {
                return try JSONDecoder().decode(Response.self, from: Data(bytes))
            } catch {
                throw SproutError(.malformed, "unexpected response from the server: \(error)")
            }
        }
    }

    /// A request whose response has no body worth decoding.
    func callExpectingNoBody(_ method: String, _ target: String) async throws {
        try await onThread { [self] in
            let (connection, head) = try send(method, target)
            defer { connection.close() }
            try Self.check(head, connection)
        }
    }

    // MARK: Server

    public func health() async throws -> API.Health {
        try await call("GET", "/health", as: API.Health.self)
    }

    public func metrics() async throws -> String {
        try await onThread { [self] in
            let (connection, head) = try send("GET", "/metrics")
            defer { connection.close() }
            try Self.check(head, connection)
            return String(decoding: try connection.readBody(), as: UTF8.self)
        }
    }

    // MARK: Sandboxes

    public func createSandbox(_ request: API.CreateSandbox) async throws -> API.Sandbox {
        try await call("POST", "/v1/sandboxes", body: request, as: API.Sandbox.self)
    }

    public func sandboxes(includeEnded: Bool = false) async throws -> [API.Sandbox] {
        try await call("GET", "/v1/sandboxes" + (includeEnded ? "?all=true" : ""), as: [API.Sandbox].self)
    }

    public func sandbox(_ id: String) async throws -> API.Sandbox {
        try await call("GET", "/v1/sandboxes/\(percentEncode(id))", as: API.Sandbox.self)
    }

    /// What happened to a sandbox: its state changes and why, out-of-memory kills.
    public func events(_ id: String) async throws -> [API.SandboxEvent] {
        try await call("GET", "/v1/sandboxes/\(percentEncode(id))/events", as: [API.SandboxEvent].self)
    }

    @discardableResult
    public func killSandbox(_ id: String) async throws -> API.Sandbox {
        try await call("DELETE", "/v1/sandboxes/\(percentEncode(id))", as: API.Sandbox.self)
    }

    @discardableResult
    public func setTimeout(_ id: String, seconds: Int) async throws -> API.Sandbox {
        try await call("POST", "/v1/sandboxes/\(percentEncode(id))/timeout", body: API.SetTimeout(timeoutSeconds: seconds), as: API.Sandbox.self)
    }

    /// Checkpoints a running sandbox's memory and stops it; `resume` brings every process back.
    @discardableResult
    public func pause(_ id: String, autoResume: Bool = false) async throws -> API.Sandbox {
        try await call("POST", "/v1/sandboxes/\(percentEncode(id))/pause", body: API.Pause(autoResume: autoResume), as: API.Sandbox.self)
    }

    @discardableResult
    public func resume(_ id: String) async throws -> API.Sandbox {
        try await call("POST", "/v1/sandboxes/\(percentEncode(id))/resume", as: API.Sandbox.self)
    }

    /// Snapshots a running sandbox once and starts `count` sandboxes from it; the original keeps running.
    public func fork(_ id: String, count: Int) async throws -> [API.Sandbox] {
        try await call("POST", "/v1/sandboxes/\(percentEncode(id))/fork", body: API.Fork(count: count), as: API.ForkResult.self).sandboxes
    }

    /// Freezes a running sandbox's changes into a new env.
    public func snapshot(_ id: String, name: String? = nil) async throws -> API.Env {
        try await call("POST", "/v1/sandboxes/\(percentEncode(id))/snapshot", body: API.Snapshot(name: name), as: API.Env.self)
    }

    public func envs() async throws -> [API.Env] {
        try await call("GET", "/v1/envs", as: [API.Env].self)
    }

    public func env(_ id: String) async throws -> API.Env {
        try await call("GET", "/v1/envs/\(percentEncode(id))", as: API.Env.self)
    }

    /// Points (or stops pointing) the env's name at it.
    @discardableResult
    public func setPublished(_ id: String, _ published: Bool) async throws -> API.Env {
        try await call("POST", "/v1/envs/\(percentEncode(id))/" + (published ? "publish" : "unpublish"), as: API.Env.self)
    }

    public func envTree(_ id: String) async throws -> API.EnvTree {
        try await call("GET", "/v1/envs/\(percentEncode(id))/tree", as: API.EnvTree.self)
    }

    /// Deletes an env (with `force`: its descendants too) and collects its layers.
    @discardableResult
    public func deleteEnv(_ id: String, force: Bool = false) async throws -> [String] {
        try await call("DELETE", "/v1/envs/\(percentEncode(id))?force=\(force)", as: API.Deleted.self).deleted
    }

    /// Which of `digests` this team still has to upload.
    public func missingBlobs(_ digests: [String]) async throws -> [String] {
        try await call("POST", "/v1/blobs/missing", body: API.BlobList(digests: digests), as: API.BlobList.self).digests
    }

    /// Uploads a blob under its SHA-256; the server refuses content that does not match.
    public func uploadBlob(_ digest: String, bytes: [UInt8]) async throws {
        try await onThread { [self] in
            let connection = try HTTPConnection(host: connectHost, port: port)
            defer { connection.close() }
            try connection.sendHead(method: "PUT", target: "/v1/blobs/\(percentEncode(digest))", host: "\(host):\(port)",
                                    headers: headers([("Content-Type", "application/octet-stream")]), bodyLength: Int64(bytes.count))
            try connection.sendBody(bytes)
            try Self.check(try connection.readResponseHead(requestMethod: "PUT"), connection)
        }
    }

    /// Starts a build (or gets the env at once if it exists unchanged).
    public func push(_ request: API.Push) async throws -> API.PushResult {
        try await call("POST", "/v1/envs", body: request, as: API.PushResult.self)
    }

    /// A build's state; with `wait`, answers once it has ended.
    public func build(_ id: String, wait: Bool = false) async throws -> API.Build {
        try await call("GET", "/v1/builds/\(percentEncode(id))" + (wait ? "?wait=true" : ""), as: API.Build.self)
    }

    @discardableResult
    public func cancelBuild(_ id: String) async throws -> API.Build {
        try await call("DELETE", "/v1/builds/\(percentEncode(id))", as: API.Build.self)
    }

    /// Streams a build's log to `onChunk` until it ends (with `follow`) or up to now.
    public func buildLogs(_ id: String, follow: Bool, onChunk: @escaping @Sendable ([UInt8]) -> Void) async throws {
        try await onThread { [self] in
            let (connection, head) = try send("GET", "/v1/builds/\(percentEncode(id))/logs?follow=\(follow)")
            defer { connection.close() }
            try Self.check(head, connection)
            while let chunk = try connection.readBodyChunk() { onChunk(chunk) }
        }
    }

    // MARK: Keys

    public func createKey(_ request: API.CreateKey) async throws -> API.CreatedKey {
        try await call("POST", "/v1/keys", body: request, as: API.CreatedKey.self)
    }

    public func keys() async throws -> [API.Key] {
        try await call("GET", "/v1/keys", as: [API.Key].self)
    }

    @discardableResult
    public func revokeKey(_ id: String) async throws -> API.Key {
        try await call("DELETE", "/v1/keys/\(percentEncode(id))", as: API.Key.self)
    }
}
