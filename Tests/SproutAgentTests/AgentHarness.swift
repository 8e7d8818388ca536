import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem

/// The real agent binary on loopback with its own working directory, removed
/// by `stop()`.
final class AgentHarness: @unchecked Sendable {
    let agent: LocalAgent
    let workdir: String
    var pid: pid_t { agent.pid }
    var port: UInt16 { agent.port }
    var token: String { agent.token }
    var client: AgentClient { agent.client }

    init() throws {
        var template = Array("/tmp/sprout-agent-test-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SproutError.system("mkdtemp") }
        workdir = cStringToString(template)
        guard let binary = LocalAgent.binaryBesideExecutable() else {
            throw SproutError(.notFound, "sprout-agent is not built next to the test runner")
        }
        do {
            agent = try LocalAgent(binary: binary, workdir: workdir)
        } catch {
            try? FileManager.default.removeItem(atPath: workdir)
            throw error
        }
    }

    func stop() {
        agent.stop()
        try? FileManager.default.removeItem(atPath: workdir)
    }

    /// Runs `body` against a fresh agent and always stops it.
    static func with<T>(_ body: (AgentHarness) async throws -> T) async throws -> T {
        let harness = try AgentHarness()
        defer { harness.stop() }
        return try await body(harness)
    }
}

extension Spawn {
    /// Runs a host command to completion and returns its stdout (test helper).
    static func output(_ argv: [String]) throws -> String {
        let out = try Spawn.pipe()
        var options = Spawn.Options()
        options.stdout = out.write
        let pid = try Spawn.spawn(path: argv[0], argv: argv, env: ["PATH=/usr/bin:/bin"], options: options)
        close(out.write)
        var bytes: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = Glibc.read(out.read, &buf, buf.count)
            if n <= 0 { break }
            bytes += buf[0..<n]
        }
        close(out.read)
        waitpid(pid, nil, 0)
        return String(decoding: bytes, as: UTF8.self)
    }
}
