import Crypto
import Foundation
import Glibc
import SwiftASN1
import SproutAPI
import SproutClient
import SproutCore
import SproutSystem
import Testing
import X509

/// A CA made by the test, and server certificates it signs for 127.0.0.1 and localhost.
struct TestCA {
    let directory: String
    let key = P256.Signing.PrivateKey()
    let name: DistinguishedName
    let certificate: Certificate

    init(directory: String) throws {
        self.directory = directory
        name = try DistinguishedName { CommonName("Sprout test CA") }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true))
        }
        certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey), notValidBefore: Date() - 3600, notValidAfter: Date() + 86_400,
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: .init(key))
        try Self.write(certificate, to: directory + "/ca.crt")
    }

    var caFile: String { directory + "/ca.crt" }

    static func write(_ certificate: Certificate, to path: String) throws {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        try FileSystem.writeAtomically(path, PEMDocument(type: "CERTIFICATE", derBytes: serializer.serializedBytes).pemString + "\n", mode: 0o644)
    }

    static func fingerprint(_ certificate: Certificate) throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return SHA256.hash(data: serializer.serializedBytes).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// A server certificate and key named `name` (`NAME.crt`, `NAME.key`); returns its fingerprint.
    @discardableResult
    func issue(_ name: String) throws -> String {
        let serverKey = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName("Sprout test server \(name)") }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth])
            SubjectAlternativeNames([.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
        }
        let leaf = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(serverKey.publicKey), notValidBefore: Date() - 3600, notValidAfter: Date() + 86_400,
            issuer: self.name, subject: subject, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions, issuerPrivateKey: .init(key))
        try Self.write(leaf, to: "\(directory)/\(name).crt")
        try FileSystem.writeAtomically("\(directory)/\(name).key", serverKey.pemRepresentation + "\n", mode: 0o600)
        return try Self.fingerprint(leaf)
    }
}

extension Integration {
    @Suite("TLS")
    struct TLSTests {
        static func copy(_ from: String, to: String) throws {
            try FileSystem.writeAtomically(to, try String(contentsOfFile: from, encoding: .utf8), mode: 0o600)
        }

        static func scratch() throws -> String {
            return try FileSystem.makeTemporaryDirectory(prefix: "sprout-tls")
        }

