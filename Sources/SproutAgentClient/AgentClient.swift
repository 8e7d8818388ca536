import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem
import SproutBlocking

/// Where an agent listens and the token it expects.
public struct AgentEndpoint: Sendable, Equatable {
    public var host: String
    public var port: UInt16
    public var token: String

    public init(host: String, port: UInt16 = AgentProtocol.defaultPort, token: String) {
        self.host = host
        self.port = port
        self.token = token
    }
}

/// A typed client for `sprout-agent`. Every call opens its own connection, so
/// bulk transfers and long-lived streams never share a channel with control
/// calls. Blocking socket work runs on dedicated threads, never on Swift's
/// cooperative pool.
public struct AgentClient: Sendable {
    public let endpoint: AgentEndpoint
    public var connectTimeoutSeconds: Double = 10

    public init(endpoint: AgentEndpoint) {
        self.endpoint = endpoint
    }

    // MARK: Connection

    /// Opens a connection, sends `request` and reads the reply. The reply is
    /// checked for errors and for the protocol version.
    func connect(_ request: AgentRequest) throws -> (FrameChannel, Reply) {
        // No FIN from this side: it would leave the agent's end in TIME_WAIT (see `Socket.setAbortiveClose`).
        let fd = try Socket.connectTCP(host: endpoint.host, port: endpoint.port, timeoutSeconds: connectTimeoutSeconds, resetOnClose: true)
        let channel = FrameChannel(fd: fd)
        do {
            try channel.send(message: RequestEnvelope(token: endpoint.token, request: request))
            let reply = try Self.checked(try channel.receiveMessage(Reply.self))
            return (channel, reply)
        } catch {
            channel.close()
            throw error
        }
    }

    static func checked(_ reply: Reply) throws -> Reply {
        if let error = reply.error { throw error.sproutError }
        guard reply.protocolVersion == AgentProtocol.version else {
            throw SproutError(.protocolMismatch,
                "the agent speaks protocol \(reply.protocolVersion), this client speaks \(AgentProtocol.version); update the agent")
        }
        return reply
    }

    /// One request, one reply, connection closed.
    func call(_ request: AgentRequest) async throws -> Reply {
        try await onThread { [self] in
            let (channel, reply) = try connect(request)
            channel.close()
            return reply
        }
    }

    // MARK: Health

    /// The agent's version; throws `protocol_mismatch` for an incompatible agent.
    public func health() async throws -> Health {
        let reply = try await call(.health)
        guard let health = reply.health else { throw SproutError(.malformed, "health reply without health") }
        guard health.protocolVersion == AgentProtocol.version else {
            throw SproutError(.protocolMismatch,
                "agent \(health.agentVersion) speaks protocol \(health.protocolVersion), this client speaks \(AgentProtocol.version)")
        }
        return health
    }

    /// Ends the process holding the most memory in the sandbox (never the agent); nil if there was none.
    public func killLargest() async throws -> ProcessMemory? {
        try await call(.killLargest).victim
    }

    /// The sandbox's user `name` (`not_found` when it has none).
    public func lookupUser(_ name: String) async throws -> Account {
        guard let account = try await call(.lookupUser(UserRequest(name: name))).account else {
            throw SproutError(.malformed, "user.lookup reply without an account")
        }
        return account
    }

    /// Returns once the sandbox holds no TCP connection, this call's own
    /// included: the agent answers when nothing but this connection is open
    /// and then resets it itself, so its end is closed before this side sees
    /// the reset. `conflict` if something stays open for 2 s; an agent older
    /// than this call answers `malformed` (an unknown op).
    public func quiesce() async throws {
        try await onThread { [self] in
            let (channel, _) = try connect(.quiesce)
            defer { channel.close() }
            try channel.send(.end, [])
            Socket.setReceiveTimeout(channel.readFD, seconds: 10)
            while (try? channel.receive()) != nil {}
        }
    }

    /// Sets the sandbox's wall clock.
    public func setClock(unixNanos: Int64) async throws {
        _ = try await call(.setClock(ClockRequest(unixNanos: unixNanos)))
    }
}
