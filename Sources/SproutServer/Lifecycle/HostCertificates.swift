import SproutCore
import SproutSystem

/// `--trust-host-ca`: the host's trusted certificates, given to every
/// sandbox and build as its own file (like /etc/hosts: written per sandbox,
/// never part of a layer) and named by the variables TLS clients read. For a
/// host whose outbound HTTPS passes a TLS-inspecting proxy it trusts (its CA
/// in /usr/local/share/ca-certificates): `pip install`, `curl`, `git` inside
/// then work where the host's own do.
public enum HostCertificates {
    /// Inside the sandbox: directly in /etc, so no new directory enters a layer.
    public static let sandboxPath = "/etc/sprout-host-ca.pem"
    public static let hostBundle = "/etc/ssl/certs/ca-certificates.crt"
    public static let hostExtras = "/usr/local/share/ca-certificates"

    /// The variables that make OpenSSL, Python (ssl, requests, pip), curl,
    /// git and Node use the bundle.
    public static let environment: [String: String] = [
        "SSL_CERT_FILE": sandboxPath, "REQUESTS_CA_BUNDLE": sandboxPath, "PIP_CERT": sandboxPath,
        "CURL_CA_BUNDLE": sandboxPath, "GIT_SSL_CAINFO": sandboxPath, "NODE_EXTRA_CA_CERTS": sandboxPath,
    ]

    /// The host's bundle and, in case `update-ca-certificates` has not run,
    /// the local CAs after it.
    public static func bundle(system: String = hostBundle, extras: String = hostExtras) throws -> [UInt8] {
        var out: [UInt8] = []
        if FileSystem.exists(system) { out += try Descriptor.readFile(system, limit: 16 << 20) }
        for name in ((try? FileSystem.children(extras)) ?? []).sorted() where name.hasSuffix(".crt") {
            guard let bytes = try? Descriptor.readFile("\(extras)/\(name)", limit: 1 << 20) else { continue }
            if !out.isEmpty && out.last != UInt8(ascii: "\n") { out.append(UInt8(ascii: "\n")) }
            out += bytes
        }
        guard String(decoding: out, as: UTF8.self).contains("-----BEGIN CERTIFICATE-----") else {
            throw SproutError(.unavailable, "--trust-host-ca: the host has no certificates in \(system) or \(extras)/*.crt (apt-get install ca-certificates)")
        }
        return out
    }
}
