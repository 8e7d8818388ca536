import Foundation
import GRDB
import Glibc
import SproutRuntime
import SproutClient
import SproutCore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

/// Runs the real `sprout server` binary on a free port with its own data
/// directory (and the shared base-env cache), and removes everything on stop.
final class ServerHarness: @unchecked Sendable {
    let data: String
    let runtime: String
    /// Arguments added to `sprout server`; a restart (`start`) uses the current value.
    var extraArgs: [String]
    /// The server's process while it runs; 0 once it is stopped or killed
    /// (its number may belong to another process by then).
    private(set) var pid: pid_t = 0
    private(set) var port: UInt16 = 0
    private(set) var adminKey = ""
    /// `http` or `https`, as the server said it listens.
    private(set) var scheme = "http"
    /// What the server printed before it listened (the TLS set-up, say).
    private(set) var startupOutput = ""
    /// The CA to trust over HTTPS (default: the certificate the server made for itself, if any).
    var caFile: String?
    private var logFD: Int32 = -1

    /// Base envs are cached across test runs and servers (building `debian` takes ~30 s).
    static let cache = ProcessInfo.processInfo.environment["SPROUT_TEST_CACHE"] ?? "/var/cache/sprout-test"

    static var binary: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var dir = exe
        while let slash = dir.lastIndex(of: "/"), slash != dir.startIndex {
            dir = String(dir[..<slash])
            if FileManager.default.isExecutableFile(atPath: dir + "/sprout") { return dir + "/sprout" }
        }
        return ".build/debug/sprout"
    }

    /// Servers start without a warm pool unless a test asks for one, so that
    /// host-resource checks while they run see only what the test made.
    init(runtime: String = "gvisor", extraArgs: [String] = []) throws {
        data = try FileSystem.makeTemporaryDirectory(prefix: "sprout-it")
        self.runtime = runtime
        self.extraArgs = extraArgs
        HostResources.servers.withLock { _ = $0.insert(data) }
        do { try start() } catch {
            HostResources.servers.withLock { _ = $0.remove(data) }
            throw error
        }
    }

    /// The address the server listens on: `--host` if the test gave one.
    var host: String { extraArgs.firstIndex(of: "--host").map { extraArgs[$0 + 1] } ?? "127.0.0.1" }
    var url: String { "\(scheme)://\(host):\(port)" }

    var trust: ClientTLS {
        guard scheme == "https" else { return ClientTLS() }
        let made = data + "/tls/server.crt"
        return ClientTLS(caFile: caFile ?? (FileManager.default.fileExists(atPath: made) ? made : nil))
    }

    var client: SproutAPIClient { try! SproutAPIClient(url: url, apiKey: adminKey, tls: trust) }

    func client(key: String?) -> SproutAPIClient { try! SproutAPIClient(url: url, apiKey: key, tls: trust) }

    /// Starts (or restarts) the server on the same data directory.
    func start() throws {
        let out = try Spawn.pipe()
        logFD = open(data + "/server.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        var options = Spawn.Options()
        options.stdout = out.write
        options.stderr = logFD
        pid = try Spawn.spawn(
            path: Self.binary,
            argv: ["sprout", "server", "--data", data, "--port", "0", "--runtime", runtime, "--cache", Self.cache]
                + (extraArgs.contains("--pool-size") ? [] : ["--pool-size", "0"])
                + (extraArgs.contains("--prebuild-envs") ? [] : ["--no-prebuild-envs"]) + extraArgs,
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"], options: options)
        close(out.write)
        defer { close(out.read) }
        var text = ""
        var byte: UInt8 = 0
        let deadline = monotonicSeconds() + 60
        func readable() -> Bool {
            var pfd = pollfd(fd: out.read, events: Int16(POLLIN), revents: 0)
            return poll(&pfd, 1, Int32(max(0, deadline - monotonicSeconds()) * 1000)) == 1
        }
        while monotonicSeconds() < deadline, readable(), read(out.read, &byte, 1) == 1 {
            text.append(Character(UnicodeScalar(byte)))
            if text.hasSuffix("\n"), let line = text.split(separator: "\n").last, line.hasPrefix("sprout server listening on ") {
                port = UInt16(line.split(separator: ":").last ?? "") ?? 0
                scheme = line.contains("https://") ? "https" : "http"
                startupOutput = text
                break
            }
        }
        guard port != 0 else {
            let log = self.log  // before stop() removes the data directory with it
            stop()
            throw SproutError(.unavailable, "server did not start: \(text) \(log)")
        }
        // A fleet's second API server finds the admin key made already, by the first: it has none of its own.
        let isLaterAPIServer = extraArgs.contains("api") && !FileSystem.exists(data + "/admin.key")
        adminKey = isLaterAPIServer ? "" : (try String(contentsOfFile: data + "/admin.key", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var log: String { (try? String(contentsOfFile: data + "/server.log", encoding: .utf8)) ?? "" }

    /// The id the server gave its data directory; its host resources are named after it.
    var instance: String { HostResources.instance(of: data) }

    /// SIGKILL: the crash case. The pid and the log's descriptor are
    /// forgotten with the process: signalling or closing them again later
    /// would hit whatever has their numbers by then (the other lane's).
    func crash() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        while waitpid(pid, nil, 0) == -1 && errno == EINTR {}
        pid = 0
        closeLog()
    }

    /// Started and not crashed or stopped since.
    var isRunning: Bool { pid > 0 }

    /// SIGTERM and wait: a graceful stop kills every sandbox.
    func stopServer() {
        if pid > 0 { Spawn.terminate(pid, graceSeconds: 60) }
        pid = 0
        closeLog()
    }

    private func closeLog() {
        if logFD >= 0 { close(logFD) }
        logFD = -1
    }

    /// Stops the server and removes its data directory, and the server's
    /// firewall table if it is still there: a server keeps it across a kill
    /// -9 (and a stop with paused sandboxes), for its next start, and here
    /// none comes. `emptied`: the server had no live sandbox left, so a
    /// graceful stop must have removed the table itself.
    func stop(emptied: Bool = false) {
        let instance = HostResources.instance(of: data)
        let graceful = pid > 0
        stopServer()
        HostResources.stopped.withLock { $0[data] = (instance, HostResources.sandboxIDs(data)) }
        do {
            try FileSystem.removeTree(data)
        } catch {
            Issue.record("cannot remove \(data): \(error)")
        }
        HostResources.servers.withLock { _ = $0.remove(data) }
        if !instance.isEmpty, Self.deleteTable("sprout_" + instance), graceful && emptied {
            Issue.record("a graceful stop with no live sandboxes left its firewall table sprout_\(instance)")
        }
    }

    /// Deletes nftables table `inet name`; true if there was one.
    static func deleteTable(_ name: String) -> Bool {
        guard let pid = try? Spawn.spawn(path: "/usr/sbin/nft", argv: ["nft", "delete", "table", "inet", name],
                                          env: HostCommand.environment, options: Spawn.Options())
        else { return false }
        return Spawn.waitForExit(pid, timeout: 60) == 0
    }

    static func with<T>(runtime: String = "gvisor", extraArgs: [String] = [], _ body: (ServerHarness) async throws -> T) async throws -> T {
        let server = try ServerHarness(runtime: runtime, extraArgs: extraArgs)
        do {
            let result = try await body(server)
            let emptied = await server.killPaused()
            server.stop(emptied: emptied)
            return result
        } catch {
            await server.killPaused()
            server.stop()
            throw error
        }
    }

    /// Paused sandboxes outlive a server stop by design (their namespace and
    /// address wait for resume): kill them before stopping. True if the
    /// server runs and every paused sandbox it listed is killed.
    @discardableResult
    func killPaused() async -> Bool {
        guard pid > 0, let sandboxes = try? await client.sandboxes() else { return false }
        var all = true
        for sandbox in sandboxes where sandbox.state == .paused {
            if (try? await client.killSandbox(sandbox.id)) == nil { all = false }
        }
        return all
    }
}

/// What Sprout may leave on the host; every test checks it is empty after.
/// Scoped to what the server of `data` made (its instance's namespaces and
/// network addresses, the veths and cgroups of its sandboxes), so a Sprout server already running
/// on the host, or the other lane's (see `Integration`), does not fail the
/// suite. Without a catalog (`sprout bench` makes and removes its own data
/// directory) every Sprout resource counts but those of the test servers
/// still running. A test server stopped by its harness leaves its instance
/// and sandbox ids behind (`stopped`), so a check after its data directory
/// is gone stays scoped to it.
enum HostResources {
    /// The data directories of the test servers running now, in either lane.
    static let servers = Locked<Set<String>>([])
    /// The namespaces of the isolation suite's test hosts that are up now.
    static let testHosts = Locked<Set<String>>([])
    /// How this test process names its test hosts' namespaces: another test
    /// run on the host (a second `make test`) has its own, which are not this one's leftovers.
    static let testHostPrefix = "sproutit-\(Identifiers.random(length: 4))-"

    /// The id a server gave its data directory (empty without one); its host resources are named after it.
    static func instance(of data: String) -> String {
        ((try? String(contentsOfFile: data + "/instance", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// What a stopped test server's host resources are named after, kept when its data directory goes,
    /// so a check after the stop still counts only what that server made.
    static let stopped = Locked<[String: (instance: String, sandboxes: Set<String>)]>([:])

    static func leftovers(data: String) async -> [String] {
        let gone = FileManager.default.fileExists(atPath: data) ? nil : stopped.current[data]
        let instance = gone?.instance ?? Self.instance(of: data)
        var found = await unscoped(data: data, instance: instance, sandboxes: gone?.sandboxes ?? sandboxIDs(data), stopped: gone != nil)
        if instance.isEmpty {
            // Read after the scan: a resource it found was made before, so its sandbox is in a catalog by now.
            // (Mounts need no such care: without an instance only those under `data` count.)
            let others = servers.current.subtracting([data])
            let instances = others.map(Self.instance(of:)).filter { !$0.isEmpty }
            let ids = others.reduce(into: Set<String>()) { $0.formUnion(sandboxIDs($1)) }
            let interfaces = Set(others.flatMap { other in
                sandboxIDs(other).flatMap { [SandboxNetwork.hostInterface($0, instance: Self.instance(of: other)), SandboxNetwork.legacyHostInterface($0)] }
            })
            found.removeAll { item in
                instances.contains { item.hasPrefix("netns sprout-\($0)-") || item.hasPrefix("address of \($0)/") } || ids.contains { item == "cgroup \($0)" }
                    || interfaces.contains { item.hasPrefix("veth \($0): ") }
            }
        }
        return found
    }

    /// What a server of `instance` with these sandboxes left, its data directory gone.
    static func leftovers(instance: String, sandboxes ids: Set<String>) async -> [String] {
        await unscoped(data: "/nonexistent/\(instance)", instance: instance, sandboxes: ids, stopped: true)
    }

    /// `stopped`: the server is gone, so what it holds while it runs (its volumes' mount folder) counts too.
    private static func unscoped(data: String, instance: String, sandboxes ids: Set<String>, stopped: Bool) async -> [String] {
        var found: [String] = []
        func ours(_ sandboxID: String) -> Bool { instance.isEmpty || ids.contains(sandboxID) }
        let namespacePrefix = instance.isEmpty ? "sprout-" : "sprout-\(instance)-"
        let hosts = testHosts.current
        let netns = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [])
            .filter { $0.hasPrefix(namespacePrefix) || ($0.hasPrefix(testHostPrefix) && !hosts.contains($0)) }
        found += netns.map { "netns \($0)" }
        for kind in ["runsc", "runc"] {
            let root = data + "/run/" + (kind == "runsc" ? "gvisor" : "runc")
            // `list` would create a missing root directory.
            guard FileManager.default.fileExists(atPath: root) else { continue }
            if let out = try? await hostOutput([kind, "--root", root, "list", "--quiet"]), !out.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                found.append("\(kind) containers: \(out)")
            }
        }
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        found += mounts.split(separator: "\n").filter { $0.contains(data) }.map { "mount \($0)" }
        // Volumes are mounted under /run/sprout/volumes/INSTANCE (a shared bind the server holds
        // while it runs) from loop devices backed by DATA/volumes.
        if !instance.isEmpty {
            let root = "/run/sprout/volumes/\(instance)"
            found += mounts.split(separator: "\n").filter { $0.contains(root + "/") }.map { "volume mount \($0)" }
            if stopped {
                found += mounts.split(separator: "\n").filter { $0.split(separator: " ").dropFirst().first.map(String.init) == root }
                    .map { "volume folder's mount \($0)" }
                if FileManager.default.fileExists(atPath: root) { found.append("volume folder \(root)") }
            }
        }
        let loops = (try? await hostOutput(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"])) ?? ""
        found += loops.split(separator: "\n").filter { $0.contains(data + "/") }.map { "loop device \($0)" }
        let interfaces = Set(ids.flatMap { [SandboxNetwork.hostInterface($0, instance: instance), SandboxNetwork.legacyHostInterface($0)] })
        let links = (try? await hostOutput(["ip", "-o", "link", "show"])) ?? ""
        found += links.split(separator: "\n").compactMap { line in
            guard line.contains(": sp"), line.contains("@") else { return nil }
            let name = line.split(separator: " ").dropFirst().first.map { String($0.split(separator: "@")[0]) } ?? ""
            return instance.isEmpty || interfaces.contains(name) ? "veth \(name): \(line.prefix(60))" : nil
        }
        // Network slots are lock files shared by every server on the host, each naming its owner as instance/sandbox.
        let pool = NetworkPool()
        found += ((try? FileManager.default.contentsOfDirectory(atPath: pool.directory)) ?? []).compactMap { name in
            let owner = (try? String(contentsOfFile: pool.directory + "/" + name, encoding: .utf8)) ?? ""
            return instance.isEmpty || owner.hasPrefix(instance + "/") ? "address of \(owner): \(name)" : nil
        }
        let sandboxes = (try? FileManager.default.contentsOfDirectory(atPath: data + "/sandboxes")) ?? []
        found += sandboxes.map { "sandbox dir \($0)" }
        let cgroups = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/memory/sprout")) ?? [])
            .filter { $0.hasPrefix("sbx_") && ours($0) }
        found += cgroups.map { "cgroup \($0)" }
        return found
    }

    /// Every sandbox id the catalog of `data` knows, killed ones included.
    static func sandboxIDs(_ data: String) -> Set<String> {
        guard FileManager.default.fileExists(atPath: data + "/sprout.db"),
            let queue = try? DatabaseQueue(path: data + "/sprout.db", configuration: { var c = Configuration(); c.readonly = true; return c }()),
            let ids = try? queue.read({ try String.fetchAll($0, sql: "SELECT id FROM sandbox") })
        else { return [] }
        return Set(ids)
    }

    static func hostOutput(_ argv: [String]) async throws -> String {
        try await HostCommand.capture(argv).stdout
    }
}
