import CSprout
import Glibc
import SproutAgent
import SproutAgentProtocol
import SproutCore
import SproutSystem

// sprout-agent: the daemon inside every sandbox. See docs/agent-protocol.md.
//
//   sprout-agent [--listen HOST:PORT] [--token-file PATH] [--workdir DIR] [--env K=V]... [--sudo [NAME]]
//
// Started as `sudo` (a symlink to it), it is the sandbox's sudo: the
// client of the agent's `--sudo` socket (see SudoCommand).
//
// The token comes from --token-file or the SPROUT_AGENT_TOKEN variable, which
// is removed from the environment so no child process inherits it.

func fail(_ message: String) -> Never {
    try? Descriptor.writeAll(2, Array("sprout-agent: \(message)\n".utf8))
    exit(2)
}

if SudoCommand.isInvoked(as: CommandLine.arguments.first ?? "") {
    SudoCommand.run(Array(CommandLine.arguments.dropFirst()))
}

// `sync` for the server, which cannot count on a root having one (an image's).
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == "--sync" {
    sync()
    exit(0)
}

// The agent re-executes itself to start a process as another user.
if CommandLine.arguments.count > 1 && CommandLine.arguments[1] == ExecAs.flag {
    ExecAs.run(Array(CommandLine.arguments.dropFirst(2)))
}

var host = "0.0.0.0"
var port = AgentProtocol.defaultPort
var tokenFile: String?
var workdir = "/"
var env: [String: String] = [:]
var sudoSocket: String?
var args = CommandLine.arguments.dropFirst()
while let arg = args.popFirst() {
    func value() -> String {
        guard let v = args.popFirst() else { fail("\(arg) needs a value") }
        return v
    }
    switch arg {
    case "--listen":
        let v = value()
        guard let colon = v.lastIndex(of: ":"), let p = UInt16(v[v.index(after: colon)...]) else {
            fail("--listen takes HOST:PORT, got \(v)")
        }
        host = String(v[..<colon])
        port = p
    case "--token-file": tokenFile = value()
    case "--workdir": workdir = value()
    case "--sudo": sudoSocket = args.first.map { $0.hasPrefix("--") } == false ? value() : Sudo.socketName
    case "--env":
        let v = value()
        guard let eq = v.firstIndex(of: "="), eq != v.startIndex else { fail("--env takes K=V, got \(v)") }
        env[String(v[..<eq])] = String(v[v.index(after: eq)...])
    case "--version":
        print("sprout-agent \(AgentProtocol.agentVersion) (protocol \(AgentProtocol.version))")
        exit(0)
    case "-h", "--help":
        print("usage: sprout-agent [--listen HOST:PORT] [--token-file PATH] [--workdir DIR] [--env K=V]... [--sudo [NAME]]")
        exit(0)
    default:
        fail("unknown argument \(arg)")
    }
}

var token: String
if let tokenFile {
    guard let bytes = try? Descriptor.readFile(tokenFile, limit: 4096) else { fail("cannot read \(tokenFile)") }
    token = String(decoding: bytes, as: UTF8.self).trimmingWhitespace()
} else if let value = getenv("SPROUT_AGENT_TOKEN") {
    token = String(cString: value)
    unsetenv("SPROUT_AGENT_TOKEN")
} else {
    fail("no token: pass --token-file or set SPROUT_AGENT_TOKEN")
}
guard token.utf8.count >= 16 else { fail("the token must be at least 16 characters") }

ignoreSIGPIPE()
// Orphaned grandchildren are re-parented to us and reaped (we are PID 1 in a sandbox).
_ = csprout_set_child_subreaper()

let server = AgentServer(configuration: AgentConfiguration(
    token: token, host: host, port: port, defaults: ProcessDefaults(env: env, cwd: workdir)))
let listener: (fd: Int32, port: UInt16)
do {
    listener = try server.bind()
} catch {
    fail("\(error)")
}
if let sudoSocket {
    do {
        try server.startSudo(name: sudoSocket)
    } catch {
        fail("cannot serve sudo: \(error)")
    }
}
// The host waits for this line to know the agent is ready.
try? Descriptor.writeAll(1, Array("sprout-agent listening on \(host):\(listener.port)\n".utf8))
server.serve(listener: listener.fd)

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
