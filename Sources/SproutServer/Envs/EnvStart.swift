import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutBlocking
import SproutCore
import SproutRuntime
import SproutSystem

/// An env's `start` and how to know it is up: what a build runs before it
/// takes a warm env's memory image, and what a sandbox of that env that
/// boots instead (runc, or a sandbox with volumes the image lacks) runs
/// before it is handed out.
struct EnvStart: Sendable, Equatable {
    var command: String
    /// `port:N` (something listens on N), a command that exits 0, or nil (at once).
    var ready: String?
    /// Seconds `ready` may take (default 60).
    var timeoutSeconds: Int?

    enum Failure: Error, Equatable {
        case exited(code: Int?)
        case notReady(seconds: Int)

        var sentence: String {
            switch self {
            case .exited: "start exited before it was ready"
            case .notReady(let seconds): "not ready after \(seconds) s"
            }
        }
    }

    /// Starts the command (tagged `start`, in /code or the env's workdir, as
    /// the env's user) and returns once `ready` passes; throws `Failure` if
    /// it exits first or the time runs out.
    func run(agent: AgentClient, endpoint: (host: String, port: UInt16), environment: [String: String],
             defaults: API.ProcessDefaults) async throws {
        let process = try await agent.start(ProcessSpec(shell: command, cwd: defaults.workdir ?? "/code", env: environment, tag: "start",
                                                        user: defaults.user))
        process.close()
        let limit = timeoutSeconds ?? 60
        let deadline = monotonicSeconds() + Double(limit)
        while monotonicSeconds() < deadline {
            if let exit = try await agent.processes().first(where: { $0.id == process.info.id })?.exit {
                throw Failure.exited(code: exit.code.map(Int.init))
            }
            if try await isReady(agent: agent, host: endpoint.host, environment: environment, defaults: defaults) { return }
            // Polled: readiness is a port or a command inside the sandbox, which tells nothing when it changes.
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure.notReady(seconds: limit)
    }

    private func isReady(agent: AgentClient, host: String, environment: [String: String], defaults: API.ProcessDefaults) async throws -> Bool {
        switch ready {
        case nil:
            return true
        case let check? where check.hasPrefix("port:"):
            let port = UInt16(check.dropFirst(5)) ?? 0
            return (try? await onThread { Socket.answers(host: host, port: port, timeoutSeconds: 1) }) == true
        case let check?:
            return try await agent.run(ProcessSpec(shell: check, cwd: defaults.workdir ?? "/code", env: environment, user: defaults.user)).exit
                == ProcessExit(code: 0)
        }
    }
}
