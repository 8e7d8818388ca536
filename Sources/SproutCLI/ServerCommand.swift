import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import SproutCore
import SproutSystem
import SproutRuntime
import SproutClient
import SproutServer
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout server`: runs the API server on its embedded defaults.
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server", abstract: "Run the Sprout server.")

    @Option(help: "Data directory (default /var/lib/sprout as root, else ~/.sprout).")
    var data: String?
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0 picks a free one).") var port = 7070
    @Option(help: "Sandbox runtime: gvisor or runc.") var runtime = "gvisor"
    @Option(help: "gVisor's platform: ptrace (the default: processes start and most programs run faster here) or systrap (tight system-call loops run faster).")
    var platform = GVisorPlatform.ptrace.rawValue
    @Option(help: "The runsc binary to use (default: runsc on PATH).") var runsc: String?
    @Option(help: "Cache for built base envs (default DATA/cache).") var cache: String?
    @Option(help: "The statically linked sprout-agent to inject.") var agent: String?
    @Option(help: "The built-in envs' folders, each a sprout.toml built on first use (default: envs/ of the source checkout, else /usr/local/share/sprout/envs).")
    var envs: String?
    @Flag(inversion: .prefixedNo, help: "Build the built-in envs (code-interpreter-v1) in the background from the start; without it, a create asks for the build.")
    var prebuildEnvs = true
    @Option(help: "The web dashboard's files (default: dashboard/ of the source checkout, else /usr/local/share/sprout/dashboard).")
    var dashboard: String?
    @Option(help: "Default sandbox timeout in seconds.") var defaultTimeout = 300
    @Option(help: "Log level: trace, debug, info, notice, warning, error.") var logLevel = "info"
    @Option(help: "Refuse creates below this much free disk space (MiB).") var minFreeMb = 256
    @Option(help: "Keep the newest memory images whole, up to this much disk (MiB), so a resume here need not reassemble them (0: never).")
    var keptImagesMb = 64
    @Option(help: "Sandboxes kept started ahead of demand per env in use (0: none).") var poolSize = 2
    @Option(help: "Pooled sandboxes in all, across envs.") var poolBudget = 8
    @Option(help: "An env keeps its pool this many seconds after the last create that could use it.") var poolIdle = 600
    @Option(help: "Paused sandboxes a team may hold (they cost disk, not memory).") var maxPausedPerTeam = 1000
    @Option(help: "Sandbox ports are reached at {port}-{sandboxID}.DOMAIN (default localhost:PORT: no DNS needed here).")
    var domain: String?
    @Option(help: "Serve HTTPS with this certificate chain (PEM, leaf first); SIGHUP reads it again.") var tlsCert: String?
    @Option(help: "The private key of --tls-cert (PEM).") var tlsKey: String?
    @Flag(help: "Serve plain HTTP on a non-loopback address (API keys then cross the network in clear text).") var insecureHttp = false
    @Option(help: "The sandboxes' memory limits may add up to this (MiB; 0: no budget). Past it, idle sandboxes are paused to make room, else the create is refused.")
    var memoryBudgetMb = 0
    @Option(help: "When the host has less memory available than this (MiB; 0: never), idle sandboxes are paused.")
    var minFreeMemoryMb = 512
    @Option(help: "Only sandboxes idle (no request, no open stream) this many seconds are paused for memory.")
    var pressureIdle = 30
    @Flag(help: "Give every sandbox and build the host's trusted certificates (for a host behind a TLS-inspecting proxy).")
    var trustHostCa = false
    @Option(name: .customLong("insecure-registry"), help: "Pull images from this registry (HOST:PORT) over plain HTTP; repeatable.")
    var insecureRegistries: [String] = []
    @Option(help: "Registry logins for image pulls, in docker's config.json format (default: none; images are pulled anonymously).")
    var registryAuth: String?
    @Option(help: "Keep paused sandboxes' memory images and writable layers in this object store too: s3://BUCKET[/PREFIX]?endpoint=URL&region=REGION (credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --store-credentials).")
    var store: String?
    @Option(help: "A file of AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines for --store.") var storeCredentials: String?
    @Option(name: .customLong("cache-gb"), help: "With --store: keep at most this many GiB of copies of what the store holds (memory images, env layers); the least recently used go first and are fetched again when needed.")
    var cacheGB: Double?
    @Option(help: "all: one host on its own; node: a node of the fleet whose catalog --catalog names; api: an API server of that fleet.") var role = "all"
    @Option(help: "A file holding the secret a fleet's API servers and nodes share (16 characters or more), for --role node and api.") var clusterToken: String?
    @Option(help: "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=require]: for --role node and api, the fleet's catalog; for --role all, the server's own catalog (instead of SQLite in the data directory).") var catalog: String?
    @Option(help: "Where the fleet reaches this node (http(s)://HOST:PORT), for --role node.") var advertise: String?
    @Option(help: "Seconds a node's lease in the fleet's catalog lasts; one not renewed in time is lost, and fences itself.") var leaseSeconds = 10.0
    @Option(help: "A node offers its cores times this to sandboxes' CPU limits.") var cpuOvercommit = 4.0

    func run() async throws {
        guard let kind = RuntimeKind(rawValue: runtime) else {
            throw SproutError(.invalidArgument, "unknown runtime '\(runtime)' (use gvisor or runc)")
        }
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw SproutError(.invalidArgument, "unknown log level '\(logLevel)'")
        }
        guard getuid() == 0 || role == ServerRole.api.rawValue else {
            throw SproutError(.forbidden, "sprout server needs root (it creates namespaces, mounts and cgroups)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var config = ServerConfiguration(dataDirectory: data ?? ServerConfiguration.defaultDataDirectory)
        config.host = host
        config.port = port
        config.runtime = kind
        guard let platform = GVisorPlatform(rawValue: platform) else {
            throw SproutError(.invalidArgument, "unknown gVisor platform '\(self.platform)' (use systrap or ptrace)")
        }
        config.platform = platform
        config.runscBinary = runsc
        config.cacheDirectory = cache
        config.agentBinary = agent
        config.envsDirectory = envs
        config.prebuildEnvs = prebuildEnvs
        config.dashboardDirectory = dashboard
        config.defaultTimeoutSeconds = defaultTimeout
        config.minimumFreeBytes = Int64(minFreeMb) << 20
        guard (0...1 << 20).contains(keptImagesMb) else { throw SproutError(.invalidArgument, "--kept-images-mb must be 0-1048576") }
        config.keptImageBytes = Int64(keptImagesMb) << 20
        guard (0...64).contains(poolSize) else { throw SproutError(.invalidArgument, "--pool-size must be 0-64") }
        config.poolSize = poolSize
        guard (0...256).contains(poolBudget) else { throw SproutError(.invalidArgument, "--pool-budget must be 0-256") }
        guard (1...86_400).contains(poolIdle) else { throw SproutError(.invalidArgument, "--pool-idle must be 1-86400 seconds") }
        config.poolBudget = poolBudget
        config.poolIdleSeconds = Double(poolIdle)
        config.trustHostCA = trustHostCa
        guard (0...1_000_000).contains(maxPausedPerTeam) else { throw SproutError(.invalidArgument, "--max-paused-per-team must be 0-1000000") }
        config.maxPausedPerTeam = maxPausedPerTeam
        guard (0...16_777_216).contains(memoryBudgetMb) else { throw SproutError(.invalidArgument, "--memory-budget-mb must be 0-16777216") }
        guard (0...16_777_216).contains(minFreeMemoryMb) else { throw SproutError(.invalidArgument, "--min-free-memory-mb must be 0-16777216") }
        guard (0...86_400).contains(pressureIdle) else { throw SproutError(.invalidArgument, "--pressure-idle must be 0-86400 seconds") }
        config.memoryBudgetMB = memoryBudgetMb
        config.minimumFreeMemoryMB = minFreeMemoryMb
        config.pressureIdleSeconds = Double(pressureIdle)
        config.insecureRegistries = insecureRegistries
        config.registryAuthFile = registryAuth
        guard let role = ServerRole(rawValue: role) else {
            throw SproutError(.invalidArgument, "unknown role '\(self.role)' (use all, node or api)")
        }
        guard role != .all || (advertise == nil && clusterToken == nil) else {
            throw SproutError(.invalidArgument, "--advertise and --cluster-token are for --role node or api")
        }
        if let clusterToken {
            let text = (try? String(contentsOfFile: clusterToken, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            guard let text, text.count >= 16, !text.contains(where: { $0.isNewline }) else {
                throw SproutError(.invalidArgument, "--cluster-token \(clusterToken): a readable file holding one secret of 16 characters or more")
            }
            config.clusterToken = text
        }
        guard cpuOvercommit >= 0.1 && cpuOvercommit <= 64 else { throw SproutError(.invalidArgument, "--cpu-overcommit must be 0.1-64") }
        config.role = role
        config.catalog = catalog
        config.advertise = advertise
        config.insecureHTTP = insecureHttp
        config.leaseSeconds = leaseSeconds
        config.cpuOvercommit = cpuOvercommit
        config.store = store
        config.storeCredentialsFile = storeCredentials
        if let cacheGB {
            guard store != nil else { throw SproutError(.invalidArgument, "--cache-gb bounds the copies of what --store holds: give --store too") }
            guard cacheGB >= 0 && cacheGB <= 1_048_576 else { throw SproutError(.invalidArgument, "--cache-gb must be 0-1048576") }
            config.cacheBytes = Int64(cacheGB * 1_073_741_824)
        }
        if let domain {
            guard !domain.isEmpty, domain.count <= 200, !domain.contains("/"), !domain.hasPrefix(".") else {
                throw SproutError(.invalidArgument, "--domain takes a host name (and port), such as sandboxes.example.com")
            }
            config.domain = domain.lowercased()
        }
        let logger = Logger(label: "sprout")
        // A peer or child that goes away mid-write is EPIPE, never the end of
        // the server (NIO ignores it too, but only once it opens a socket).
        ignoreSIGPIPE()
        config.tls = try tlsCertificate(dataDirectory: config.dataDirectory)
        let host = self.host
        let scheme = config.tls == nil ? "http" : "https"
        if config.role == .api {
            let (app, parts) = try await buildAPIApplication(config, logger: logger) { port in
                FileHandle.standardOutput.write(Data("sprout server listening on \(scheme)://\(host):\(port)\n".utf8))
            }
            if let key = parts.newAdminKey {
                FileHandle.standardOutput.write(Data("admin API key of the fleet (shown once; also saved to \(config.adminKeyPath)): \(key)\n".utf8))
            }
            try await app.runService()
            await parts.shutdown()
            return
        }
        let (app, parts) = try await buildApplication(config, logger: logger) { port in
            FileHandle.standardOutput.write(Data("sprout server listening on \(scheme)://\(host):\(port)\n".utf8))
        }
        // SIGHUP reads the certificate again (handshakes after it use the new one).
        signal(SIGHUP, SIG_IGN)
        let hangUp = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        let certificate = config.tls
        hangUp.setEventHandler {
            guard let certificate else {
                logger.notice("SIGHUP: no TLS certificate to reload (plain HTTP)")
                return
            }
            do {
                let fingerprint = try certificate.reload()
                logger.notice("SIGHUP: TLS certificate reloaded", metadata: ["sha256": "\(fingerprint)"])
            } catch {
                logger.error("SIGHUP: TLS certificate not reloaded; the old one stays", metadata: ["error": "\(error)"])
            }
        }
        hangUp.resume()
        defer { hangUp.cancel() }
        // Request metrics go through the Metrics API into the server's registry.
        MetricsSystem.bootstrap(parts.metrics.factory)
        if let key = parts.newAdminKey {
            FileHandle.standardOutput.write(Data("admin API key (shown once; also saved to \(config.adminKeyPath)): \(key)\n".utf8))
        }
        try await app.runService()
        await parts.shutdown()
    }

    /// The certificate to serve: the one given; else, beyond loopback and
    /// without --insecure-http, one made for this server (printed with its
    /// fingerprint); else none.
    func tlsCertificate(dataDirectory: String) throws -> ServerCertificate? {
        switch (tlsCert, tlsKey) {
        case (let cert?, let key?):
            guard !insecureHttp else { throw SproutError(.invalidArgument, "--insecure-http and --tls-cert contradict each other") }
            return try ServerCertificate(certificatePath: cert, keyPath: key)
        case (nil, nil):
            break
        default:
            throw SproutError(.invalidArgument, "--tls-cert and --tls-key go together")
        }
        if IPAddressBytes.isLoopback(host) { return nil }
        if insecureHttp {
            FileHandle.standardError.write(Data("warning: plain HTTP on \(host) (--insecure-http): API keys cross the network in clear text\n".utf8))
            return nil
        }
        let made = try SelfSignedCertificate.ensure(dataDirectory: dataDirectory, listenHost: host)
        let (cert, key) = SelfSignedCertificate.paths(dataDirectory: dataDirectory)
        let certificate = try ServerCertificate(certificatePath: cert, keyPath: key)
        FileHandle.standardOutput.write(Data("""
            TLS: \(made ? "made a self-signed certificate" : "using the self-signed certificate") (listening beyond loopback without --tls-cert)
              CA file for clients: \(cert)
              SHA-256 fingerprint: \(certificate.fingerprint)
              sprout login --api-url https://HOST:\(port) --ca-file \(cert)   (or --fingerprint \(certificate.fingerprint))

            """.utf8))
        return certificate
    }
}

/// `sprout login`: saves the API URL and key for later commands.
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "login", abstract: "Save the API URL and key.")

    @Option(name: .customLong("api-url")) var apiURL: String
    @Option(name: .customLong("api-key")) var apiKey: String
    @Option(name: .customLong("ca-file"), help: "Trust the HTTPS server by this CA certificate (PEM) instead of the system's store.")
    var caFile: String?
    @Option(help: "Trust the HTTPS server by the SHA-256 fingerprint of its (self-signed) certificate, as sprout server prints it.")
    var fingerprint: String?
    @Flag(help: "Allow sending the key over plain HTTP to a host that is not loopback.") var insecure = false

    func run() async throws {
        let tls = ClientTLS(caFile: caFile.map { URL(fileURLWithPath: $0).standardizedFileURL.path }, fingerprint: try fingerprint.map(ClientTLS.normalize))
        let client = try SproutAPIClient(url: apiURL, apiKey: apiKey, tls: tls)
        try ClientOptions.refusePlainHTTP(client, insecure: insecure)
        _ = try await client.sandboxes()  // proves both the URL and the key
        try ClientConfigFile(apiURL: apiURL, apiKey: apiKey, caFile: tls.caFile, fingerprint: tls.fingerprint, insecure: insecure ? true : nil).save()
        print("logged in to \(apiURL); settings saved to \(ClientConfigFile.path)")
    }
}
