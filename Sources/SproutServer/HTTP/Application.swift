import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import ServiceLifecycle
import SproutAPI
import SproutAgentProtocol
import SproutCluster
import SproutCore
import SproutRegistry
import SproutRuntime
import SproutS3
import SproutStore
import SproutSystem

/// How `sprout server` is set up. Every field has an embedded default.
public struct ServerConfiguration: Sendable {
    public var dataDirectory: String
    public var host = "127.0.0.1"
    public var port = 7070
    public var runtime: RuntimeKind = .gvisor
    /// gVisor's platform (`--platform`).
    public var platform: GVisorPlatform = .ptrace
    /// An explicit runsc binary (default: `runsc` on PATH).
    public var runscBinary: String?
    /// Where built base envs are cached (shareable between data directories).
    public var cacheDirectory: String?
    /// The statically linked `sprout-agent` to inject into sandboxes.
    public var agentBinary: String?
    /// The built-in envs' folders (see `BuiltinEnvs.locate`).
    public var envsDirectory: String?
    /// Build the built-in envs that are missing in the background from the start
    /// (`sprout server` does unless `--no-prebuild-envs`); else on first use.
    public var prebuildEnvs = false
    /// The dashboard's files (see `DashboardRoutes.locate`).
    public var dashboardDirectory: String?
    public var defaultTimeoutSeconds = 300
    public var maxUploadBytes: Int64 = 4 << 30
    /// Creates are refused (cleanly) when the data directory has less free space.
    public var minimumFreeBytes: Int64 = 256 << 20
    /// See `Settings.keptImageBytes`.
    public var keptImageBytes: Int64 = 64 << 20
    /// Pooled sandboxes per env in demand (0: no pool).
    public var poolSize = 2
    /// Pooled sandboxes in all.
    public var poolBudget = 8
    /// An env keeps its pool this long after the last create that could use it.
    public var poolIdleSeconds = 600.0
    /// Give every sandbox and build the host's trusted certificates.
    public var trustHostCA = false
    /// Paused sandboxes a team may hold.
    public var maxPausedPerTeam = 1000
    /// See `Settings.memoryBudgetMB`, `minimumFreeMemoryMB`, `pressureIdleSeconds`.
    public var memoryBudgetMB = 0
    public var minimumFreeMemoryMB = 512
    public var pressureIdleSeconds = 30.0
    /// Sandbox ports are reached at `{port}-{sandboxID}.{domain}` (default
    /// `localhost:<port>`, which needs no DNS on this machine).
    public var domain: String?
    /// Serve HTTPS with this certificate (nil: plain HTTP).
    public var tls: ServerCertificate?
    /// Registries pulled from over plain HTTP (`HOST:PORT`).
    public var insecureRegistries: [String] = []
    /// Registry logins, in docker's `config.json` format.
    public var registryAuthFile: String?
    /// What this server is in a fleet: `all` (one host, alone) or `node` (a node of the fleet at `catalog`).
    public var role: ServerRole = .all
    /// `--catalog postgres://USER@HOST/DB`: for `--role node` and `api`, the
    /// fleet's catalog; for `--role all`, where the server keeps its own
    /// catalog instead of SQLite in the data directory.
    public var catalog: String?
    /// Where the fleet reaches this node (`http(s)://HOST:PORT`).
    public var advertise: String?
    /// `--insecure-http`: plain HTTP beyond loopback was asked for (a node may then advertise `http://` to other hosts).
    public var insecureHTTP = false
    /// The secret API servers and nodes share (`--cluster-token FILE`'s content).
    public var clusterToken: String?
    /// How long a node's lease in the fleet's catalog lasts.
    public var leaseSeconds = 10.0
    /// A node offers its cores times this to sandboxes' CPU limits.
    public var cpuOvercommit = 4.0
    /// The object store paused sandboxes are kept in (`s3://BUCKET[/PREFIX]?endpoint=URL&region=R`; nil: the data directory only).
    public var store: String?
    /// `AWS_ACCESS_KEY_ID=` and `AWS_SECRET_ACCESS_KEY=` lines for the store (nil: those environment variables).
    public var storeCredentialsFile: String?
    /// `--cache-gb`: the most the host keeps of copies of what the store holds (nil: no bound).
    public var cacheBytes: Int64?

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

/// What a server is in a fleet.
public enum ServerRole: String, Sendable, CaseIterable {
    /// One host on its own: today's server.
    case all
    /// A node of the fleet whose catalog `--catalog` names: it registers there and holds a lease.
    case node
    /// An API server of that fleet: keys, placement and routing; no sandboxes of its own.
    case api
}

/// The server's services, as the routes use them.
public struct SproutServices: Sendable {
    public let lifecycle: SandboxLifecycle
    public let keys: KeyStore
    public let builder: EnvBuilder
    public let pool: WarmPool
    /// Envs Sprout builds on first use (`code-interpreter-v1`).
    public let builtins: BuiltinEnvs
    /// The background rounds (timeouts, deaths, disk, memory, the pool's look, metrics).
    public let supervisor: Supervisor
    public let volumes: Volumes
    let sandboxMetrics: SandboxMetrics
    public var envs: EnvGraph { lifecycle.graph }
    public var catalog: Catalog { lifecycle.catalog }
    public var metrics: ServerMetrics { lifecycle.metrics }
    var config: ServerConfiguration
    /// The E2B daemon's access tokens (a secret in the data directory).
    var envdTokens: EnvdTokens
    /// E2B's polling directory watchers (`CreateWatcher`).
    let envdWatchers = EnvdWatchers()
    let templateBuilds = E2BTemplateBuilds()
    /// This server's place in a fleet (`--role node`), else nil.
    let membership: NodeMembership?
    /// The object store's collector (`--store`), else nil.
    let storeCollector: StoreCollector?
    /// The port the server listens on, once it does.
    let listeningPort: Locked<Int>

