import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Runs `sprout-agent` as a plain host process on loopback, on a free port.
/// For tests and benchmarks of the agent itself; real sandboxes start the
/// agent inside their runtime.
public final class LocalAgent: @unchecked Sendable {
    public let pid: pid_t
    public let port: UInt16
    public let token: String
    /// The address it listens on.
    public let host: String
    private let stopped = Locked(false)

    public var endpoint: AgentEndpoint { AgentEndpoint(host: host, port: port, token: token) }
    public var client: AgentClient { AgentClient(endpoint: endpoint) }

    /// Starts `binary` with the given working directory (and `token`, a new
    /// random one unless given) and waits until it listens. `launcher` runs
    /// it through another program (`["unshare", "--pid", …]`): a command
    /// line, never a script written for the purpose. `host`: the address to
    /// listen on (another than loopback for an agent in a network namespace).
    public init(binary: String, workdir: String = "/", token given: String? = nil, launcher: [String] = [], host: String = "127.0.0.1") throws {
        token = given ?? Identifiers.random(length: 32)
        self.host = host
        var options = Spawn.Options()
        options.stderr = 2
        let env = ["SPROUT_AGENT_TOKEN=\(token)", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]
        let arguments = ["--listen", "\(host):0", "--workdir", workdir]
        let (started, output) = try Spawn.withOutputPipe(options) { options in
            if let program = launcher.first {
                guard let path = Spawn.resolveExecutable(program, searchPath: "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin") else {
                    throw SproutError(.notFound, "\(program) is not installed")
                }
                return try Spawn.spawn(path: path, argv: launcher + [binary] + arguments, env: env, options: options)
            }
            return try Spawn.spawn(path: binary, argv: ["sprout-agent"] + arguments, env: env, options: options)
        }
        pid = started
        defer { close(output) }
        // The agent prints "sprout-agent listening on HOST:PORT" once ready.
        let ready = Spawn.waitForLine(output, startingWith: "sprout-agent listening on ", timeout: 60)
        guard case .found(let text) = ready, let colon = text.lastIndex(of: ":"), let p = UInt16(text[text.index(after: colon)...]) else {
            kill(pid, SIGKILL)
            waitpid(pid, nil, 0)
            throw SproutError(.unavailable, "sprout-agent did not start (\(ready))")
        }
        port = p
    }

    deinit { stop() }

    /// Stops the agent (SIGTERM, then SIGKILL after 2 s) and reaps it.
    public func stop() {
        let already = stopped.withLock { s -> Bool in
            defer { s = true }
            return s
        }
        guard !already else { return }
        Spawn.terminate(pid, graceSeconds: 2)
    }

    /// The `sprout-agent` binary next to the running executable (as in a
    /// SwiftPM build folder), if there is one.
    public static func binaryBesideExecutable() -> String? {
        OwnExecutable.folderAbove(holding: "sprout-agent", accept: OwnExecutable.isExecutable).map { $0 + "/sprout-agent" }
    }
}
