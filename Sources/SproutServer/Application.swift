import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import ServiceLifecycle
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// How `sprout server` is set up. Every field has an embedded default.
public struct ServerConfiguration: Sendable {
    public var dataDirectory: String
    public var host = "127.0.0.1"
    public var port = 7070
    public var runtime: RuntimeKind = .gvisor
    /// Where built base envs are cached (shareable between data directories).
    public var cacheDirectory: String?
    /// The statically linked `sprout-agent` to inject into sandboxes.
    public var agentBinary: String?
    public var defaultTimeoutSeconds = 300
    public var maxUploadBytes: Int64 = 4 << 30
    /// Creates are refused (cleanly) when the data directory has less free space.
    public var minimumFreeBytes: Int64 = 256 << 20
    /// Sandboxes kept started ahead of demand per env in use (0: no pool).
    public var poolSize = 2

    public init(dataDirectory: String = ServerConfiguration.defaultDataDirectory) {
        self.dataDirectory = dataDirectory
    }

    /// `/var/lib/sprout` for root, `~/.sprout` otherwise.
    public static var defaultDataDirectory: String {
        if getuid() == 0 { return "/var/lib/sprout" }
        return (ProcessInfo.processInfo.environment["HOME"] ?? "/tmp") + "/.sprout"
    }

    public var adminKeyPath: String { dataDirectory + "/admin.key" }
}

/// Everything a running server is made of, built by `buildApplication`.
public struct SproutServerParts: Sendable {
    public let manager: SandboxManager
    public let keys: KeyStore
    public let metrics: ServerMetrics
    public let runtime: any SandboxRuntime
    /// Set when this start created the first (admin) key: shown once.
    public let newAdminKey: String?
}

/// Builds the Hummingbird application: catalog, runtime, sandbox manager,
/// routes and the background services. `onListening` receives the bound port.
public func buildApplication(
    _ config: ServerConfiguration, logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }
) async throws -> (some ApplicationProtocol, SproutServerParts) {
    let data = config.dataDirectory
    for dir in [data, data + "/run", data + "/sandboxes", data + "/agent"] {
        try FileSystem.makeDirectories(dir, mode: 0o700)
    }
    chmod(data, 0o700)
    let catalog = try Catalog(path: data + "/sprout.db")
    let keys = KeyStore(catalog: catalog)
    let instance = try instanceID(data)
    try installAgent(config, into: data + "/agent")
    do {
        try SandboxNetwork.prepareHost()
    } catch {
        throw SproutError(.unavailable, "cannot set up sandbox networking (needs root, iproute2 and iptables): \(error)")
    }
    OrphanReaper.startForRuntimes()
    let runtime = try OCIRuntime(kind: config.runtime, stateRoot: data + "/run/\(config.runtime.rawValue)", logger: logger)

    var newAdminKey: String?
    if try keys.count() == 0 {
        let created = try keys.create(name: "admin", team: "default", admin: true)
        try FileSystem.writeAtomically(config.adminKeyPath, created.secret + "\n", mode: 0o600)
        newAdminKey = created.secret
    }

    var settings = SandboxManager.Settings(dataDirectory: data, agentDirectory: data + "/agent")
    if config.runtime == .gvisor {
        settings.statxShim = try installStatxShim(agentSource: AgentBinary.locate(explicit: config.agentBinary), into: data + "/agent")
    }
    settings.defaultTimeoutSeconds = config.defaultTimeoutSeconds
    settings.minimumFreeBytes = config.minimumFreeBytes
    settings.poolSize = config.poolSize
    let metrics = ServerMetrics()
    let manager = SandboxManager(
        settings: settings, catalog: catalog, runtime: runtime,
        bases: BaseImages(cacheDirectory: config.cacheDirectory ?? data + "/cache"), instance: instance,
        metrics: metrics, logger: logger)
    let reconciled = await manager.reconcile()
    if !reconciled.adopted.isEmpty || !reconciled.removed.isEmpty {
        logger.notice("reconciled with the host", metadata: [
            "adopted": "\(reconciled.adopted.count)", "removed": "\(reconciled.removed.count)",
        ])
    }

    let router = Router(context: SproutContext.self)
    router.middlewares.add(ErrorAndMetricsMiddleware(metrics: metrics))
    router.get("health") { _, _ in
        try JSONBody.response(API.Health(status: "ok", version: AgentProtocol.agentVersion, runtime: config.runtime.rawValue))
    }
    router.group("metrics").add(middleware: AuthMiddleware(keys: keys)).get { _, _ in
        await manager.publishStateCounts()
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: metrics.text())))
    }
    let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: keys))
    SandboxRoutes(manager: manager).register(on: v1)
    KeyRoutes(keys: keys).register(on: v1)
    AgentRoutes(manager: manager, maxUploadBytes: config.maxUploadBytes).register(on: v1)
    PortRoutes(manager: manager, keys: keys).register(http: v1)
    TerminalRoutes(manager: manager, keys: keys).register(http: v1)
    BuildRoutes(manager: manager).register(on: v1)
    BlobRoutes(catalog: catalog, store: BlobStore(root: data + "/blobs"), maxUploadBytes: config.maxUploadBytes).register(on: v1)

    let wsRouter = Router(context: SproutContext.self)
    wsRouter.middlewares.add(ErrorAndMetricsMiddleware(metrics: metrics))
    let wsV1 = wsRouter.group("v1").add(middleware: AuthMiddleware(keys: keys))
    TerminalRoutes(manager: manager, keys: keys).register(webSocket: wsV1)
    PortRoutes(manager: manager, keys: keys).register(webSocket: wsV1)

    let app = Application(
        router: router,
        server: .http1WebSocketUpgrade(webSocketRouter: wsRouter, configuration: .init(http1: .init(), ws: .init(maxFrameSize: 1 << 20))),
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "sprout"),
        services: [SandboxSupervisor(manager: manager, runtime: runtime, logger: logger)],
        onServerRunning: { channel in onListening(channel.localAddress?.port ?? config.port) },
        logger: logger)
    return (app, SproutServerParts(manager: manager, keys: keys, metrics: metrics, runtime: runtime, newAdminKey: newAdminKey))
}

