import ArgumentParser
import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout sandbox ...`
struct SandboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sandbox", abstract: "Create, use and kill sandboxes.",
        subcommands: [
            SandboxCreate.self, SandboxList.self, SandboxShow.self, SandboxExec.self, SandboxRunCode.self, SandboxAttach.self, SandboxShell.self,
            SandboxFiles.self, SandboxTimeout.self, SandboxNetwork.self, SandboxMetricsCommand.self, SandboxSnapshot.self, SandboxPause.self, SandboxResume.self, SandboxFork.self,
            SandboxKill.self,
        ])
}

struct SandboxCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Start a sandbox from an env.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The env to start from (empty, debian, or an env id).") var env: String
    @Option(help: "Seconds until the sandbox is killed unless extended.") var timeout: Int?
    @Option(help: "CPU limit in cores.") var cpu: Double?
    @Option(help: "Memory limit in MiB.") var memory: Int?
    @Option(name: .customLong("env"), help: "Environment variable KEY=VALUE (repeatable).") var envVars: [String] = []
    @Option(name: .customLong("meta"), help: "Metadata KEY=VALUE (repeatable).") var meta: [String] = []
    @Flag(name: .customLong("no-internet"), help: "No outbound network access.") var noInternet = false
    @Option(help: "Allow outbound traffic only to this IPv4 CIDR (repeatable).") var egress: [String] = []
    @Option(help: "What the sandbox may write, in MiB (default 10240); beyond it the sandbox is stopped.") var disk: Int?
    @Option(help: "What the timeout does: kill (default) or pause (every process kept; gVisor).") var onTimeout: String?
    @Flag(help: "With --on-timeout pause or --idle-pause: the next request that needs the sandbox resumes it.") var autoResume = false
    @Option(help: "Pause after this many seconds without a request or an open stream (gVisor).") var idlePause: Int?
    @Flag(help: "Timeout and idle pauses keep only the files (it boots again on resume; runc too).") var pauseFilesOnly = false
    @Option(help: "Mount a volume: NAME:/path or NAME:/path:ro (repeatable).") var volume: [String] = []
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let volumes = try volume.map { try API.VolumeMount(parsing: $0) }
        let request = API.CreateSandbox(
            env: env, timeoutSeconds: timeout, cpu: cpu, memoryMB: memory,
            envVars: try keyValues(envVars, what: "--env"), metadata: try keyValues(meta, what: "--meta"),
            internet: noInternet ? false : nil, egress: egress.isEmpty ? nil : egress, diskMB: disk,
            onTimeout: onTimeout, autoResume: autoResume ? true : nil, idlePauseSeconds: idlePause, pauseMemory: pauseFilesOnly ? false : nil,
            volumes: volumes.isEmpty ? nil : volumes)
        let sandbox = try await client.client().createSandbox(request)
        if json { try Output.json(sandbox) } else { print(sandbox.id) }
    }
}

struct SandboxList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List sandboxes.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Include killed sandboxes.") var all = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let sandboxes = try await client.client().sandboxes(includeEnded: all)
        if json { return try Output.json(sandboxes) }
        // In a fleet, which node holds each.
        let fleet = sandboxes.contains { $0.node != nil }
        Output.table(["ID", "ENV", "STATE", "CPU", "MEMORY", "EXPIRES", "ADDRESS"] + (fleet ? ["NODE"] : []), sandboxes.map {
            [$0.id, $0.env, $0.state.rawValue, String($0.cpu), "\($0.memoryMB) MiB", Output.date($0.expiresAt), $0.address ?? "-"]
                + (fleet ? [$0.node ?? "-"] : [])
        })
    }
}

struct SandboxShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one sandbox.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let s = try await client.client().sandbox(id)
        if json { return try Output.json(s) }
        var rows: [(String, String)] = [
            ("id", s.id), ("env", s.env), ("state", s.state.rawValue), ("runtime", s.runtime), ("team", s.team),
            ("created", Output.date(s.createdAt)), ("expires", Output.date(s.expiresAt)), ("ended", Output.date(s.endedAt)),
            ("cpu", String(s.cpu)), ("memory", "\(s.memoryMB) MiB"), ("internet", s.internet ? "on" : "off"),
            ("address", s.address ?? "-"), ("env vars", s.envVarNames.joined(separator: ", ")),
            ("metadata", s.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")),
            ("volumes", (s.volumes ?? []).map(\.text).joined(separator: ", ")),
        ]
        if let node = s.node { rows.append(("node", node)) }
        if let error = s.error { rows.append(("error", error)) }
        for (k, v) in rows { print("\(k.padding(toLength: 9, withPad: " ", startingAt: 0)) \(v)") }
    }
}

struct SandboxTimeout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "timeout", abstract: "Set a sandbox's timeout from now.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Argument(help: "Seconds from now.") var seconds: Int

    func run() async throws {
        let s = try await client.client().setTimeout(id, seconds: seconds)
        print("\(s.id) expires at \(Output.date(s.expiresAt))")
    }
}

struct SandboxNetwork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network", abstract: "Replace a running sandbox's outbound policy (no options: open internet).")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "No outbound traffic at all.") var noInternet = false
    @Option(help: "Allow outbound traffic only to this IPv4 CIDR (repeatable).") var egress: [String] = []

    func run() async throws {
        let s = try await client.client().setNetwork(id, API.SetNetwork(internet: !noInternet, egress: egress))
        let policy = !s.internet ? "no internet" : (s.egress ?? []).isEmpty ? "open internet" : "egress to " + (s.egress ?? []).joined(separator: ", ")
        print("\(s.id): \(policy)")
    }
}

struct SandboxMetricsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "metrics", abstract: "A sandbox's CPU, memory and disk over time (sampled every 5 s while it runs).")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Option(help: "Only samples from this many seconds ago on.") var since: Double?
    @Flag(help: "Keep printing new samples as they come (Ctrl-C to stop).") var watch = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let api = try client.client()
        var start = since.map { Date().timeIntervalSince1970 - $0 }
        let samples = try await api.metrics(id, start: start)
        if json && !watch { return try Output.json(samples) }
        print(Self.header)
        samples.forEach { print(Self.row($0)) }
        guard watch else { return }
        start = samples.last.map { $0.timestamp + 0.001 } ?? start
        while true {
            try await Task.sleep(for: .seconds(5))  // the server samples every 5 s
            let new = try await api.metrics(id, start: start)
            new.forEach { print(Self.row($0)) }
            if let last = new.last { start = last.timestamp + 0.001 }
        }
    }

    static let header = "TIME                  CPU%    MEMORY (MiB)      DISK (MiB)"

    static func row(_ m: API.SandboxMetric) -> String {
        let time = Output.date(m.timestamp)
        func pad(_ text: String, _ width: Int) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
        return pad(time, 22) + pad(String(format: "%.1f", m.cpuUsedPct), 8)
            + pad("\(m.memUsedBytes >> 20)/\(m.memTotalBytes >> 20)", 18) + "\(m.diskUsedBytes >> 20)/\(m.diskTotalBytes >> 20)"
    }
}

struct SandboxPause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Save a sandbox's memory and stop it; resume brings every process back (gVisor).")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(name: .customLong("auto-resume"), help: "Resume on the next request that needs the sandbox.") var autoResume = false
    @Flag(help: "Keep only the files: its processes end and it boots again on resume (runc too).") var filesOnly = false

    func run() async throws {
        let s = try await client.client().pause(id, autoResume: autoResume, memory: !filesOnly)
        if filesOnly { return print("\(s.id) \(s.state) (files only)") }
        let memory = s.memory.map { " (\(Output.bytes($0.logicalBytes)) of memory images, \(Output.bytes($0.storedBytes)) stored)" } ?? ""
        print("\(s.id) \(s.state)\(memory)")
    }
}

struct SandboxResume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused sandbox.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let s = try await client.client().resume(id)
        print("\(s.id) \(s.state)")
    }
}

struct SandboxFork: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fork", abstract: "Start copies of a running sandbox, processes included; it keeps running (gVisor).")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Option(help: "How many copies.") var count = 1
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let forks = try await client.client().fork(id, count: count)
        if json { return try Output.json(forks) }
        for s in forks { print("\(s.id) \(s.address ?? "")") }
    }
}

struct SandboxKill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Kill a sandbox.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let s = try await client.client().killSandbox(id)
        print("\(s.id) \(s.state)")
    }
}

struct SandboxExec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec", abstract: "Run a command in a sandbox; exits with its exit code.")
    @OptionGroup var client: ClientOptions
    @Option(help: "Working directory.") var cwd: String?
    @Option(name: .customLong("env"), help: "Environment variable KEY=VALUE (repeatable).") var envVars: [String] = []
    @Option(help: "Run as this user of the sandbox (default root).") var user: String?
    @Option(help: "A name to find the process by later (`sprout sandbox attach ID TAG`).") var tag: String?
    @Flag(help: "Start it, print its id and leave it running; follow it with `sprout sandbox attach`.") var detach = false
    @Argument var id: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command: [String] = []

    func run() async throws {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { throw SproutError(.invalidArgument, "give a command after --") }
        if detach {
            let started = try await client.client().start(id, API.Exec(
                cmd: argv, cwd: cwd, env: try keyValues(envVars, what: "--env"), tag: tag, user: user))
            print(started.id)
            return
        }
        let request = API.Exec(cmd: argv, cwd: cwd, env: try keyValues(envVars, what: "--env"), tag: tag, user: user)
        // Like `docker exec -i`: what is piped in streams to the process's
        // standard input as it comes, and its end closes it. A terminal on
        // stdin is not input (as without -i); `sprout sandbox shell` is for that.
        if isatty(0) == 0, let input = Self.standardInput() {
            try Self.finish(try await client.client().execStreaming(id, request, input: input, onEvent: Self.printEvent))
        } else {
            try Self.finish(try await client.client().exec(id, request, onEvent: Self.printEvent))
        }
    }

    /// Reads standard input in chunks on a blocking-I/O thread (nil at its
    /// end); nil when there is none (descriptor 0 closed or write-only).
    static func standardInput() -> (@Sendable () async throws -> [UInt8]?)? {
        let flags = fcntl(0, F_GETFL)
        guard flags >= 0, flags & O_ACCMODE != O_WRONLY else { return nil }
        return {
            try await BlockingIO.run {
                var chunk = [UInt8](repeating: 0, count: 64 << 10)
                let n = try chunk.withUnsafeMutableBytes { try Descriptor.read(0, into: $0.baseAddress!, count: $0.count) }
                return n == 0 ? nil : Array(chunk[0..<n])
            }
        }
    }

    @Sendable static func printEvent(_ event: API.ExecEvent) {
        if let bytes = event.stdoutBytes { FileHandle.standardOutput.write(Data(bytes)) }
        if let bytes = event.stderrBytes { FileHandle.standardError.write(Data(bytes)) }
        if let error = event.error { FileHandle.standardError.write(Data("sprout: \(error.message)\n".utf8)) }
    }

    /// Exits as the process did.
    static func finish(_ exit: API.Exit) throws {
        if let code = exit.code, code != 0 { throw ExitCode(code) }
        if let signal = exit.signal { throw ExitCode(128 + signal) }
    }

}

struct SandboxAttach: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach", abstract: "Follow a process started earlier (its output from now on); exits with its exit code.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Argument(help: "The process: its id (p3, from exec --detach) or its tag.") var process: String

    func run() async throws {
        try SandboxExec.finish(try await client.client().attach(id, process: process, onEvent: SandboxExec.printEvent))
    }
}

struct SandboxSnapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Freeze a sandbox's changes into a new env (the sandbox keeps running).")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Option(help: "The new env's name (default: its parent's).") var name: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let env = try await client.client().snapshot(id, name: name)
        if json { try Output.json(env) } else { print(env.id) }
    }
}
