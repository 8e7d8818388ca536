import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutStore
import SproutSystem

/// A real image registry (Debian's `docker-registry`, CNCF distribution) of
/// a test's own: on a free loopback port, basic auth from an htpasswd
/// file, its storage in a temporary directory; `stop()` ends it and
/// removes everything.
final class TestRegistry: Sendable {
    let directory: String
    let pid: pid_t
    let port: Int
    let username = "tester"
    let password = "s3cret-pw"
    var host: String { "127.0.0.1:\(port)" }
    /// Where it keeps blobs (a test corrupts one here).
    var storage: String { directory + "/storage" }

    init() async throws {
        var template = Array("/tmp/sprout-registry-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SproutError.system("mkdtemp") }
        directory = cStringToString(template)
        let out = try await HostCommand.capture(["htpasswd", "-Bbn", username, password])
        try FileSystem.writeAtomically(directory + "/htpasswd", out.stdout, mode: 0o600)
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
            auth:
              htpasswd:
                realm: sprout-test
                path: \(directory)/htpasswd

            """, mode: 0o600)
        let log = open(directory + "/registry.log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw SproutError.system("open registry.log") }
        defer { close(log) }
        var options = Spawn.Options()
        options.stdout = log
        options.stderr = log
        pid = try Spawn.spawn(path: "/usr/bin/docker-registry", argv: ["docker-registry", "serve", directory + "/config.yml"],
                              env: HostCommand.environment, options: options)
        // It says which port it took ("listening on 127.0.0.1:N").
        var found = 0
        let logPath = directory + "/registry.log"
        let started = try await eventually {
            let text = (try? Descriptor.readFile(logPath)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            guard let range = text.range(of: "listening on 127.0.0.1:") else { return false }
            found = Int(text[range.upperBound...].prefix { $0.isNumber }) ?? 0
            return found > 0
        }
        port = found
        guard started else {
            Spawn.terminate(pid, graceSeconds: 5)
            try? FileSystem.removeTree(directory)
            throw SproutError(.unavailable, "docker-registry did not start: \((try? Descriptor.readFile(logPath)).map { String(decoding: $0, as: UTF8.self) } ?? "")")
        }
    }

    /// docker's `config.json` with this registry's login.
    func authFile(password: String? = nil) throws -> String {
        let path = directory + "/auth-\(Identifiers.random(length: 4)).json"
        let auth = Data("\(username):\(password ?? self.password)".utf8).base64EncodedString()
        try FileSystem.writeAtomically(path, #"{"auths": {"\#(host)": {"auth": "\#(auth)"}}}"#, mode: 0o600)
        return path
    }

    /// Pushes the OCI layout image `layout:tag` as `repository:tag`, with skopeo.
    func push(layout: String, tag: String, as repository: String) async throws {
        let out = try await HostCommand.capture([
            "skopeo", "copy", "--insecure-policy", "--dest-tls-verify=false", "--dest-creds", "\(username):\(password)",
            "oci:\(layout):\(tag)", "docker://\(host)/\(repository):\(tag)",
        ], timeout: .seconds(300))
        guard out.status == 0 else { throw SproutError(.internal, "skopeo copy failed: \(out.stderr)") }
    }

    /// How many requests its access log shows answered 200 whose request
    /// line starts with `text` (`GET /v2/…/blobs/`).
    func requests(matching text: String) throws -> Int {
        let log = String(decoding: try Descriptor.readFile(directory + "/registry.log", limit: 64 << 20), as: UTF8.self)
        return log.split(separator: "\n").filter { $0.contains("\"" + text) && $0.contains(" HTTP/1.1\" 200 ") }.count
    }

    func stop() {
        Spawn.terminate(pid, graceSeconds: 10)
        try? FileSystem.removeTree(directory)
    }
}

/// A small image written as an OCI layout, as a build tool would: layers
/// of gzip tars, a config, a manifest and an index naming it by tag.
struct TestImage {
    struct Layer: Sendable {
        /// Builds the layer's files in the (empty) directory given.
        var make: @Sendable (String) async throws -> Void
    }

    /// Writes the image into `layout` (an OCI layout directory, made if
    /// missing) under `tag`; returns the manifest's digest.
    @discardableResult
    static func write(layout: String, tag: String, config: [String: Any], layers: [Layer]) async throws -> String {
        try FileSystem.makeDirectories(layout + "/blobs/sha256")
        func put(_ path: String) throws -> (digest: String, size: Int) {
            let hex = try LocalFiles.sha256(path)
            let size = try Descriptor.readFile(path, limit: 1 << 30).count
            _ = try? FileManager.default.removeItem(atPath: "\(layout)/blobs/sha256/\(hex)")
            try FileManager.default.copyItem(atPath: path, toPath: "\(layout)/blobs/sha256/\(hex)")
            return ("sha256:" + hex, size)
        }
        func putJSON(_ object: Any) throws -> (digest: String, size: Int) {
            let path = layout + "/.doc-\(Identifiers.random(length: 6))"
            defer { unlink(path) }
            try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
            return try put(path)
        }
        var descriptors: [[String: Any]] = []
        var diffIDs: [String] = []
        for layer in layers {
            let root = layout + "/.layer-\(Identifiers.random(length: 6))"
            defer { try? FileSystem.removeTree(root); unlink(root + ".tar"); unlink(root + ".tar.gz") }
            try FileSystem.makeDirectories(root)
            try await layer.make(root)
            let tarred = try await HostCommand.capture(["tar", "--numeric-owner", "-C", root, "-cf", root + ".tar", "."])
            guard tarred.status == 0 else { throw SproutError(.internal, "tar: \(tarred.stderr)") }
            diffIDs.append("sha256:" + (try LocalFiles.sha256(root + ".tar")))
            _ = try await HostCommand.capture(["gzip", "-n", root + ".tar"])
            let blob = try put(root + ".tar.gz")
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

    /// A busybox root: the applets a test calls, `root` and `app` (1000), `/home/app` and `/srv/app` owned by app.
    static func busyboxRoot(_ root: String) async throws {
        for dir in ["bin", "etc", "home/app", "srv/app", "tmp"] { try FileSystem.makeDirectories("\(root)/\(dir)") }
        chmod("\(root)/tmp", 0o1777)
        _ = try await HostCommand.capture(["cp", "/bin/busybox", "\(root)/bin/busybox"])
        for applet in ["sh", "env", "pwd", "id", "cat", "ls", "echo", "httpd", "wget", "touch"] { symlink("busybox", "\(root)/bin/\(applet)") }
        try FileSystem.writeAtomically("\(root)/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n", mode: 0o644)
        try FileSystem.writeAtomically("\(root)/etc/group", "root:x:0:\napp:x:1000:\n", mode: 0o644)
        for dir in ["home/app", "srv/app"] { chown("\(root)/\(dir)", 1000, 1000) }
    }
}