    /// Where sandbox ports are reached by host (`{port}-{id}.{domain}`):
    /// `--domain`, else `localhost` with the server's port.
    var domain: String { config.domain ?? "localhost:\(listeningPort.current)" }
}

/// Everything a running server is made of, built by `buildApplication`.
public struct SproutServerParts: Sendable {
    public let services: SproutServices
    public var metrics: ServerMetrics { services.metrics }
    public var runtime: any SandboxRuntime { services.lifecycle.runtime }
    /// Set when this start created the first (admin) key: shown once.
    public let newAdminKey: String?

    /// Ends what outlives the routes (the object store's connections).
    public func shutdown() async {
        await services.lifecycle.stores.remote?.shutdown()
        await services.catalog.close()
    }
}

/// Builds the Hummingbird application: catalog, host (the real one unless
/// `host` is given: the fast test tier passes a fake), services, routes and
/// the supervisor. This is where every service gets its collaborators.
/// `clock` is the one every policy decides by (a test passes its own).
/// `onListening` receives the bound port.
public func buildApplication(
    _ config: ServerConfiguration, logger: Logger, host injected: SandboxHost? = nil, clock: any WallClock = SystemClock(),
    onListening: @escaping @Sendable (Int) -> Void = { _ in }
) async throws -> (some ApplicationProtocol, SproutServerParts) {
    let data = config.dataDirectory
    for dir in [data, data + "/run", data + "/sandboxes", data + "/agent"] {
        try FileSystem.makeDirectories(dir, mode: 0o700)
    }
    chmod(data, 0o700)
    let settings = try settings(config, instance: try instanceID(data))
    let host: SandboxHost
    if let injected {
        host = injected
    } else {
        try installAgent(config, into: data + "/agent")
        host = try await SandboxHost.real(config, instance: settings.instance, logger: logger)
    }
    let catalog: Catalog
    do {
        if config.role == .all, let url = config.catalog {
            catalog = try await Catalog(postgres: url, logger: logger)
        } else {
            catalog = try await Catalog(path: data + "/sprout.db")
        }
    } catch {
        if injected == nil { await VolumeStore.release(instance: settings.instance) }
        throw error
    }
    let keys = KeyStore(catalog: catalog)
    do {
        return try await assembleApplication(
            config, logger: logger, host: host, real: injected == nil, clock: clock, catalog: catalog, keys: keys, settings: settings,
            onListening: onListening)
    } catch {
        // What the real host set up for this server before the failure (its volumes' shared mount).
        if injected == nil { await VolumeStore.release(instance: settings.instance) }
        await catalog.close()
        throw error
    }
}

/// The rest of `buildApplication`, once the host is there.
private func assembleApplication(
    _ config: ServerConfiguration, logger: Logger, host: SandboxHost, real: Bool, clock: any WallClock, catalog: Catalog, keys: KeyStore,
    settings: Settings, onListening: @escaping @Sendable (Int) -> Void
) async throws -> (some ApplicationProtocol, SproutServerParts) {
    let data = config.dataDirectory
    var withLayer = settings
    if real && config.runtime == .gvisor { withLayer.sudoLayer = try installSudoLayer(into: data + "/sudo-layer") }
    let lifecycleSettings = withLayer
    do {
        try await host.network.prepare()
    } catch {
        throw SproutError(.unavailable, "cannot set up sandbox networking (needs root, iproute2 and nftables): \(error)")
    }

    var newAdminKey: String?
    if try await keys.count() == 0 {
        let created = try await keys.create(name: "admin", team: "default", admin: true)
        try FileSystem.writeAtomically(config.adminKeyPath, created.secret + "\n", mode: 0o600)
        newAdminKey = created.secret
    }

    // The parts, each given what it works with.
    let metrics = ServerMetrics()
    let stores = Stores(dataDirectory: data, remote: try await openStore(config, logger: logger), cacheBytes: config.cacheBytes)
    // Where trees are made and removed all day (image layers unpacked, sandboxes, builds): on ext4, each new
    // subdirectory goes to a block group of its own, not beside the ones just deleted (docs/performance.md).
    for directory in [stores.layers.root, data + "/sandboxes", data + "/builds"] {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        FileSystem.markTopDirectory(directory)
    }
    let agents = AgentConnector(network: host.network)
    let memoryGuard = host.watchesMemory
        ? try MemoryGuard(runtime: host.runtime, sandboxes: catalog.sandboxes, agents: agents, metrics: metrics, logger: logger) : nil
    let watcher = ContainerWatch(runtime: host.runtime, memory: memoryGuard, logger: logger)
    let volumes = VolumeStore(dataDirectory: data, instance: settings.instance)
    let launcher = SandboxLauncher(settings: lifecycleSettings, host: host, layers: stores.layers, images: stores.images, remote: stores.remote, watcher: watcher,
                                   agents: agents, volumes: volumes, logger: logger)
    let activity = SandboxActivity(clock: clock)
    let sandboxMetrics = SandboxMetrics()
    let demand = PoolDemand(clock: clock)
    let lifecycle = SandboxLifecycle(
        settings: lifecycleSettings, catalog: catalog, host: host, stores: stores, launcher: launcher,
        checkpoint: Checkpointer(settings: lifecycleSettings, runtime: host.runtime, network: host.network, launcher: launcher, agents: agents,
                                 images: stores.images, keptImages: KeptImages(budget: lifecycleSettings.keptImageBytes), logger: logger),
        graph: EnvGraph(catalog: catalog, bases: host.bases, remote: stores.remote, logger: logger),
        collector: GarbageCollector(catalog: catalog, stores: stores, readyImages: lifecycleSettings.readyImagesDirectory, metrics: metrics, logger: logger),
        admission: MemoryAdmission(settings: lifecycleSettings, repository: catalog.sandboxes, runtime: host.runtime, activity: activity, metrics: metrics),
        activity: activity, demand: demand, agents: agents, sandboxMetrics: sandboxMetrics, clock: clock, metrics: metrics, logger: logger)
    let reconciled = await Reconciler(lifecycle: lifecycle).run()
    if !reconciled.adopted.isEmpty || !reconciled.removed.isEmpty {
        logger.notice("reconciled with the host", metadata: [
            "adopted": "\(reconciled.adopted.count)", "removed": "\(reconciled.removed.count)",
        ])
    }
    let builder = EnvBuilder(lifecycle: lifecycle)
    let pool = WarmPool(lifecycle: lifecycle, demand: demand, settings: lifecycleSettings, clock: clock, logger: logger)
    let supervisor = Supervisor(lifecycle: lifecycle, watcher: watcher, disk: DiskWatch(lifecycle: lifecycle, sandboxMetrics: sandboxMetrics),
                                demand: demand, builder: builder, sandboxMetrics: sandboxMetrics, clock: clock, logger: logger)
    let listeningPort = Locked(0)
    let membership = try await joinFleet(config, lifecycle: lifecycle, data: data, instance: settings.instance, logger: logger) { listeningPort.current }
    var placed: (@Sendable (String) async throws -> Bool)?
    if let fleet = membership?.catalog { placed = { id in try await fleet.placement(of: id) != nil } }
    let storeCollector = stores.remote.map { remote in
        StoreCollector(remote: remote, catalog: catalog, instance: settings.instance, placed: placed,
                       forget: { ids in try await lifecycle.forgetEnvs(ids, force: false) }, metrics: metrics, logger: logger)
    }
    let services = SproutServices(lifecycle: lifecycle, keys: keys, builder: builder, pool: pool,
                                  builtins: BuiltinEnvs(lifecycle: lifecycle, builder: builder, directory: BuiltinEnvs.locate(explicit: config.envsDirectory)),
                                  supervisor: supervisor, volumes: Volumes(catalog: catalog, store: volumes, lifecycle: lifecycle),
                                  sandboxMetrics: sandboxMetrics,
                                  config: config, envdTokens: try config.clusterToken.map { EnvdTokens.fleet(clusterToken: $0) } ?? EnvdTokens.load(dataDirectory: data),
                                  membership: membership,
                                  storeCollector: storeCollector,
                                  listeningPort: listeningPort)

    let plain: HTTPServerBuilder = .http1WebSocketUpgrade(
        webSocketRouter: makeWebSocketRouter(services), configuration: .init(http1: .init(), ws: .init(maxFrameSize: 1 << 20)))
    let app = Application(
        router: makeRouter(services),
        server: try config.tls.map { try .tls(plain, tlsConfiguration: $0.tlsConfiguration()) } ?? plain,
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "sprout"),
        services: [supervisor, pool] + (membership.map { [$0 as any Service] } ?? []) + (storeCollector.map { [$0 as any Service] } ?? []),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? config.port
            services.listeningPort.withLock { $0 = port }
            if config.prebuildEnvs { Task { await services.builtins.prepareAll() } }
            onListening(port)
        },
        logger: logger)
    return (app, SproutServerParts(services: services, newAdminKey: newAdminKey))
}

