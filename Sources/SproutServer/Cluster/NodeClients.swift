import AsyncHTTPClient
import Crypto
import NIOCore
import NIOSSL
import SproutCluster
import SproutCore
import SproutSystem

/// An API server's connections to its nodes. An `http` node (on loopback,
/// or `--insecure-http`) gets plain HTTP; an `https` node gets TLS that
/// trusts what the node registered in the catalog: a self-signed
/// certificate alone (a pin, so a node needs no CA and no name; host names
/// are not checked, the pin is the stronger check), a CA-issued one by the
/// system's roots and the node's host name. One HTTP client per
/// certificate, kept until the server stops (a node that read a new
/// certificate registers it, and gets a new client).
final class NodeClients: Sendable {
    private let configuration: HTTPClient.Configuration
    let plain: HTTPClient
    private let secure = Locked<[String: (client: HTTPClient, context: NIOSSLContext)]>([:])

    init() {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.timeout.connect = .seconds(10)
        configuration.decompression = .disabled
        // A node that refuses connections is skipped at once (a create goes elsewhere).
        configuration.connectionPool.retryConnectionEstablishment = false
        self.configuration = configuration
        plain = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The client for requests to the node a placement names.
    func client(for placement: ClusterCatalog.Placement) throws -> HTTPClient {
        guard placement.address.hasPrefix("https://") else { return plain }
        return try pinned(placement).client
    }

    /// TLS for a WebSocket to the node (nil: plain).
    func context(for placement: ClusterCatalog.Placement) throws -> NIOSSLContext? {
        guard placement.address.hasPrefix("https://") else { return nil }
        return try pinned(placement).context
    }

    private func pinned(_ placement: ClusterCatalog.Placement) throws -> (client: HTTPClient, context: NIOSSLContext) {
        let key = SHA256.hash(data: Array(placement.certificate.utf8)).map { String(format: "%02x", $0) }.joined()
        if let known = secure.withLock({ $0[key] }) { return known }
        let tls = try Self.tls(for: placement)
        var configuration = self.configuration
        configuration.tlsConfiguration = tls
        let made = (client: HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration), context: try NIOSSLContext(configuration: tls))
        let (kept, extra) = secure.withLock { all -> ((client: HTTPClient, context: NIOSSLContext), HTTPClient?) in
            if let raced = all[key] { return (raced, made.client) }
            all[key] = made
            return (made, nil)
        }
        if let extra { try? extra.syncShutdown() }
        return kept
    }

    static func tls(for placement: ClusterCatalog.Placement) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.applicationProtocols = ["http/1.1"]
        guard !placement.certificate.isEmpty else { return tls }  // a CA's certificate: the system's roots
        let certificate: NIOSSLCertificate
        do {
            certificate = try NIOSSLCertificate(bytes: Array(placement.certificate.utf8), format: .pem)
        } catch {
            throw SproutError(.unavailable, "node \(placement.node) registered a certificate that cannot be read: \(error)")
        }
        if certificate.issuerName == certificate.subjectName {
            tls.trustRoots = .certificates([certificate])
            tls.certificateVerification = .noHostnameVerification
        }
        return tls
    }

    func shutdown() async {
        try? await plain.shutdown()
        for (client, _) in secure.withLock({ Array($0.values) }) { try? await client.shutdown() }
    }
}
