import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutStore
import SproutSystem

/// A registry of Sprout's own making for tests and `sprout bench`: Debian's
/// `docker-registry` (CNCF distribution) on a free loopback port, its
/// storage in `directory`, with basic auth when given a login, or bearer
/// tokens from a token service. `stop()` ends it; the caller removes the
/// directory.
public final class LocalRegistry: Sendable {
    public let directory: String
    public let port: Int
    let pid: pid_t
    public var host: String { "127.0.0.1:\(port)" }
    public var storage: String { directory + "/storage" }
    public var logPath: String { directory + "/registry.log" }

    /// Bearer tokens (JWTs) from the service at `realm`, signed by the key of the PEM certificate `certificate`.
    public struct TokenAuth: Sendable {
        public var realm: String
        public var service: String
        public var issuer: String
        public var certificate: String
        public init(realm: String, service: String, issuer: String, certificate: String) {
            (self.realm, self.service, self.issuer, self.certificate) = (realm, service, issuer, certificate)
        }
    }

    public init(directory: String, login: RegistryCredentials.Login? = nil, token: TokenAuth? = nil) async throws {
        self.directory = directory
        var auth = ""
        if let token {
            auth = "auth:\n  token:\n    realm: \(token.realm)\n    service: \(token.service)\n    issuer: \(token.issuer)\n"
                + "    rootcertbundle: \(token.certificate)\n"
        } else if let login {
            let out = try await HostCommand.capture(["htpasswd", "-Bbn", login.username, login.password])
            guard out.status == 0 else { throw SproutError(.unavailable, "htpasswd failed (apt-get install apache2-utils): \(out.stderr)") }
            try FileSystem.writeAtomically(directory + "/htpasswd", out.stdout, mode: 0o600)
            auth = "auth:\n  htpasswd:\n    realm: sprout\n    path: \(directory)/htpasswd\n"
        }
        try FileSystem.writeAtomically(directory + "/config.yml", """
            version: 0.1
            log:
              level: info
            storage:
              filesystem:
                rootdirectory: \(directory)/storage
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:0

            """ + auth, mode: 0o600)
        let log = open(directory + "/registry.log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw SproutError.system("open registry.log") }
        defer { close(log) }
        var options = Spawn.Options()
        options.stdout = log
        options.stderr = log
        pid = try Spawn.spawn(path: "/usr/bin/docker-registry", argv: ["docker-registry", "serve", directory + "/config.yml"],
                              env: HostCommand.environment, options: options)
        // It says which port it took ("listening on 127.0.0.1:N"), or exits.
        let (found, text) = try await Spawn.awaitLog(directory + "/registry.log", of: pid, within: 60) { text in
            text.range(of: "listening on 127.0.0.1:").flatMap { Int(text[$0.upperBound...].prefix { $0.isNumber }) }
        }
        port = found ?? 0
        guard let found, found > 0 else {
            Spawn.terminate(pid, graceSeconds: 5)
            throw SproutError(.unavailable, "docker-registry did not start: \(text.suffix(2000))")
        }
    }

    /// Pushes the OCI layout image `layout:tag` as `repository:tag`, with skopeo.
    public func push(layout: String, tag: String, as repository: String, login: RegistryCredentials.Login? = nil) async throws {
        let creds = login.map { ["--dest-creds", "\($0.username):\($0.password)"] } ?? []
        let out = try await HostCommand.capture(
            ["skopeo", "copy", "--insecure-policy", "--dest-tls-verify=false"] + creds + ["oci:\(layout):\(tag)", "docker://\(host)/\(repository):\(tag)"],
            timeout: .seconds(600))
        guard out.status == 0 else { throw SproutError(.internal, "skopeo copy failed: \(out.stderr)") }
    }

    public func stop() {
        Spawn.terminate(pid, graceSeconds: 10)
    }
}

/// Writes images as an OCI layout, as a build tool would: each layer a
/// gzip tar of a directory, a config, a manifest, and an index naming the
/// image by tag (other tags in the layout are kept).
public enum OCILayoutWriter {
    /// Writes the image whose layers are the directories `layers` (bottom
    /// first) with `config` (the image config's `config` object) into
    /// `layout` under `tag`; returns the manifest's digest.
    @discardableResult
    public static func write(layout: String, tag: String, config: [String: Any], layers: [String]) async throws -> String {
        try FileSystem.makeDirectories(layout + "/blobs/sha256")
        func put(_ path: String) throws -> (digest: String, size: Int64) {
            let hex = try LocalFiles.sha256(path)
            var st = stat()
            guard stat(path, &st) == 0 else { throw SproutError.system(path) }
            let target = "\(layout)/blobs/sha256/\(hex)"
            if !FileSystem.exists(target) { try sysCall("rename \(path)") { rename(path, target) } } else { unlink(path) }
            return ("sha256:" + hex, Int64(st.st_size))
        }
        func putJSON(_ object: Any) throws -> (digest: String, size: Int64) {
            let path = layout + "/.doc-\(Identifiers.random(length: 6))"
            try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
            return try put(path)
        }
        var descriptors: [[String: Any]] = []
        var diffIDs: [String] = []
        for root in layers {
            let tar = layout + "/.layer-\(Identifiers.random(length: 6)).tar"
            defer { unlink(tar); unlink(tar + ".gz") }
            let tarred = try await HostCommand.capture(["tar", "--numeric-owner", "-C", root, "-cf", tar, "."], timeout: .seconds(600))
            guard tarred.status == 0 else { throw SproutError(.internal, "tar: \(tarred.stderr)") }
            diffIDs.append("sha256:" + (try LocalFiles.sha256(tar)))
            let zipped = try await HostCommand.capture(["gzip", "-n", tar], timeout: .seconds(600))
            guard zipped.status == 0 else { throw SproutError(.internal, "gzip: \(zipped.stderr)") }
            let blob = try put(tar + ".gz")
            descriptors.append(["mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob.digest, "size": blob.size])
        }
        let configBlob = try putJSON(["architecture": "amd64", "os": "linux", "config": config,
                                      "rootfs": ["type": "layers", "diff_ids": diffIDs]] as [String: Any])
        let manifest = try putJSON([
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": ["mediaType": "application/vnd.oci.image.config.v1+json", "digest": configBlob.digest, "size": configBlob.size],
            "layers": descriptors,
        ] as [String: Any])
        var index: [[String: Any]] = []
        if let data = FileManager.default.contents(atPath: layout + "/index.json"),
           let old = try JSONSerialization.jsonObject(with: data) as? [String: Any], let entries = old["manifests"] as? [[String: Any]] {
            index = entries.filter { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] != tag }
        }
        index.append(["mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest.digest, "size": manifest.size,
                      "annotations": ["org.opencontainers.image.ref.name": tag]])
        try JSONSerialization.data(withJSONObject: ["schemaVersion": 2, "manifests": index] as [String: Any], options: [.sortedKeys])
            .write(to: URL(fileURLWithPath: layout + "/index.json"))
        try FileSystem.writeAtomically(layout + "/oci-layout", #"{"imageLayoutVersion": "1.0.0"}"#)
        return manifest.digest
    }
}