/// With `--role node`: this server registered in the fleet's catalog.
func joinFleet(
    _ config: ServerConfiguration, lifecycle: SandboxLifecycle, data: String, instance: String, logger: Logger,
    listeningPort: @escaping @Sendable () -> Int
) async throws -> NodeMembership? {
    guard config.role == .node else { return nil }
    guard let url = config.catalog else { throw SproutError(.invalidArgument, "--role node needs --catalog postgres://USER@HOST/DATABASE") }
    guard config.clusterToken != nil else { throw SproutError(.invalidArgument, "--role node needs --cluster-token FILE (the secret its API servers have too)") }
    guard let address = config.advertise, let parsed = URL(string: address), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
        throw SproutError(.invalidArgument, "--role node needs --advertise http(s)://HOST[:PORT]: where the fleet reaches this node (without a port: the one it listens on)")
    }
    // API servers carry the cluster token and callers' data to the node: over TLS unless both ends are this host.
    switch (parsed.scheme, config.tls) {
    case ("https", nil):
        throw SproutError(.invalidArgument, "--advertise \(address): this node serves plain HTTP (it serves HTTPS when it listens beyond loopback, with a certificate it makes, or with --tls-cert/--tls-key)")
    case ("http", _?):
        throw SproutError(.invalidArgument, "--advertise \(address): this node serves HTTPS; advertise https://")
    case ("http", nil) where !IPAddressBytes.isLoopback(parsed.host ?? "") && !config.insecureHTTP:
        throw SproutError(.invalidArgument, "--advertise \(address): API servers would send the cluster token to this node in clear text; listen beyond loopback (HTTPS, a certificate made for it) and advertise https://, or say --insecure-http")
    default:
        break
    }
    guard config.leaseSeconds >= 1, config.leaseSeconds <= 600 else { throw SproutError(.invalidArgument, "--lease-seconds must be 1-600") }
    let catalog = try await ClusterCatalog(url: url, logger: logger)
    let runtime = lifecycle.runtime
    var serving: (@Sendable () -> String)?
    if let tls = config.tls { serving = { tls.leafPEM } }
    let membership = NodeMembership(
        catalog: catalog,
        registration: NodeMembership.registration(
            id: lifecycle.settings.node ?? "node-\(instance)", address: address, overcommit: config.cpuOvercommit, dataDirectory: data,
            runtime: [runtime.kind.rawValue, runtime.version, runtime.platform ?? ""].filter { !$0.isEmpty }.joined(separator: " "),
            certificate: config.tls?.leafPEM ?? ""),
        lease: .milliseconds(Int64(config.leaseSeconds * 1000)), lifecycle: lifecycle, logger: logger,
        listeningPort: parsed.port == nil ? listeningPort : nil, certificate: serving)
    // With the port in --advertise, the node joins now; without, once it listens (`NodeMembership.run`).
    guard parsed.port != nil else { return membership }
    do {
        try await membership.join()
    } catch {
        await catalog.shutdown()
        throw error
    }
    return membership
}

