import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutRegistry
import SproutStore
import SproutSystem

/// A real image registry (Debian's `docker-registry`) of a test's own, with
/// a basic-auth login, in a temporary directory; `stop()` ends it and
/// removes everything.
final class TestRegistry: Sendable {
    let registry: LocalRegistry
    let login = RegistryCredentials.Login(username: "tester", password: "s3cret-pw")
    var directory: String { registry.directory }
    var host: String { registry.host }
    /// Where it keeps blobs (a test corrupts one here).
    var storage: String { registry.storage }

    init() async throws {
        let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-registry")
        do {
            registry = try await LocalRegistry(directory: directory, login: login)
        } catch {
            try? FileSystem.removeTree(directory)
            throw error
        }
    }

    /// docker's `config.json` with this registry's login.
    func authFile(password: String? = nil) throws -> String {
        try Self.authFile(in: directory, host: host, login: RegistryCredentials.Login(username: login.username, password: password ?? login.password))
    }

    /// docker's `config.json` in `directory` with `login` for the registry at `host`.
    static func authFile(in directory: String, host: String, login: RegistryCredentials.Login) throws -> String {
        let path = directory + "/auth-\(Identifiers.random(length: 4)).json"
        let auth = Data("\(login.username):\(login.password)".utf8).base64EncodedString()
        try FileSystem.writeAtomically(path, #"{"auths": {"\#(host)": {"auth": "\#(auth)"}}}"#, mode: 0o600)
        return path
    }

    func push(layout: String, tag: String, as repository: String) async throws {
        try await registry.push(layout: layout, tag: tag, as: repository, login: login)
    }

    /// How many requests its access log shows answered 200 whose request
    /// line starts with `text` (`GET /v2/…/blobs/`).
    func requests(matching text: String) throws -> Int {
        let log = String(decoding: try Descriptor.readFile(registry.logPath, limit: 64 << 20), as: UTF8.self)
        return log.split(separator: "\n").filter { $0.contains("\"" + text) && $0.contains(" HTTP/1.1\" 200 ") }.count
    }

    func stop() {
        registry.stop()
        try? FileSystem.removeTree(directory)
    }
}

/// Test images: layers made by closures in empty directories, written by
/// Sprout's OCI layout writer.
struct TestImage {
    struct Layer: Sendable {
        /// Builds the layer's files in the (empty) directory given.
        var make: @Sendable (String) async throws -> Void
    }

    @discardableResult
    static func write(layout: String, tag: String, config: [String: Any], layers: [Layer]) async throws -> String {
        var roots: [String] = []
        defer { for root in roots { try? FileSystem.removeTree(root) } }
        try FileSystem.makeDirectories(layout)
        for layer in layers {
            let root = layout + "/.root-\(Identifiers.random(length: 6))"
            roots.append(root)
            try FileSystem.makeDirectories(root)
            try await layer.make(root)
        }
        return try await OCILayoutWriter.write(layout: layout, tag: tag, config: config, layers: roots)
    }

    /// A busybox root: the applets a test calls, `root` and `app` (1000), `/home/app` and `/srv/app` owned by app.
    static func busyboxRoot(_ root: String) async throws {
        for dir in ["bin", "etc", "home/app", "srv/app", "tmp"] { try FileSystem.makeDirectories("\(root)/\(dir)") }
        chmod("\(root)/tmp", 0o1777)
        _ = try await HostCommand.capture(["cp", "/bin/busybox", "\(root)/bin/busybox"])
        for applet in ["sh", "env", "pwd", "id", "cat", "ls", "echo", "httpd", "wget", "touch", "stat"] { symlink("busybox", "\(root)/bin/\(applet)") }
        try FileSystem.writeAtomically("\(root)/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n", mode: 0o644)
        try FileSystem.writeAtomically("\(root)/etc/group", "root:x:0:\napp:x:1000:\n", mode: 0o644)
        for dir in ["home/app", "srv/app"] { chown("\(root)/\(dir)", 1000, 1000) }
    }
}
