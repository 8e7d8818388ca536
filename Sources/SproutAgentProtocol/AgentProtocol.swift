import SproutCore

/// Constants of the host <-> agent protocol. See docs/agent-protocol.md.
public enum AgentProtocol {
    /// Bumped on any incompatible change. Both sides refuse a peer with another version.
    public static let version = 1
    /// The agent's own release, reported by `health`.
    public static let agentVersion = "0.1.0"
    /// The TCP port the agent listens on inside a sandbox.
    public static let defaultPort: UInt16 = 49983
    /// No frame may carry more than this many payload bytes.
    public static let maxFramePayload = 16 << 20
    /// File content travels in chunks of at most this size.
    public static let fileChunkSize = 1 << 20
    /// Seconds a new connection has to send its request envelope.
    public static let handshakeTimeoutSeconds = 10.0
}

/// The first frame on every connection: who is asking, in which protocol, for what.
public struct RequestEnvelope: Codable, Sendable {
    public var protocolVersion: Int
    public var token: String
    public var request: AgentRequest

    public init(token: String, request: AgentRequest, protocolVersion: Int = AgentProtocol.version) {
        self.protocolVersion = protocolVersion
        self.token = token
        self.request = request
    }
}


/// The agent's answer to a request: the first message frame it sends back.
/// Exactly one of the payload fields is set on success, `error` on failure.
public struct Reply: Codable, Sendable {
    public var protocolVersion: Int
    public var error: ErrorBody?
    public var health: Health?
    public var process: AgentProcess?
    public var processes: [AgentProcess]?
    public var file: FileInfo?
    public var entries: [FileInfo]?
    /// Bytes written, for `write`.
    public var size: Int64?
    /// The process `memory.killLargest` ended (nil: there was none to end).
    public var victim: ProcessMemory?
    /// The user `user.lookup` found.
    public var account: Account?

    public init(
        error: ErrorBody? = nil, health: Health? = nil, process: AgentProcess? = nil,
        processes: [AgentProcess]? = nil, file: FileInfo? = nil, entries: [FileInfo]? = nil, size: Int64? = nil,
        victim: ProcessMemory? = nil, account: Account? = nil
    ) {
        self.protocolVersion = AgentProtocol.version
        self.error = error
        self.health = health
        self.process = process
        self.processes = processes
        self.file = file
        self.entries = entries
        self.size = size
        self.victim = victim
        self.account = account
    }

    public static let ok = Reply()
    public static func failure(_ error: SproutError) -> Reply { Reply(error: ErrorBody(error)) }
}

/// Messages the agent sends after its reply on a streaming connection.
public struct Event: Codable, Sendable {
    public var exit: ProcessExit?
    public var watch: WatchEvent?
    public var error: ErrorBody?

    public init(exit: ProcessExit? = nil, watch: WatchEvent? = nil, error: ErrorBody? = nil) {
        self.exit = exit
        self.watch = watch
        self.error = error
    }
}

/// Messages a client sends on an open process or terminal stream.
public struct Control: Codable, Sendable {
    public var signal: Int32?
    public var resize: TerminalSize?

    public init(signal: Int32? = nil, resize: TerminalSize? = nil) {
        self.signal = signal
        self.resize = resize
    }
}

/// The agent's identity, for compatibility checks.
public struct Health: Codable, Sendable {
    public var protocolVersion: Int
    public var agentVersion: String
    public var pid: Int32
    public var uptimeSeconds: Double
    public var hostname: String
    /// The sandbox's wall clock when the agent answered (seconds since the
    /// epoch); nil from agents older than this field.
    public var unixTime: Double?

    public init(protocolVersion: Int, agentVersion: String, pid: Int32, uptimeSeconds: Double, hostname: String, unixTime: Double? = nil) {
        self.protocolVersion = protocolVersion
        self.agentVersion = agentVersion
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.hostname = hostname
        self.unixTime = unixTime
    }
}
