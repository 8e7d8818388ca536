import SproutAPI
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// E2B's in-sandbox daemon ("envd") as Sprout serves it: requests carrying
/// `E2b-Sandbox-Id` (or for `49983-{id}.{domain}`, or a signed file URL) are
/// for a sandbox's daemon, reached through the same base URL as the API.
/// They authenticate with the sandbox's access token (`X-Access-Token`), not
/// an API key. This middleware reads the sandbox once, checks the token and
/// the state, and hands the request to envd's own routes (`EnvdRoutes`),
/// whose paths would collide with the API's (`/health`, `/files`).
struct EnvdMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let services: SproutServices
    let tokens: EnvdTokens
    let routing: HostRouting
    /// envd's routes, built once.
    let daemonRoutes: RouterResponder<SproutContext>

    init(services: SproutServices, tokens: EnvdTokens, watchers: EnvdWatchers) {
        self.services = services
        self.tokens = tokens
        self.routing = HostRouting(services: services, tokens: tokens)
        self.daemonRoutes = EnvdRoutes(services: services, watchers: watchers).responder()
    }

    static let sandboxHeader = HTTPField.Name("E2b-Sandbox-Id")!
    static let portHeader = HTTPField.Name("E2b-Sandbox-Port")!
    static let tokenHeader = HTTPField.Name("X-Access-Token")!
    static let trafficTokenHeader = HTTPField.Name("E2B-Traffic-Access-Token")!
    static let envdPort = "49983"

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let id = request.headers[Self.sandboxHeader] {
            return try await daemon(request, context, sandbox: id, port: request.headers[Self.portHeader] ?? Self.envdPort)
        }
        // `49983-{id}.{domain}`: envd's port by host name, with the access token as by header.
        if let (port, id) = routing.target(request), String(port) == Self.envdPort {
            return try await daemon(request, context, sandbox: id, port: Self.envdPort)
        }
        // `download_url()`/`upload_url()`: no headers, a signature that names the sandbox.
        if request.uri.path == "/files", let signature = request.uri.queryParameters.get("signature") {
            return try await signed(request, context, signature: String(signature))
        }
        return try await next(request, context)
    }

    /// A request for sandbox `id`'s daemon (envd's port) or another port of it.
    func daemon(_ request: Request, _ context: Context, sandbox id: String, port: String) async throws -> Response {
        context.coreContext.endpointPath.value = "/envd"
        guard let record = try await services.catalog.sandboxes.find(id), let state = E2B.state(record.state) else {
            return Self.notFound(id)
        }
        // The daemon takes the access token; other ports take it or the traffic token
        // (the same secret: the code interpreter SDK sends one or the other).
        let token = request.headers[Self.tokenHeader] ?? (port == Self.envdPort ? nil : request.headers[Self.trafficTokenHeader])
        guard let token, tokens.verify(token, for: id) else {
            return E2BErrorMiddleware.response(.unauthorized, "missing or invalid X-Access-Token for sandbox \(id)")
        }
        // Asleep (or falling asleep) without waking on request: not running, as E2B says it.
        if state == .paused && !(record.autoResume || (record.state == .pausing && record.resumeOnRequest)) { return Self.notFound(id) }
        guard port == Self.envdPort else {
            context.coreContext.endpointPath.value = "/envd/port"
            return await forward(request, Self.entering(context, record), record: record, port: port)
        }
        return try await enter(request, context, record)
    }

    /// The context of a request let in for `record`'s daemon: the token
    /// stands for the sandbox's own team, as an API key of it would.
    static func entering(_ context: Context, _ record: SandboxRecord) -> Context {
        var context = context
        context.identity = Identity(keyID: "envd:" + record.id, team: record.team, admin: false)
        return context
    }

    /// Serves the request on envd's routes; its metrics are labelled by RPC
    /// (`/envd/process.Process/Start`).
    func enter(_ request: Request, _ context: Context, _ record: SandboxRecord) async throws -> Response {
        var context = Self.entering(context, record)
        context.envd = EnvdCall(record: record, user: EnvdUser(request))
        defer { context.coreContext.endpointPath.value = "/envd" + (context.endpointPath.map { $0 == "/envd" ? "" : $0 } ?? "") }
        return try await daemonRoutes.respond(to: request, context: context)
    }

    /// Another port inside the sandbox (a server the user started, the code
    /// interpreter's 49999): the request goes there as it came, without
    /// Sprout's and E2B's routing headers.
    func forward(_ request: Request, _ context: Context, record: SandboxRecord, port text: String) async -> Response {
        let id = record.id
        guard let port = UInt16(text), port > 0 else { return E2BErrorMiddleware.response(.badRequest, "E2b-Sandbox-Port must be 1-65535") }
        do {
            let address = try await services.lifecycle.address(record)
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
        if let expiration = request.uri.queryParameters.get("signature_expiration") {
            guard let at = Double(String(expiration)) else { return E2BErrorMiddleware.response(.badRequest, "signature_expiration must be a unix time") }
            guard at >= Date().timeIntervalSince1970 else { return E2BErrorMiddleware.response(.unauthorized, "signature is already expired") }
        }
        let running = try await services.catalog.sandboxes.all(in: [.running])
        guard let record = running.first(where: { Self.signature(of: request, token: tokens.token(for: $0.id)) == signature }) else {
            return Self.invalidSignature(request)
        }
        return try await enter(request, context, record)
    }

    /// The signature a file URL for `request`'s path, operation, user and
    /// expiration carries when the sandbox's access token is `token`.
    static func signature(of request: Request, token: String) -> String {
        let query = request.uri.queryParameters
        let path = query.get("path").map { String($0) } ?? ""
        let user = query.get("username").map { String($0) } ?? ""
        var raw = "\(path):\(request.method == .get ? "read" : "write"):\(user):\(token)"
        if let expiration = query.get("signature_expiration") { raw += ":\(expiration)" }
        return signature(raw)
    }

    static func invalidSignature(_ request: Request) -> Response {
        let path = request.uri.queryParameters.get("path").map { String($0) } ?? ""
        return E2BErrorMiddleware.response(.unauthorized, "invalid signature for \(request.method == .get ? "read" : "write") of \(path.prefix(200))")
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
/// files it writes are its own, and relative paths start in its home. Who it
/// is comes from the agent (`user.lookup`), the one reader of the sandbox's
/// account files, which also gives its processes their login environment.
struct EnvdUser: Sendable {
    /// The name the request gave, if any.
    var requested: String?
    /// Who it is in this sandbox, once `lookup` has asked.
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

    /// The user as the sandbox knows it now (a user added inside with
    /// `useradd` is found on the next call). A name the sandbox lacks is an
    /// error, except for the unnamed default, which falls back to root.
    /// Unnamed, it is the env's user (an image's `User`) if it has one.
    func lookup(sandbox: String, agent: AgentClient, default envUser: String? = nil) async throws -> EnvdUser {
        let wanted = requested ?? envUser ?? "user"
        var resolved = self
        do {
            let account = try await agent.lookupUser(wanted)
            (resolved.name, resolved.home) = (account.name, account.home)
        } catch let error as SproutError where error.code == .notFound || error.code == .invalidArgument {
            guard requested == nil || wanted == "root" else {
                throw ConnectRPC.Failure(.invalid_argument, "invalid user '\(wanted.prefix(64))': no such user in sandbox \(sandbox)")
            }
            (resolved.name, resolved.home) = ("root", "/root")
        }
        return resolved
    }

    func resolve(_ path: String) throws -> String {
        guard !path.contains("\0") else { throw SproutError(.invalidArgument, "path contains a NUL byte") }
        // A plain absolute path for the agent.
        return resolvedPath(path, in: home)
    }
}

/// What `EnvdMiddleware` hands envd's routes: the sandbox as it read it,
/// and the user the request names.
struct EnvdCall: Sendable {
    let record: SandboxRecord
    let user: EnvdUser
}

/// One daemon request against one running sandbox.
struct EnvdService: Sendable {
    let services: SproutServices
    let watchers: EnvdWatchers
    let sandbox: RunningSandbox
    var user: EnvdUser
    var sandboxID: String { sandbox.id }

    var xattrStore: SandboxXattrs { services.lifecycle.xattrs(sandboxID) }

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

    func withAgent<T: Sendable>(_ body: (AgentClient) async throws -> T) async throws -> T {
        try await services.lifecycle.withAgent(sandbox, body)
    }

    static func unimplemented(_ service: String, _ method: String) -> ConnectRPC.Failure {
        ConnectRPC.Failure(.unimplemented, "\(service)/\(method.prefix(100)) is not implemented")
    }
}
