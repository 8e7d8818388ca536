import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// `sudo` where setuid programs cannot gain privileges (gVisor ignores the
/// setuid bit: every process runs as if `no_new_privs` were set). The
/// sandbox's `sudo` is then the agent's own client (`SudoCommand`, the agent
/// binary started under the name `sudo`), which asks the agent, root and PID
/// 1, over a Unix socket to run the command. The agent learns who asks from
/// the credentials the request carries (SCM_CREDENTIALS: the kernel lets a
/// process send only its own ids; gVisor's SO_PEERCRED names the wrong user),
/// decides with the sandbox's own `/etc/sudoers` (the real `sudo -l`, run as
/// root, which needs no setuid) and runs the command on the caller's own
/// standard input, output and error (passed over the socket).
///
/// The wire: the client's first message carries its three descriptors and a
/// frame with the request; every later message both ways is a frame, a
/// 4-byte big-endian length and JSON. The client may send `signal`s (relayed
/// to the command); the agent answers with `error` or, at the end, `exit`.
public enum Sudo {
    /// The abstract socket name (no file: nothing to find in a layer or an env).
    public static let socketName = "sprout-agent-sudo"

    /// What the client asks for.
    public struct Request: Codable, Sendable, Equatable {
        /// The command and its arguments (empty with `login` or `shell`: an interactive shell).
        public var command: [String]
        /// `-u`: the user to run as (default root).
        public var user: String?
        /// The caller's working directory and environment.
        public var cwd: String
        public var environment: [String: String]
        /// `-E`: keep the caller's environment; `--preserve-env=A,B`: keep these.
        public var preserveEnvironment: Bool = false
        public var preserve: [String] = []
        /// `VAR=value` words before the command.
        public var assignments: [String: String] = [:]
        /// `-i`: the target's login shell; `-s`: a shell; `-H`: HOME is the target's.
        public var login: Bool = false
        public var shell: Bool = false
        public var setHome: Bool = false
        /// `-D DIR`.
        public var directory: String?
        /// `-l`: list what the caller may run; `-v`: only check the policy.
        public var list: Bool = false
        public var validateOnly: Bool = false

        public init(command: [String], cwd: String, environment: [String: String]) {
            self.command = command
            self.cwd = cwd
            self.environment = environment
        }
    }

    /// A message from the client after its request.
    public struct ClientMessage: Codable, Sendable {
        public var signal: Int32
    }

    /// A message from the agent: an error (the client prints it and exits 1),
    /// or the command's end.
    public struct Reply: Codable, Sendable {
        public var error: String?
        public var exit: ProcessExit?
    }

    // MARK: Framing

    static func send<M: Encodable>(_ message: M, on fd: Int32) throws {
        let body = try WireJSON.encode(message)
        let n = UInt32(body.count)
        try Descriptor.writeAll(fd, [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + body)
    }

    /// The next frame, or nil at end of stream.
    static func receive<M: Decodable>(_ type: M.Type, on fd: Int32) throws -> M? {
        guard let header = try readExactly(fd, 4) else { return nil }
        let length = header.reduce(0) { $0 << 8 | Int($1) }
        guard length <= 4 << 20 else { throw SproutError(.tooLarge, "a sudo message of \(length) bytes") }
        guard let body = try readExactly(fd, length) else { throw SproutError(.malformed, "a sudo message was cut short") }
        return try WireJSON.decode(type, body)
    }

    /// `count` bytes, or nil if the stream ended before the first.
    static func readExactly(_ fd: Int32, _ count: Int) throws -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, count - got) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw SproutError.system("read from the sudo socket") }
            if n == 0 {
                if got == 0 { return nil }
                throw SproutError(.malformed, "a sudo message was cut short")
            }
            got += n
        }
        return out
    }
}