/// The object store of `--store`, checked (its bucket made if missing), or nil.
func openStore(_ config: ServerConfiguration, logger: Logger) async throws -> S3Client? {
    guard let text = config.store else { return nil }
    let location = try S3Location(parsing: text)
    let client = S3Client(location: location, credentials: try S3Credentials.load(file: config.storeCredentialsFile))
    do {
        do {
            try await client.checkBucket()
        } catch let error as SproutError where error.code == .notFound {
            try await client.createBucket()
        }
    } catch {
        await client.shutdown()
        throw SproutError(.unavailable, "the object store \(location) is not usable: \(error.sentence)")
    }
    logger.info("object store", metadata: ["store": "\(location)"])
    return client
}

/// The settings that shape sandboxes, from the server's configuration.
func settings(_ config: ServerConfiguration, instance: String) throws -> Settings {
    let data = config.dataDirectory
    var settings = Settings(dataDirectory: data, agentDirectory: data + "/agent", instance: instance)
    if config.role == .node { settings.node = "node-\(instance)" }
    if config.trustHostCA { settings.hostCABundle = try HostCertificates.bundle() }
    settings.maxPausedPerTeam = config.maxPausedPerTeam
    settings.memoryBudgetMB = config.memoryBudgetMB
    settings.minimumFreeMemoryMB = config.minimumFreeMemoryMB
    settings.pressureIdleSeconds = config.pressureIdleSeconds
    settings.defaultTimeoutSeconds = config.defaultTimeoutSeconds
    settings.minimumFreeBytes = config.minimumFreeBytes
    settings.keptImageBytes = config.keptImageBytes
    settings.poolSize = config.poolSize
    settings.poolBudget = config.poolBudget
    settings.poolIdleSeconds = config.poolIdleSeconds
    settings.insecureRegistries = Set(config.insecureRegistries)
    if let file = config.registryAuthFile {
        _ = try RegistryCredentials(file: file)  // a bad file is an error at start, not at the first pull
        settings.registryAuthFile = file
    }
    return settings
}

