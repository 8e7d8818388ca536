import Foundation
import GRDB
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutRuntime
import SproutServer
import SproutConfig

/// A `sprout server` the benchmark starts for itself on a temporary data
/// directory, and stops and removes afterwards.
final class BenchServer: Sendable {
    let data: String
    let pid: pid_t
    let port: UInt16
    let key: String

    /// `https`: serve it over TLS with a certificate made for the run (`caFile`).
    let https: Bool

    init(runtime: String, cache: String, https: Bool = false, platform: GVisorPlatform? = nil, extraArgs: [String] = []) throws {
        self.https = https
        data = try FileSystem.makeTemporaryDirectory(prefix: "sprout-bench")
        let exe = OwnExecutable.path ?? "sprout"
        let out = try Spawn.pipe()
        let log = open(data + "/server.log", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        var tlsArgs: [String] = []
        if https {
            try SelfSignedCertificate.ensure(dataDirectory: data, listenHost: "127.0.0.1")
            let (cert, key) = SelfSignedCertificate.paths(dataDirectory: data)
            tlsArgs = ["--tls-cert", cert, "--tls-key", key]
        }
        var options = Spawn.Options()
        options.stdout = out.write
        options.stderr = log
        pid = try Spawn.spawn(
            path: exe, argv: ["sprout", "server", "--data", data, "--port", "0", "--runtime", runtime, "--cache", cache, "--log-level", "warning", "--no-prebuild-envs",
                   // The scale rows hold many sandboxes: no cap on paused ones, and no pausing for memory under the measurement.
                   "--max-paused-per-team", "1000000", "--min-free-memory-mb", "0"] + tlsArgs
                   + (platform.map { ["--platform", $0.rawValue] } ?? []) + extraArgs,
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"], options: options)
        close(out.write)
        close(log)
        defer { close(out.read) }
        var text = ""
        var byte: UInt8 = 0
        var found: UInt16 = 0
        while read(out.read, &byte, 1) == 1 {
            text.append(Character(UnicodeScalar(byte)))
            if byte == 10, let line = text.split(separator: "\n").last, line.hasPrefix("sprout server listening on ") {
                found = UInt16(line.split(separator: ":").last ?? "") ?? 0
                break
            }
        }
        port = found
        guard port != 0, let keyText = try? String(contentsOfFile: data + "/admin.key", encoding: .utf8) else {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
            let log = (try? String(contentsOfFile: data + "/server.log", encoding: .utf8)) ?? ""
            try? FileSystem.removeTree(data)
            throw SproutError(.unavailable, "the benchmark's server did not start: \(log)")
        }
        key = keyText.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var caFile: String { SelfSignedCertificate.paths(dataDirectory: data).certificate }

    var client: SproutAPIClient {
        try! SproutAPIClient(url: "\(https ? "https" : "http")://127.0.0.1:\(port)", apiKey: key, tls: https ? ClientTLS(caFile: caFile) : ClientTLS())
    }

    /// The agent endpoint of a sandbox, read from the server's catalog, for
    /// baselines that talk to the agent directly.
    func agentEndpoint(_ sandboxID: String, address: String) throws -> AgentEndpoint {
        let db = try DatabaseQueue(path: data + "/sprout.db")
        let row = try db.read { try Row.fetchOne($0, sql: "SELECT agentToken FROM sandbox WHERE id = ?", arguments: [sandboxID]) }
        guard let token: String = row?["agentToken"] else { throw SproutError(.notFound, "no sandbox \(sandboxID)") }
        return AgentEndpoint(host: address, token: token)
    }

    func stop() {
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        let instance = ((try? String(contentsOfFile: data + "/instance", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let ids = (try? DatabaseQueue(path: data + "/sprout.db").read { try String.fetchAll($0, sql: "SELECT id FROM sandbox") }) ?? []
        Self.stopped.withLock { $0.append(BenchReport.Server(instance: instance, sandboxes: ids, data: data)) }
        try? FileSystem.removeTree(data)
    }

    /// Every server of this run, once stopped (for the report).
    static let stopped = Locked<[BenchReport.Server]>([])
}
