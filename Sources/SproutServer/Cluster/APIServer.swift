import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import SproutCluster
import SproutCore
import SproutSystem

/// What a running API server is made of (`--role api`).
public struct APIServerParts: Sendable {
    let catalog: ClusterCatalog
    let nodes: NodeClients
    /// Set when this start created the fleet's first (admin) key: shown once.
    public let newAdminKey: String?

    /// Ends the catalog's and the nodes' connections.
    public func shutdown() async {
        await nodes.shutdown()
        await catalog.shutdown()
    }
}

/// Builds an API server of a fleet: the catalog (keys, nodes, placement),
/// the routes, and the client that forwards to nodes. It runs no sandboxes
/// and needs no root. The first API server on an empty catalog makes the
/// admin key and saves it as `admin.key` in its data directory.
public func buildAPIApplication(
    _ config: ServerConfiguration, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
) async throws -> (some ApplicationProtocol, APIServerParts) {
    guard let url = config.catalog else { throw SproutError(.invalidArgument, "--role api needs --catalog postgres://USER@HOST/DATABASE") }
    guard let token = config.clusterToken else { throw SproutError(.invalidArgument, "--role api needs --cluster-token FILE (the secret its nodes have too)") }
    try FileSystem.makeDirectories(config.dataDirectory, mode: 0o700)
    let catalog = try await ClusterCatalog(url: url, logger: logger)
    let keys = FleetKeys(catalog: catalog)
    var newAdminKey: String?
    do {
        if let created = try await keys.createFirstAdmin() {
            try FileSystem.writeAtomically(config.adminKeyPath, created.secret + "\n", mode: 0o600)
            newAdminKey = created.secret
        }
    } catch {
        await catalog.shutdown()
        throw error
    }
    let nodes = NodeClients()
    let router = Router(context: SproutContext.self)
    router.middlewares.add(ErrorAndMetricsMiddleware())
    let routes = FleetRoutes(catalog: catalog, keys: keys, clusterToken: token, nodes: nodes, scheme: config.tls == nil ? "http" : "https",
                             domain: config.domain ?? "localhost", logger: logger)
    routes.register(on: router)
    let webSocketRouter = Router(context: SproutContext.self)
    webSocketRouter.middlewares.add(ErrorAndMetricsMiddleware())
    routes.registerWebSocket(on: webSocketRouter)
    let plain: HTTPServerBuilder = .http1WebSocketUpgrade(
        webSocketRouter: webSocketRouter, configuration: .init(http1: .init(), ws: .init(maxFrameSize: 1 << 20)))
    let app = Application(
        router: router,
        server: try config.tls.map { try .tls(plain, tlsConfiguration: $0.tlsConfiguration()) } ?? plain,
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "sprout"),
        onServerRunning: { channel in onListening(channel.localAddress?.port ?? config.port) },
        logger: logger)
    return (app, APIServerParts(catalog: catalog, nodes: nodes, newAdminKey: newAdminKey))
}
