#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import AsyncHTTPClient
import Crypto
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import SproutCore

/// How the client trusts an HTTPS server: the system's trust store (the
/// default), a CA file, or a pinned SHA-256 fingerprint of the certificate
/// the server presents (as `sprout server` prints for the one it makes
/// itself). A pin needs a self-signed certificate: it is fetched, checked
/// against the pin, and then trusted alone (host names are not checked:
/// the pin is the stronger check).
public struct ClientTLS: Sendable, Equatable, Codable {
    public var caFile: String?
    public var fingerprint: String?

    public init(caFile: String? = nil, fingerprint: String? = nil) {
        self.caFile = caFile
        self.fingerprint = fingerprint
    }

    public var isDefault: Bool { caFile == nil && fingerprint == nil }

    /// `AB:CD:…`, from any spelling (colons or not, any case).
    public static func normalize(_ fingerprint: String) throws -> String {
        let hex = fingerprint.filter { $0 != ":" }.uppercased()
        guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit }) else {
            throw SproutError(.invalidArgument, "a fingerprint is 64 hex digits (SHA-256, colons optional): \(fingerprint)")
        }
        return stride(from: 0, to: 64, by: 2).map { i in
            String(hex[hex.index(hex.startIndex, offsetBy: i)..<hex.index(hex.startIndex, offsetBy: i + 2)])
        }.joined(separator: ":")
    }

    public static func fingerprint(_ certificate: NIOSSLCertificate) throws -> String {
        SHA256.hash(data: try certificate.toDERBytes()).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// The TLS configuration for `host:port`: with a pin, the server's
    /// certificate is fetched first and must match it.
    func configuration(host: String, port: Int) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile {
            guard FileManager.default.fileExists(atPath: caFile) else { throw SproutError(.notFound, "no CA file at \(caFile)") }
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw SproutError(.invalidArgument, "cannot read the CA file \(caFile): \(error) (PEM certificates)")
            }
        }
        if let fingerprint {
            let pin = try Self.normalize(fingerprint)
            let presented = try TLSProbe.blockingPeerCertificate(host: host, port: port)
            let seen = try Self.fingerprint(presented)
            guard seen == pin else {
                throw SproutError(.forbidden, "the server at \(host):\(port) presents a certificate with SHA-256 fingerprint \(seen), not the pinned \(pin): refusing to connect")
            }
            // Trusted alone, as its own root: so it must be self-signed.
            guard presented.issuerName == presented.subjectName else {
                throw SproutError(.invalidArgument,
                    "a pinned fingerprint works for a self-signed certificate (as sprout server makes for itself); the one at \(host):\(port) was issued by a CA: give that CA with --ca-file instead")
            }
            configuration.trustRoots = .certificates([presented])
            configuration.certificateVerification = .noHostnameVerification
        }
        return configuration
    }

    /// One HTTP client per trust setting, for the life of the process
    /// (async-http-client's clients must be shut down, never dropped).
    private static let clients = NIOLockedValueBox<[String: HTTPClient]>([:])

    static func httpClient(for configuration: TLSConfiguration, key: String) -> HTTPClient {
        clients.withLockedValue { all in
            if let client = all[key] { return client }
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: SproutAPIClient.settings(tls: configuration))
            all[key] = client
            return client
        }
    }
}

/// A TLS handshake that trusts anything, to see which certificate a server
/// presents (for a pin, and for the message when it is not trusted).
enum TLSProbe {
    final class HandshakeWaiter: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<Void>
        init(done: EventLoopPromise<Void>) { self.done = done }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent { done.succeed(()) }
            context.fireUserInboundEventTriggered(event)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { done.fail(error) }
        func channelInactive(context: ChannelHandlerContext) {
            done.fail(SproutError(.unavailable, "the connection closed during the TLS handshake"))
        }
    }

    static func peerCertificate(host: String, port: Int) -> EventLoopFuture<NIOSSLCertificate> {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        do {
            var settings = TLSConfiguration.makeClientConfiguration()
            settings.certificateVerification = .none
            let context = try NIOSSLContext(configuration: settings)
            let done = loop.makePromise(of: Void.self)
            let isAddress = host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
            return ClientBootstrap(group: loop)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: context, serverHostname: isAddress ? nil : host))
                        try channel.pipeline.syncOperations.addHandler(HandshakeWaiter(done: done))
                    }
                }
                .connect(host: host, port: port)
                .flatMap { channel in
                    done.futureResult
                        .flatMap { channel.nioSSL_peerCertificate() }
                        .flatMapThrowing { certificate -> NIOSSLCertificate in
                            guard let certificate else { throw SproutError(.unavailable, "the server at \(host):\(port) presented no certificate") }
                            return certificate
                        }
                        .always { _ in channel.close(promise: nil) }
                }
        } catch {
            return loop.makeFailedFuture(error)
        }
    }

    /// For configuration, which is not async (CLI start-up only).
    static func blockingPeerCertificate(host: String, port: Int) throws -> NIOSSLCertificate {
        do {
            return try peerCertificate(host: host, port: port).wait()
        } catch let error as SproutError {
            throw error
        } catch {
            throw SproutError(.unavailable, "cannot reach \(host):\(port) over TLS to check its certificate: \(error)")
        }
    }
}
