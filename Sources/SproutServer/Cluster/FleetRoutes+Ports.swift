import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOHTTP1
import SproutAPI
import SproutCluster
import SproutCore

/// A sandbox's ports by host (`{port}-{id}.{domain}`) and E2B's envd, on an API server.
extension FleetRoutes {
    /// A request for `{port}-{id}.{domain}`: to the sandbox's node as it
    /// came, the port and sandbox named in headers the node trusts only with
    /// the cluster token. An API key is checked here (the node takes the team
    /// it names); a sandbox's access token goes on for the node to check.
    func forwardPreview(_ request: Request, port: UInt16, sandbox id: String) async throws -> Response {
        let (placement, identity) = try await previewTarget(request, sandbox: id)
        var headers = request.headers
        headers[HostRouting.previewPort] = "\(port)"
        headers[HostRouting.previewSandbox] = id
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: headers,
                                      body: Self.streamed(request), identity: identity, vouching: true, to: placement)
        return Self.response(response, body: ResponseBody(asyncSequence: response.body))
    }

    /// Where a request for a sandbox's port by host goes, and for whom: the
    /// caller's key, checked here, or none (the node checks an access token).
    func previewTarget(_ request: Request, sandbox id: String) async throws -> (ClusterCatalog.Placement, Identity?) {
        var identity: Identity?
        if let secret = request.headers[AuthMiddleware.header] {
            guard let known = try await keys.authenticate(secret) else { throw SproutError(.unauthorized, "invalid or revoked API key") }
            identity = known
        }
        let found = if let identity { try await locate(id, for: identity) } else { try await catalog.placement(of: id) }
        guard let placement = found else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
        return (placement, identity)
    }
}

/// E2B's envd on an API server: a request naming a sandbox (`E2b-Sandbox-Id`,
/// or `49983-{id}.HOST`, or a signed `/files` URL) goes to that sandbox's node as it came.
struct FleetEnvdMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let routes: FleetRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let id = request.headers[EnvdMiddleware.sandboxHeader] {
            return try await routes.forwardEnvd(request, sandbox: id)
        }
        if let authority = request.head.authority, let label = HostRouting.hostname(authority).split(separator: ".").first,
           label.hasPrefix(EnvdMiddleware.envdPort + "-") {
            let id = String(label.dropFirst(EnvdMiddleware.envdPort.count + 1))
            if !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { return try await routes.forwardEnvd(request, sandbox: id) }
        }
        // `download_url()`/`upload_url()`: no headers, a signature that names the sandbox.
        if request.uri.path == "/files", let signature = request.uri.queryParameters.get("signature") {
            return try await routes.forwardSigned(request, signature: String(signature))
        }
        // A sandbox's other ports, `{port}-{id}.{domain}`.
        if let authority = request.head.authority, let (port, id) = HostRouting.target(authority: authority, domain: routes.domain) {
            return try await routes.forwardPreview(request, port: port, sandbox: id)
        }
        return try await next(request, context)
    }
}

/// WebSocket upgrades for `{port}-{id}.{domain}` on an API server: relayed
/// to the sandbox's node as the HTTP ones are (`forwardPreview`), the key
/// checked here, an access token by the node.
struct FleetHostWebSocketMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let routes: FleetRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let authority = request.head.authority, let (port, id) = HostRouting.target(authority: authority, domain: routes.domain) else {
            return try await next(request, context)
        }
        let routes = self.routes
        let upgrade = WebSocketUpgradeMiddleware<Context>(shouldUpgrade: { request, _ in
            _ = try await routes.previewTarget(request, sandbox: id)
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, wsContext in
            let (placement, identity) = try await routes.previewTarget(wsContext.request, sandbox: id)
            var headers = identity.map(routes.fleetHeaders) ?? [(AuthMiddleware.clusterTokenHeader.rawName, routes.clusterToken)]
            headers += [(HostRouting.previewPort.rawName, "\(port)"), (HostRouting.previewSandbox.rawName, id)]
            for name in HostRouting.tokenHeaders {
                if let field = HTTPField.Name(name), let token = wsContext.request.headers[field] { headers.append((name, token)) }
            }
            let upstream = try await routes.connectWebSocket(wsContext.request, to: placement, headers: headers)
            try await Relay.run(upstream: upstream, inbound: inbound, outbound: outbound) {
                if let identity { await routes.keys.untilRevoked(identity.keyID) } else { try? await Task.sleep(for: .seconds(86_400 * 365)) }
            }
        })
        return try await upgrade.handle(request, context: context, next: next)
    }
}
