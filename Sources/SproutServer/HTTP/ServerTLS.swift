import Crypto
import Foundation
import Hummingbird
import HummingbirdTLS
import NIOCore
import NIOSSL
import SwiftASN1
import SproutCore
import SproutSystem
import X509

/// The HTTPS listener's certificate chain and key, read from PEM files and
/// read again by `reload` (on SIGHUP): every handshake after a reload uses
/// the new pair (through NIOSSL's per-handshake context callback), and
/// connections already open keep theirs. A reload that fails keeps the old
/// pair and says why.
public final class ServerCertificate: Sendable {
    public let certificatePath: String
    public let keyPath: String

    struct Pair: @unchecked Sendable {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var fingerprint: String
    }

    private let pair: Locked<Pair>

    public init(certificatePath: String, keyPath: String) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        pair = Locked(try Self.load(certificatePath: certificatePath, keyPath: keyPath))
    }

    /// The SHA-256 fingerprint of the certificate served now (`AB:CD:…`).
    public var fingerprint: String { pair.current.fingerprint }

    /// The certificate served now (the leaf), as PEM.
    public var leafPEM: String {
        guard let der = try? pair.current.chain.first?.toDERBytes() else { return "" }
        return PEMDocument(type: "CERTIFICATE", derBytes: der).pemString + "\n"
    }

    /// Reads the files again; returns the new fingerprint.
    @discardableResult
    public func reload() throws -> String {
        let fresh = try Self.load(certificatePath: certificatePath, keyPath: keyPath)
        pair.withLock { $0 = fresh }
        return fresh.fingerprint
    }

    static func load(certificatePath: String, keyPath: String) throws -> Pair {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw SproutError(.invalidArgument, "cannot read the TLS certificate \(certificatePath): \(error) (a PEM file, leaf first)")
        }
        guard let leaf = chain.first else { throw SproutError(.invalidArgument, "\(certificatePath) holds no certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw SproutError(.invalidArgument, "cannot read the TLS key \(keyPath): \(error) (a PEM private key)")
        }
        // A pair that does not match fails here, not at the first handshake.
        var probe = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        probe.minimumTLSVersion = .tlsv12
        do {
            _ = try NIOSSLContext(configuration: probe)
        } catch {
            throw SproutError(.invalidArgument, "the TLS key \(keyPath) does not go with the certificate \(certificatePath): \(error)")
        }
        return Pair(chain: chain, key: key, fingerprint: Self.fingerprint(der: try leaf.toDERBytes()))
    }

    /// `AB:CD:…`: SHA-256 of the certificate's DER, as browsers and openssl show it.
    public static func fingerprint(der: [UInt8]) -> String {
        SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// The listener's configuration: TLS 1.2 and up, HTTP/1.1 by ALPN (the
    /// WebSocket routes need its upgrade), and the current pair per handshake.
    func tlsConfiguration() -> TLSConfiguration {
        let now = pair.current
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: now.chain.map { .certificate($0) }, privateKey: .privateKey(now.key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.applicationProtocols = ["http/1.1"]
        let pair = self.pair
        configuration.sslContextCallback = { _, promise in
            let current = pair.current
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = current.chain.map { .certificate($0) }
            override.privateKey = .privateKey(current.key)
            promise.succeed(override)
        }
        return configuration
    }
}

/// The certificate a server makes for itself when it listens beyond
/// loopback and was given none: one self-signed ECDSA P-256 certificate
/// (its own CA, so clients trust it as a CA file or by its fingerprint),
/// valid for ten years for localhost, the loopback addresses, this host's
/// name and the address it listens on. Made once, in `DATA/tls`, and used
/// on every later start.
public enum SelfSignedCertificate {
    public static func paths(dataDirectory: String) -> (certificate: String, key: String) {
        (dataDirectory + "/tls/server.crt", dataDirectory + "/tls/server.key")
    }

    /// The pair in `dataDirectory`, made first if it is not there. True if it was made now.
    @discardableResult
    public static func ensure(dataDirectory: String, listenHost: String) throws -> Bool {
        let (certificatePath, keyPath) = paths(dataDirectory: dataDirectory)
        if FileManager.default.fileExists(atPath: certificatePath) && FileManager.default.fileExists(atPath: keyPath) { return false }
        try FileSystem.makeDirectories(dataDirectory + "/tls", mode: 0o700)
        let key = P256.Signing.PrivateKey()
        let host = ProcessInfo.processInfo.hostName
        let name = try DistinguishedName {
            OrganizationName("Sprout")
            CommonName("Sprout server \(host)")
        }
        var names: [GeneralName] = [.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                                    .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1])))]
        if !host.isEmpty && host != "localhost" { names.append(.dnsName(host)) }
        if let bytes = IPAddressBytes.parse(listenHost), !bytes.allSatisfy({ $0 == 0 }) {
            names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(bytes))))
        } else if IPAddressBytes.parse(listenHost) == nil && !listenHost.isEmpty && listenHost != host && listenHost != "localhost" {
            names.append(.dnsName(listenHost))
        }
        let subjectAlternativeNames = SubjectAlternativeNames(names)
        let publicKey = Certificate.PublicKey(key.publicKey)
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true))
            try ExtendedKeyUsage([.serverAuth])
            subjectAlternativeNames
            SubjectKeyIdentifier(hash: publicKey)
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(10 * 365 * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(key))
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        let pem = PEMDocument(type: "CERTIFICATE", derBytes: serializer.serializedBytes).pemString
        try FileSystem.writeAtomically(keyPath, key.pemRepresentation + "\n", mode: 0o600)
        try FileSystem.writeAtomically(certificatePath, pem + "\n", mode: 0o644)
        return true
    }
}

