import SproutAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import NIOCore
import SproutAgentClient
import SproutCore
import SproutSystem
import SproutBlocking

/// Host-based port routing, as E2B and others do it: a request whose Host is
/// `{port}-{sandboxID}.{domain}` goes to that port inside the sandbox, whatever
/// its path (HTTP and WebSocket), beside the path previews. `domain` is the
/// server's `--domain`; by default `localhost`, whose subdomains resolve to
/// loopback without any DNS set-up (RFC 6761; curl and browsers do it).
///
/// It needs a credential, like every other way into a sandbox: an API key of
/// the sandbox's team (`X-API-Key`) or the sandbox's own access token
/// (`X-Access-Token`, or E2B's `e2b-traffic-access-token`).
struct HostRouting: Sendable {
    let services: SproutServices
    let tokens: EnvdTokens

    static let tokenHeaders = ["x-access-token", "e2b-traffic-access-token"]
    static let dropped: Set<String> = [
        "x-api-key", "x-access-token", "e2b-traffic-access-token", "sprout-cluster-token", "sprout-key-id", "sprout-team", "sprout-admin",
        "sprout-preview-port", "sprout-preview-sandbox",
    ]

    /// `(port, sandbox id)` if `request` is for a sandbox's port: by its
    /// Host, or, from an API server of the fleet (the cluster token checked),
    /// as that API server found it in the Host the caller sent it.
    func target(_ request: Request) -> (UInt16, String)? {
        if let port = request.headers[Self.previewPort].flatMap(UInt16.init), let id = request.headers[Self.previewSandbox], fromFleet(request) {
            return (port, id)
        }
        guard let authority = request.head.authority else { return nil }
        return Self.target(authority: authority, domain: services.domain)
    }

    /// Whether `request` bears this node's cluster token (it comes from an API server of the fleet).
    private func fromFleet(_ request: Request) -> Bool {
        guard let token = services.config.clusterToken, let offered = request.headers[AuthMiddleware.clusterTokenHeader] else { return false }
        return constantTimeEqual(offered, token)
    }

    static let previewPort = HTTPField.Name("Sprout-Preview-Port")!
    static let previewSandbox = HTTPField.Name("Sprout-Preview-Sandbox")!

    /// `(port, sandbox id)` of `{port}-{id}.{domain}`.
    static func target(authority: String, domain: String) -> (UInt16, String)? {
        let hostname = Self.hostname(authority).lowercased()
        let domain = Self.hostname(domain).lowercased()
        guard hostname.hasSuffix("." + domain) else { return nil }
        let label = hostname.dropLast(domain.count + 1)
        guard !label.contains("."), let dash = label.firstIndex(of: "-"),
              let port = UInt16(label[..<dash]), port > 0 else { return nil }
        let id = String(label[label.index(after: dash)...])
        guard !id.isEmpty, id.utf8.count <= 64, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
        return (port, id)
    }

    static func hostname(_ authority: String) -> String {
        if authority.hasPrefix("["), let end = authority.firstIndex(of: "]") { return String(authority[...end]) }
        return String(authority.split(separator: ":", maxSplits: 1).first ?? "")
    }

    /// Who the request is, for sandbox `id`: its team's key or its token
    /// (or, from an API server of the fleet, the team it names).
    func identity(_ request: Request, sandbox id: String) async throws -> Identity {
        guard let record = try await services.catalog.sandboxes.find(id), record.state.isLive else {
            throw SproutError(.notFound, "no sandbox with id '\(id)'")
        }
        if fromFleet(request), let team = request.headers[AuthMiddleware.fleetTeamHeader] {
            guard team == record.team else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
            return Identity(keyID: "fleet:" + (request.headers[AuthMiddleware.fleetKeyHeader] ?? ""), team: team, admin: false)
        }
        if let secret = request.headers[AuthMiddleware.header] {
            guard let identity = try await services.keys.authenticate(secret) else { throw SproutError(.unauthorized, "invalid or revoked API key") }
            guard identity.team == record.team else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
            return identity
        }
        for name in Self.tokenHeaders {
            guard let field = HTTPField.Name(name), let token = request.headers[field] else { continue }
            guard tokens.verify(token, for: id) else { throw SproutError(.unauthorized, "invalid access token for sandbox \(id)") }
            return Identity(keyID: "token:" + id, team: record.team, admin: false)
        }
        throw SproutError(.unauthorized, "a sandbox's port needs X-API-Key or the sandbox's X-Access-Token")
    }

    static func upstreamTarget(_ request: Request) -> String {
        var target = request.uri.path.isEmpty ? "/" : request.uri.path
        if let query = request.uri.query, !query.isEmpty { target += "?" + query }
        return target
    }
}

/// HTTP requests for `{port}-{id}.{domain}`, before any route.
struct HostRouteMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let routing: HostRouting

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let (port, id) = routing.target(request) else { return try await next(request, context) }
        // (envd's port, 49983, is EnvdMiddleware's: it comes first.)
        let identity = try await routing.identity(request, sandbox: id)
        // A sleeping auto-resume sandbox wakes for it, as for any request that needs it running.
        let address = try await routing.services.lifecycle.address(id, for: identity)
        do {
            return try await PortRoutes.forward(request, to: address, port: port, target: HostRouting.upstreamTarget(request),
                                                dropping: HostRouting.dropped, clientGone: context.clientGone)
        } catch let error as SproutError where error.code == .unavailable {
            throw SproutError(.unavailable, "nothing answers on port \(port) in sandbox \(id): \(error.message)")
        }
    }
}

/// WebSocket upgrades for `{port}-{id}.{domain}`, before any WebSocket route.
struct HostRouteWebSocketMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let routing: HostRouting

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let (port, id) = routing.target(request) else { return try await next(request, context) }
        let routing = self.routing
        let upgrade = WebSocketUpgradeMiddleware<Context>(shouldUpgrade: { request, _ in
            let identity = try await routing.identity(request, sandbox: id)
            let address = try await routing.services.lifecycle.address(id, for: identity)
            guard try await onThread({ Socket.answers(host: address, port: port, timeoutSeconds: 5) }) else {
                throw SproutError(.unavailable, "nothing answers on port \(port) in sandbox \(id)")
            }
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, wsContext in
            let identity = try await routing.identity(wsContext.request, sandbox: id)
            let address = try await routing.services.lifecycle.address(id, for: identity)
            let path = HostRouting.upstreamTarget(wsContext.request)
            let upstream = try await SandboxWebSocket.connect(host: address, port: port, target: path)
            let keys = routing.services.keys
            try await routing.services.lifecycle.activity.holding(id) {
                try await Relay.run(upstream: upstream, inbound: inbound, outbound: outbound) {
                    // A key's revocation ends it at once; a token lives as long as the sandbox.
                    if identity.keyID.hasPrefix("token:") { try? await Task.sleep(for: .seconds(86_400 * 365)) } else { await keys.untilRevoked(identity.keyID) }
                }
            }
        })
        return try await upgrade.handle(request, context: context, next: next)
    }
}
