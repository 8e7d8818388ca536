import Foundation
import Glibc
import SproutAgentClient
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
        workdir = try FileSystem.makeTemporaryDirectory(prefix: "sprout-agent-test")
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