/// Every HTTP route.
public func makeRouter(_ services: SproutServices) -> Router<SproutContext> {
    let router = Router(context: SproutContext.self)
    router.middlewares.add(ErrorAndMetricsMiddleware())
    let tokens = services.envdTokens
    // E2B: daemon requests (by header or host name) before any route; the control plane beside /v1.
    router.middlewares.add(EnvdMiddleware(services: services, tokens: tokens, watchers: services.envdWatchers))
    // Sandbox ports by host name, before any route.
    router.middlewares.add(HostRouteMiddleware(routing: HostRouting(services: services, tokens: tokens)))
    E2BControlRoutes(services: services, tokens: tokens).register(on: router)
    E2BVolumeRoutes(services: services, tokens: tokens).register(on: router)
    router.get("health") { _, _ in
        let runtime = services.lifecycle.runtime
        return try JSONBody.response(API.Health(status: "ok", version: AgentProtocol.agentVersion, runtime: runtime.kind.rawValue,
                                                runtimeVersion: runtime.version, platform: runtime.platform))
    }
    DashboardRoutes(directory: DashboardRoutes.locate(explicit: services.config.dashboardDirectory)).register(on: router)
    router.group("metrics").add(middleware: AuthMiddleware(keys: services.keys)).get { _, _ in
        await services.lifecycle.publishStateCounts()
        services.metrics.volumeUsage(await services.volumes.usage())
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                        body: .init(byteBuffer: ByteBuffer(string: services.metrics.text())))
    }
    let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: services.keys, clusterToken: services.config.clusterToken))
    SandboxRoutes(services: services).register(on: v1)
    VolumeRoutes(volumes: services.volumes, maxUploadBytes: services.config.maxUploadBytes).register(on: v1)
    KeyRoutes(keys: services.keys).register(on: v1)
    NodeRoutes(catalog: services.membership?.catalog).register(on: v1)
    StoreRoutes(collector: services.storeCollector).register(on: v1)
    AgentRoutes(services: services, maxUploadBytes: services.config.maxUploadBytes).register(on: v1)
    PortRoutes(services: services).register(http: v1)
    TerminalRoutes(services: services).register(http: v1)
    BuildRoutes(services: services).register(on: v1)
    BlobRoutes(catalog: services.catalog, store: services.lifecycle.stores.blobs, maxUploadBytes: services.config.maxUploadBytes).register(on: v1)
    return router
}

