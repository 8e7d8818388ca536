import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// E2B's in-sandbox daemon ("envd") as Sprout serves it: requests carrying
/// `E2b-Sandbox-Id` are for a sandbox's daemon, reached through the same
/// base URL as the API. They authenticate with the sandbox's access token
/// (`X-Access-Token`), not an API key, and are translated onto the agent.
struct EnvdMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let services: SproutServices
    let tokens: EnvdTokens

    static let sandboxHeader = HTTPField.Name("E2b-Sandbox-Id")!
    static let portHeader = HTTPField.Name("E2b-Sandbox-Port")!
    static let tokenHeader = HTTPField.Name("X-Access-Token")!
    static let trafficTokenHeader = HTTPField.Name("E2B-Traffic-Access-Token")!
    static let envdPort = "49983"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let id = request.headers[Self.sandboxHeader] else {
            // `download_url()`/`upload_url()`: no headers, a signature that names the sandbox.
            if request.uri.path == "/files", let signature = request.uri.queryParameters.get("signature") {
                return try await signed(request, context, signature: String(signature))
            }
            return try await next(request, context)
        }
        return try await daemon(request, context, sandbox: id, port: request.headers[Self.portHeader] ?? Self.envdPort)
    }

    /// A request for sandbox `id`'s daemon (envd's port) or another port of it.
    func daemon(_ request: Request, _ context: Context, sandbox id: String, port: String) async throws -> Response {
        guard let record = try await services.catalog.sandboxes.find(id), let state = E2B.state(record.state.rawValue) else {
            return Self.notFound(id)
        }
        // The daemon takes the access token; other ports take it or the traffic token
        // (the same secret: the code interpreter SDK sends one or the other).
        let token = request.headers[Self.tokenHeader] ?? (port == Self.envdPort ? nil : request.headers[Self.trafficTokenHeader])
        guard let token, tokens.verify(token, for: id) else {
            return E2BErrorMiddleware.response(.unauthorized, "missing or invalid X-Access-Token for sandbox \(id)")
        }
        // Asleep (or falling asleep) without waking on request: not running, as E2B says it.
        if state == "paused" && !(record.autoResume || (record.state == .pausing && record.resumeOnRequest)) { return Self.notFound(id) }
        var context = context
        // The token stands for the sandbox's own team, as an API key of it would.
        context.identity = Identity(keyID: "envd:" + id, team: record.team, admin: false)
        guard port == Self.envdPort else { return await forward(request, context, sandbox: id, port: port) }
        let envd = EnvdService(services: services, sandboxID: id, user: EnvdUser(request))
        return await envd.serve(request, context: context)
    }

    /// Another port inside the sandbox (a server the user started, the code
    /// interpreter's 49999): the request goes there as it came, without
    /// Sprout's and E2B's routing headers.
    func forward(_ request: Request, _ context: Context, sandbox id: String, port text: String) async -> Response {
        guard let port = UInt16(text), port > 0 else { return E2BErrorMiddleware.response(.badRequest, "E2b-Sandbox-Port must be 1-65535") }
        do {
            let address = try await services.lifecycle.address(id, for: try context.caller())
            var target = request.uri.path
            if let query = request.uri.query, !query.isEmpty { target += "?" + query }
            return try await PortRoutes.forward(request, to: address, port: port, target: target,
                                                dropping: ["e2b-sandbox-id", "e2b-sandbox-port", "x-access-token", "e2b-traffic-access-token"],
                                                clientGone: context.clientGone)
        } catch let error as SproutError where error.code == .unavailable {
            return E2BErrorMiddleware.response(.badGateway, "The sandbox \(id) is running but port is not open: \(error.message)")
        } catch {
            let failure = ConnectRPC.Failure(error)
            return E2BErrorMiddleware.response(failure.code.status, failure.message)
        }
    }

    /// A signed file URL: `v1_` + base64(sha256("path:read|write:user:token[:expiration]")),
    /// without padding. The sandbox is the running one whose token makes it match.
    func signed(_ request: Request, _ context: Context, signature: String) async throws -> Response {
        let query = request.uri.queryParameters
        let path = query.get("path").map { String($0) } ?? ""
        let user = query.get("username").map { String($0) } ?? ""
        let operation = request.method == .get ? "read" : "write"
        let expiration = query.get("signature_expiration").map { String($0) }
        if let expiration {
            guard let at = Double(expiration) else { return E2BErrorMiddleware.response(.badRequest, "signature_expiration must be a unix time") }
            guard at >= Date().timeIntervalSince1970 else { return E2BErrorMiddleware.response(.unauthorized, "signature is already expired") }
        }
        let running = try await services.catalog.sandboxes.all(in: [.running])
        guard let record = running.first(where: { record in
            var raw = "\(path):\(operation):\(user):\(tokens.token(for: record.id))"
            if let expiration { raw += ":\(expiration)" }
            return Self.signature(raw) == signature
        }) else {
            return E2BErrorMiddleware.response(.unauthorized, "invalid signature for \(operation) of \(path.prefix(200))")
        }
        var context = context
        context.identity = Identity(keyID: "envd:" + record.id, team: record.team, admin: false)
        return await EnvdService(services: services, sandboxID: record.id, user: EnvdUser(request)).serve(request, context: context)
    }

    static func signature(_ raw: String) -> String {
        let digest = SHA256.hash(data: Array(raw.utf8))
        return "v1_" + Data(digest).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    /// What a killed, expired or paused sandbox answers: the SDK maps "was
    /// not found" to `SandboxNotRunningException`.
    static func notFound(_ id: String) -> Response {
        let body = (try? JSONSerialization.data(withJSONObject: ["sandboxId": id, "message": "The sandbox was not found", "code": 502] as [String: Any])) ?? Data()
        return Response(status: .badGateway, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// The user a daemon request names (`Authorization: Basic base64(user:)`,
/// or `username=` on /files). Unnamed, it is E2B's default `user` where the
/// sandbox has one (the `base` env) and root elsewhere. Processes run as it,
/// files it writes are its own, and relative paths start in its home.
struct EnvdUser: Sendable {
    /// The name the request gave, if any.
    var requested: String?
    /// Who it is in this sandbox, once `EnvdAccounts` has looked.
    var name = "root"
    var home = "/root"
    /// The user to give the agent: nil for root, its own user.
    var agentUser: String? { name == "root" ? nil : name }

    init(_ request: Request) {
        if let auth = request.headers[.authorization], auth.hasPrefix("Basic "),
           let decoded = Data(base64Encoded: String(auth.dropFirst(6))).map({ String(decoding: $0, as: UTF8.self) }),
           let user = decoded.split(separator: ":", omittingEmptySubsequences: false).first, !user.isEmpty {
            requested = String(user)
        }
        if let query = request.uri.queryParameters.get("username"), !query.isEmpty { requested = String(query) }
    }

    func resolve(_ path: String) throws -> String {
        guard !path.contains("\0") else { throw SproutError(.invalidArgument, "path contains a NUL byte") }
        let absolute = path.hasPrefix("/") ? path : (path.isEmpty ? home : home + "/" + path)
        // Normalise `.` and `..` so the agent sees a plain absolute path.
        var parts: [Substring] = []
        for part in absolute.split(separator: "/") {
            if part == "." { continue }
            if part == ".." { _ = parts.popLast(); continue }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    var environment: [String: String] {
        ["HOME": home, "USER": name, "LOGNAME": name, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    }
}

/// The accounts of each sandbox (its /etc/passwd, read through the agent),
/// kept briefly: every daemon call needs its user's home. A name not seen is
/// looked up again at once, so a user added inside (`useradd`) is found.
actor EnvdAccounts {
    static let shared = EnvdAccounts()
    static let freshness: Duration = .seconds(30)
    private var homes: [String: (read: ContinuousClock.Instant, homes: [String: String])] = [:]

    func resolve(_ user: EnvdUser, sandbox: String, agent: AgentClient) async throws -> EnvdUser {
        var resolved = user
        let wanted = user.requested ?? "user"
        var known = homes[sandbox].flatMap { ContinuousClock.now - $0.read < Self.freshness ? $0.homes : nil }
        if known == nil || known?[wanted] == nil {
            known = try await Self.read(agent)
            homes[sandbox] = (ContinuousClock.now, known ?? [:])
            if homes.count > 4096, let oldest = homes.min(by: { $0.value.read < $1.value.read })?.key { homes[oldest] = nil }
        }
        if let home = known?[wanted] {
            resolved.name = wanted
            resolved.home = home
        } else if user.requested == nil || wanted == "root" {
            resolved.name = "root"
            resolved.home = "/root"
        } else {
            throw ConnectRPC.Failure(.invalid_argument, "invalid user '\(wanted.prefix(64))': no such user in sandbox \(sandbox)")
        }
        return resolved
    }

    func forget(_ sandbox: String) { homes[sandbox] = nil }

    static func read(_ agent: AgentClient) async throws -> [String: String] {
        let bytes = (try? await agent.read("/etc/passwd", limit: 8 << 20)) ?? []
        var out: [String: String] = ["root": "/root"]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count >= 7 else { continue }
            out[String(fields[0])] = fields[5].isEmpty ? "/" : String(fields[5])
        }
        return out
    }
}

/// One daemon request against one sandbox.
struct EnvdService: Sendable {
    let services: SproutServices
    let sandboxID: String
    var user: EnvdUser

    func serve(_ request: Request, context: SproutContext) async -> Response {
        let path = request.uri.path
        do {
            if request.method == .get && path == "/health" {
                _ = try await services.lifecycle.agent(sandboxID, for: try context.caller())
                return Response(status: .noContent)
            }
            switch (request.method, path) {
            case (.get, "/files"):
                return try await resolvingUser(context).download(request, context)
            case (.post, "/files"):
                return try await resolvingUser(context).upload(request, context)
            case (.post, _) where path.hasPrefix("/process.Process/"):
                return await rpc(request, context, method: String(path.dropFirst("/process.Process/".count)), process: true)
            case (.post, _) where path.hasPrefix("/filesystem.Filesystem/"):
                return await rpc(request, context, method: String(path.dropFirst("/filesystem.Filesystem/".count)), process: false)
            default:
                return E2BErrorMiddleware.response(.notFound, "no daemon route for \(request.method) \(path.prefix(200))")
            }
        } catch {
            let failure = ConnectRPC.Failure(error)
            return E2BErrorMiddleware.response(failure.code.status, failure.message)
        }
    }

    var xattrStore: SandboxXattrs { services.lifecycle.xattrs(sandboxID) }

    /// This service with its user looked up in the sandbox.
    func resolvingUser(_ context: SproutContext) async throws -> EnvdService {
        var service = self
        service.user = try await withAgent(context) { try await EnvdAccounts.shared.resolve(user, sandbox: sandboxID, agent: $0) }
        return service
    }

    func rpc(_ request: Request, _ context: SproutContext, method: String, process: Bool) async -> Response {
        let streaming = request.headers[.contentType]?.hasPrefix(ConnectRPC.streamContentType) == true
        do {
            let service = try await resolvingUser(context)
            if process {
                return try await service.processCall(method, request, context, streaming: streaming)
            } else {
                return try await service.filesystemCall(method, request, context, streaming: streaming)
            }
        } catch {
            let failure = ConnectRPC.Failure(error)
            return streaming ? ConnectRPC.streamError(failure) : ConnectRPC.unaryError(failure)
        }
    }

    /// How a stream cut short ends, as E2B's would: a sandbox killed (or
    /// dead) under it ends it `unavailable` with E2B's words, which the SDK
    /// takes to its health check and, finding the sandbox gone, reports as
    /// killed or at its end of life; a pause or fork ends it `canceled`, as
    /// E2B cancels requests in flight when it pauses a sandbox.
    func streamFailure(_ error: Error) async -> ConnectRPC.Failure {
        let explained = await services.lifecycle.explain(error, sandboxID)
        guard let sprout = explained as? SproutError, sprout.code == .conflict else { return ConnectRPC.Failure(explained) }
        if await services.lifecycle.isEnding(sandboxID) {
            return ConnectRPC.Failure(.unavailable, "the connection to sandbox \(sandboxID) ended before the stream completed")
        }
        return ConnectRPC.Failure(.canceled, sprout.message)
    }

    func withAgent<T: Sendable>(_ context: SproutContext, _ body: (AgentClient) async throws -> T) async throws -> T {
        try await services.lifecycle.withAgent(sandboxID, for: try context.caller(), body)
    }

    static func unimplemented(_ service: String, _ method: String) -> ConnectRPC.Failure {
        ConnectRPC.Failure(.unimplemented, "\(service)/\(method.prefix(100)) is not implemented")
    }
}