        @Test("HTTPS with a CA the test made: the CLI with it works, without it fails naming the fingerprint, with a wrong pin fails and the right one works; a key over plain HTTP beyond loopback is refused; terminal, streamed exec and port preview over TLS; SIGHUP swaps the certificate with the server up; the e2b SDK with SSL_CERT_FILE")
        func https() async throws {
            let dir = try Self.scratch()
            defer { try? FileSystem.removeTree(dir) }
            let ca = try TestCA(directory: dir)
            let first = try ca.issue("one")
            let second = try ca.issue("two")
            // The server reads its pair from these paths; the reload below swaps them.
            try Self.copy(dir + "/one.crt", to: dir + "/server.crt")
            try Self.copy(dir + "/one.key", to: dir + "/server.key")
            try await ServerHarness.with(extraArgs: ["--tls-cert", dir + "/server.crt", "--tls-key", dir + "/server.key"]) {
                (server: ServerHarness) async throws in
                server.caFile = ca.caFile
                #expect(server.scheme == "https")
                let cli = CLI(server: server)
                let env = ["SPROUT_API_URL=\(server.url)"]

                let trusted = try await cli.run(["sandbox", "list", "--ca-file", ca.caFile], env: env)
                #expect(trusted.status == 0, "with the CA: \(trusted.stderr)")
                let untrusted = try await cli.run(["sandbox", "list"], env: env)
                #expect(untrusted.status != 0 && untrusted.stderr.contains(first) && untrusted.stderr.contains("--ca-file"),
                        "without the CA: a clear error naming the fingerprint: \(untrusted.stderr)")
                let wrongPin = try await cli.run(["sandbox", "list", "--fingerprint", second], env: env)
                #expect(wrongPin.status != 0 && wrongPin.stderr.contains("not the pinned"), "a wrong pin: \(wrongPin.stderr)")
                // A pin is for a self-signed certificate (the right pin works: the next test); a CA's needs --ca-file.
                let caIssuedPin = try await cli.run(["sandbox", "list", "--fingerprint", first], env: env)
                #expect(caIssuedPin.status != 0 && caIssuedPin.stderr.contains("--ca-file"), "\(caIssuedPin.stderr)")
                // 192.0.2.1 (TEST-NET-1) is not this machine: the key is never sent.
                let plain = try await cli.run(["sandbox", "list"], env: ["SPROUT_API_URL=http://192.0.2.1:7070"])
                #expect(plain.status != 0 && plain.stderr.contains("refusing to send an API key over plain HTTP"), "\(plain.stderr)")

                // The Swift client over TLS: exec, a terminal, a streamed exec, a port preview.
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                #expect(try await api.run(sandbox.id, API.Exec(shell: "echo over tls")).stdoutText == "over tls\n")
                let ws = try await api.terminal(sandbox.id, cols: 80, rows: 24, command: "/bin/sh")
                try await ws.send(.binary(Array("echo hi-$((40+2))\n".utf8)))
                var seen = ""
                while !seen.contains("hi-42"), let message = try await ws.receive() {
                    if case .binary(let bytes) = message { seen += String(decoding: bytes, as: UTF8.self) }
                }
                #expect(seen.contains("hi-42"), "the terminal answered over wss: \(seen)")
                ws.close()
                let streamed = try await cli.run(["sandbox", "exec", sandbox.id, "--", "sh", "-c", "cat | tr a-z A-Z"],
                                                 env: env + ["SPROUT_CA_FILE=\(ca.caFile)"], input: "streamed\n")
                #expect(streamed.status == 0 && streamed.stdout == "STREAMED\n", "\(streamed.stdout) \(streamed.stderr)")
                _ = try await api.run(sandbox.id, API.Exec(shell: "mkdir -p /www && echo page > /www/index.html && httpd -p 8080 -h /www"))
                var preview: (Int, [UInt8]) = (0, [])
                try await eventually {
                    preview = (try? await api.preview(sandbox.id, port: 8080, path: "/index.html")) ?? (0, [])
                    return preview.0 == 200
                }
                #expect(preview.0 == 200 && preview.1 == Array("page\n".utf8))

                // SIGHUP: the second certificate is served from the next handshake on, by the same process.
                let pid = server.pid
                try Self.copy(dir + "/two.crt", to: dir + "/server.crt")
                try Self.copy(dir + "/two.key", to: dir + "/server.key")
                kill(pid, SIGHUP)
                // Named by fingerprint in the untrusted-certificate error.
                func served() async throws -> String {
                    let out = try await cli.run(["sandbox", "list"], env: env).stderr
                    return out.contains(second) ? second : out.contains(first) ? first : out
                }
                let reloaded = try await eventually { try await served() == second }
                #expect(reloaded, "the new certificate is served after SIGHUP")
                #expect(kill(pid, 0) == 0 && server.pid == pid, "the same server process")
                #expect(try await api.run(sandbox.id, API.Exec(shell: "echo still")).stdoutText == "still\n", "the CA still vouches for it")
                // A broken pair on SIGHUP keeps the old one.
                try FileSystem.writeAtomically(dir + "/server.key", "not a key\n", mode: 0o600)
                kill(pid, SIGHUP)
                // The server says when it has read the pair (and refused it).
                #expect(try await eventually { server.log.contains("TLS certificate not reloaded") })
                #expect(try await served() == second, "a bad reload keeps the served pair")
                _ = try await api.killSandbox(sandbox.id)

                // The e2b SDK, trusting the CA the usual Python way; without it, it refuses (the check is real).
                if FileManager.default.isExecutableFile(atPath: LongIntegration.E2BTests.python) {
                    let script = """
                        from e2b import Sandbox
                        s = Sandbox.create(template="empty")
                        try:
                            s.files.write("/tmp/tls.txt", "e2b over tls")
                            print(s.files.read("/tmp/tls.txt"))
                        finally:
                            s.kill()
                        """
                    let base = ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(server.url)", "E2B_SANDBOX_URL=\(server.url)", "E2B_API_KEY=\(server.adminKey)"]
                    let withCA = try await CLI.runProcess([LongIntegration.E2BTests.python, "-c", script], env: base + ["SSL_CERT_FILE=\(ca.caFile)"])
                    #expect(withCA.status == 0 && withCA.stdout.contains("e2b over tls"), "\(withCA.stdout) \(withCA.stderr.suffix(2000))")
                    let withoutCA = try await CLI.runProcess([LongIntegration.E2BTests.python, "-c", script], env: base)
                    #expect(withoutCA.status != 0 && ["CERTIFICATE_VERIFY_FAILED", "UnknownIssuer"].contains(where: withoutCA.stderr.contains),
                            "the certificate is checked: \(withoutCA.stderr.suffix(1000))")
                } else {
                    Issue.record("no \(LongIntegration.E2BTests.python): run `make test` (scripts/install-deps.sh makes it)")
                }
                let left = try await api.sandboxes()
                #expect(left.isEmpty)
                for sandbox in left { _ = try? await api.killSandbox(sandbox.id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("beyond loopback without a certificate the server makes one, prints its fingerprint and CA file, and serves HTTPS with it; --insecure-http serves plain HTTP; bad TLS flags are refused")
        func selfSigned() async throws {
            try await ServerHarness.with(extraArgs: ["--host", "0.0.0.0"]) { (server: ServerHarness) async throws in
                #expect(server.scheme == "https")
                let made = server.data + "/tls/server.crt"
                let pem = try String(contentsOfFile: made, encoding: .utf8)
                let certificate = try Certificate(pemEncoded: pem)
                let fingerprint = try TestCA.fingerprint(certificate)
                #expect(server.startupOutput.contains("SHA-256 fingerprint: \(fingerprint)") && server.startupOutput.contains(made),
                        "\(server.startupOutput)")
                #expect(try await server.client.health().status == "ok", "trusted by its own certificate as the CA file")
                let pinned = try SproutAPIClient(url: server.url, apiKey: server.adminKey, tls: ClientTLS(fingerprint: fingerprint))
                #expect(try await pinned.sandboxes().isEmpty, "trusted by the printed fingerprint")
                let cli = CLI(server: server)
                let byPin = try await cli.run(["sandbox", "list", "--fingerprint", fingerprint.replacingOccurrences(of: ":", with: "").lowercased()],
                                              env: ["SPROUT_API_URL=\(server.url)"])
                #expect(byPin.status == 0, "the CLI with the right pin: \(byPin.stderr)")
                let wrong = String(fingerprint.reversed())
                let byWrongPin = try await cli.run(["sandbox", "list", "--fingerprint", wrong], env: ["SPROUT_API_URL=\(server.url)"])
                #expect(byWrongPin.status != 0 && byWrongPin.stderr.contains("not the pinned"), "\(byWrongPin.stderr)")
                // A terminal over wss to the self-signed server, trusted by the pin.
                let sandbox = try await pinned.createSandbox(API.CreateSandbox(env: "empty"))
                let ws = try await pinned.terminal(sandbox.id, cols: 80, rows: 24, command: "/bin/sh")
                try await ws.send(.binary(Array("echo pin-$((6*7))\n".utf8)))
                var seen = ""
                while !seen.contains("pin-42"), let message = try await ws.receive() {
                    if case .binary(let bytes) = message { seen += String(decoding: bytes, as: UTF8.self) }
                }
                #expect(seen.contains("pin-42"))
                ws.close()
                _ = try await pinned.killSandbox(sandbox.id)
                let system = try SproutAPIClient(url: server.url, apiKey: server.adminKey)
                await #expect(throws: SproutError.self) { _ = try await system.sandboxes() }
                await expectNoLeftovers(server.data)
            }
            try await ServerHarness.with(extraArgs: ["--host", "0.0.0.0", "--insecure-http"]) { (server: ServerHarness) async throws in
                #expect(server.scheme == "http")
                #expect(try await server.client.health().status == "ok")
            }
            for bad in [["--tls-cert", "/nonexistent.crt"], ["--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"],
                        ["--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname", "--insecure-http"]] {
                let out = try await CLI.runProcess([ServerHarness.binary, "server", "--data", "/tmp/sprout-tls-never", "--port", "0"] + bad)
                #expect(out.status != 0 && out.stderr.lowercased().contains("tls"), "\(bad): \(out.stderr)")
                #expect(!FileManager.default.fileExists(atPath: "/tmp/sprout-tls-never/sprout.db"), "a refused start made nothing")
            }
        }
    }
}