/// Kills sandboxes whose timeout passed, every second, and those over their
/// disk limit, every two; refills the warm
/// pool when woken; on shutdown, kills every sandbox and ends the runtime's
/// helpers.
struct SandboxSupervisor: Service {
    let manager: SandboxManager
    let runtime: any SandboxRuntime
    let logger: Logger

    func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var tick = 0
                while !Task.isShuttingDownGracefully && !Task.isCancelled {
                    await manager.reapExpired()
                    if tick % 2 == 0 { await manager.enforceDiskLimits() }
                    tick += 1
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            group.addTask {
                for await _ in manager.poolWakeups.cancelOnGracefulShutdown() {
                    await manager.fillPool()
                }
            }
        }
        logger.info("shutting down: killing sandboxes")
        await manager.killAll()
        runtime.shutdown()
    }
}

/// A short random id for this data directory, used to name its host resources.
func instanceID(_ data: String) throws -> String {
    let path = data + "/instance"
    if let bytes = try? Descriptor.readFile(path, limit: 64) {
        let id = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if id.count == 6 { return id }
    }
    let id = Identifiers.random(length: 6)
    try FileSystem.writeAtomically(path, id + "\n", mode: 0o600)
    return id
}

/// Copies the statically linked agent into the data directory, so every
/// sandbox of this server run uses the same, current agent.
@discardableResult
func installAgent(_ config: ServerConfiguration, into dir: String) throws -> String {
    guard let source = AgentBinary.locate(explicit: config.agentBinary) else {
        throw SproutError(.unavailable, "sprout-agent not found: build it with `make agent` or pass --agent PATH")
    }
    guard AgentBinary.isStatic(source) else {
        throw SproutError(.invalidArgument, "\(source) is dynamically linked; sandboxes need the static build (`make agent`)")
    }
    let target = dir + "/sprout-agent"
    try FileSystem.writeAtomically(target, try Descriptor.readFile(source, limit: 256 << 20), mode: 0o755)
    return target
}

/// Installs the statx shim that gVisor sandboxes preload (see
/// Support/statx-compat.c), if it was built next to the agent.
func installStatxShim(agentSource: String?, into dir: String) throws -> String? {
    guard let agentSource, let slash = agentSource.lastIndex(of: "/") else { return nil }
    let source = String(agentSource[..<slash]) + "/statx-compat.so"
    guard FileSystem.exists(source) else { return nil }
    let library = dir + "/statx-compat.so"
    try FileSystem.writeAtomically(library, try Descriptor.readFile(source, limit: 16 << 20), mode: 0o755)
    return library
}