/// Every WebSocket route.
func makeWebSocketRouter(_ services: SproutServices) -> Router<SproutContext> {
    let router = Router(context: SproutContext.self)
    router.middlewares.add(ErrorAndMetricsMiddleware())
    router.middlewares.add(HostRouteWebSocketMiddleware(routing: HostRouting(services: services, tokens: services.envdTokens)))
    let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: services.keys, clusterToken: services.config.clusterToken))
    TerminalRoutes(services: services).register(webSocket: v1)
    ExecStreamRoutes(services: services).register(webSocket: v1)
    PortRoutes(services: services).register(webSocket: v1)
    return router
}

extension SandboxHost {
    /// The real host: runsc or runc in a private mount namespace, network
    /// namespaces and nftables, addresses from the host-wide pool.
    static func real(_ config: ServerConfiguration, instance: String, logger: Logger) async throws -> SandboxHost {
        OrphanReaper.startForRuntimes()
        let data = config.dataDirectory
        // Before the runtime's mount namespace exists: only then do namespaces
        // and volumes mounted later appear in it.
        try await SandboxNetwork.shareNamespaceDirectory()
        try await VolumeStore.prepare(instance: instance)
        let runtime: OCIRuntime
        do {
            runtime = try OCIRuntime(kind: config.runtime, stateRoot: data + "/run/\(config.runtime.rawValue)", platform: config.platform,
                                     logger: logger, binary: config.runtime == .gvisor ? config.runscBinary : nil)
        } catch {
            await VolumeStore.release(instance: instance)
            throw error
        }
        logger.info("runtime", metadata: [
            "kind": "\(runtime.kind.rawValue)", "version": "\(runtime.version)",
            "platform": "\(runtime.platform ?? "-")",
        ])
        return SandboxHost(
            runtime: runtime, network: SandboxNetwork(instance: instance), addresses: NetworkPool(),
            bases: BaseImages(cacheDirectory: config.cacheDirectory ?? data + "/cache"), watchesMemory: true)
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
    // Mounted at /.sprout: every user in a sandbox runs `sudo` from it (under
    // gVisor, `sudo` is the agent's client), so the directory is not root's alone.
    try FileSystem.makeDirectories(dir)
    try sysCall("chmod \(dir)") { chmod(dir, 0o755) }
    let target = dir + "/sprout-agent"
    try FileSystem.writeAtomically(target, try Descriptor.readFile(source, limit: 256 << 20), mode: 0o755)
    return target
}

/// The layer that gives gVisor sandboxes a working `sudo`: only
/// `usr/local/bin/sudo`, a symlink to the agent (mounted at /.sprout), which
/// PATH finds before the real, setuid one in /usr/bin.
func installSudoLayer(into dir: String) throws -> String {
    let bin = dir + "/usr/local/bin"
    try FileSystem.makeDirectories(bin)
    let link = bin + "/sudo"
    if !FileSystem.exists(link) {
        try sysCall("symlink \(link)") { symlink("/.sprout/sprout-agent", link) }
    }
    return dir
}
