import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Decides a `sudo` request the way the sandbox's own sudo would: the real
/// `sudo -l`, run as root (where setuid is not needed), says what the caller
/// may run; the command's environment follows sudo's defaults (`env_reset`,
/// `secure_path`, the `SUDO_*` variables).
///
/// One difference, on purpose: a rule that wants a password is refused,
/// since there is no one to ask (sandbox users have no password; `sudo -n`
/// behaves the same on a host). Which rule decides is read from the listing
/// as sudo reads sudoers, the last match winning; a rule the listing does not
/// show plainly (a command alias, a pattern) counts as passwordless once
/// `sudo -l` allowed the command.
struct SudoPolicy {
    /// The real sudo, which keeps the policy (the agent's client sits
    /// earlier on PATH, in /usr/local/bin).
    static let realSudo = ["/usr/bin/sudo", "/bin/sudo"]
    /// What `env_reset` keeps of the caller's environment.
    static let kept: Set<String> = ["TERM", "COLORTERM", "DISPLAY", "XAUTHORITY", "LANG", "LANGUAGE", "TZ", "COLORS", "LS_COLORS", "PS1", "PS2"]
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    enum Launch {
        /// Nothing to run: answer with this exit (`-v`, `-k`).
        case done(ProcessExit)
        case run(Command)
    }

    struct Command {
        var executable: String
        var argv: [String]
        var environment: [String]
        var cwd: String
        /// Who it runs as (nil: root).
        var account: Account?
    }

    func decide(_ request: Sudo.Request, caller: Account, processes: ProcessTable) throws -> Launch {
        let target = try Accounts.find(request.user ?? "root")
        guard let sudo = Self.realSudo.first(where: { access($0, X_OK) == 0 }) else {
            guard caller.uid == 0 else { throw SproutError(.forbidden, "this sandbox has no sudo policy (no /usr/bin/sudo)") }
            return try .run(command(request, caller: caller, target: target, securePath: nil))
        }
        if request.list {
            // The real listing, as root, on the caller's own output.
            var argv = [sudo, "-l", "-U", caller.name]
            if request.user != nil { argv += ["-u", target.name] }
            return .run(Command(executable: sudo, argv: argv + request.command, environment: ["PATH=\(Self.defaultPath)"], cwd: "/", account: nil))
        }
        let listing = try capture([sudo, "-n", "-l", "-U", caller.name], processes: processes)
        let securePath = Self.securePath(listing.output)
        if caller.uid != 0 {
            guard listing.status == 0, !listing.output.contains("is not allowed to run sudo") else {
                throw SproutError(.forbidden, "\(caller.name) is not in the sudoers file.")
            }
            let resolved = try command(request, caller: caller, target: target, securePath: securePath)
            let checked = [resolved.executable] + resolved.argv.dropFirst()
            let allowed = try capture([sudo, "-n", "-l", "-U", caller.name, "-u", target.name, "--"] + checked, processes: processes)
            guard allowed.status == 0 else {
                throw SproutError(.forbidden,
                    "Sorry, user \(caller.name) is not allowed to execute '\(checked.joined(separator: " "))' as \(target.name) on \(Self.hostname()).")
            }
            guard !Self.needsPassword(Self.rules(listing.output), command: resolved.executable) else {
                throw SproutError(.forbidden, "a password is required (Sprout's sudo cannot ask for one; give the rule NOPASSWD)")
            }
            if request.validateOnly { return .done(ProcessExit(code: 0)) }
            return .run(resolved)
        }
        if request.validateOnly { return .done(ProcessExit(code: 0)) }
        return try .run(command(request, caller: caller, target: target, securePath: securePath))
    }

    /// What runs, as whom, where, with which environment.
    func command(_ request: Sudo.Request, caller: Account, target: Account, securePath: String?) throws -> Command {
        var env: [String: String]
        if request.preserveEnvironment {
            env = request.environment
        } else {
            env = request.environment.filter { Self.kept.contains($0.key) || $0.key.hasPrefix("LC_") }
        }
        for name in request.preserve { env[name] = request.environment[name] }
        let path = securePath ?? request.environment["PATH"] ?? Self.defaultPath
        env["PATH"] = path
        if !request.preserveEnvironment || request.setHome || request.login { env["HOME"] = target.home }
        env["SHELL"] = target.shell
        env["USER"] = target.name
        env["LOGNAME"] = target.name
        env["MAIL"] = "/var/mail/\(target.name)"
        env["SUDO_USER"] = caller.name
        env["SUDO_UID"] = String(caller.uid)
        env["SUDO_GID"] = String(caller.gid)
        env["SUDO_COMMAND"] = request.command.joined(separator: " ")
        for (key, value) in request.assignments { env[key] = value }

        var cwd = request.directory ?? request.cwd
        let executable: String
        let argv: [String]
        if request.login || request.shell {
            let shell = request.login ? target.shell : (request.environment["SHELL"] ?? target.shell)
            let name = String(shell.split(separator: "/").last ?? "sh")
            executable = shell
            argv = [request.login ? "-" + name : name] + (request.command.isEmpty ? [] : ["-c", Self.shellWords(request.command)])
            if request.login { cwd = target.home }
            env["SUDO_COMMAND"] = ([shell] + (request.command.isEmpty ? [] : ["-c", Self.shellWords(request.command)])).joined(separator: " ")
        } else {
            guard let first = request.command.first else { throw SproutError(.invalidArgument, "no command to run") }
            guard let resolved = Spawn.resolveExecutable(first, searchPath: path) else {
                throw SproutError(.notFound, "\(first): command not found")
            }
            executable = resolved
            argv = request.command
            env["SUDO_COMMAND"] = ([resolved] + request.command.dropFirst()).joined(separator: " ")
        }
        let account: Account? = target.uid == 0 && target.gid == 0 ? nil : target
        return Command(executable: executable, argv: argv, environment: env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" },
                       cwd: cwd, account: account)
    }

    /// Runs `argv` as root to its end; its status and what it printed.
    func capture(_ argv: [String], processes: ProcessTable) throws -> (status: Int32, output: String) {
        let (process, output) = try Spawn.withOutputPipe(stderrToo: true) { options in
            try processes.startUnlisted(executable: argv[0], argv: argv, env: ["PATH=\(Self.defaultPath)", "LANG=C"], account: nil, options: options)
        }
        let bytes = Spawn.collect(output, limit: 1 << 20)
        let exit = process.waitForExit()
        return (exit.code ?? 128 + (exit.signal ?? 0), String(decoding: bytes, as: UTF8.self))
    }

    /// `secure_path` from `sudo -l`'s "Matching Defaults entries" (`\:` is a colon there).
    static func securePath(_ listing: String) -> String? {
        guard let start = listing.firstRange(of: "secure_path=") else { return nil }
        var value = ""
        var rest = listing[start.upperBound...].makeIterator()
        while let c = rest.next() {
            if c == "\\" {
                if let escaped = rest.next() { value.append(escaped) }
                continue
            }
            if c == "," || c == "\n" { break }
            value.append(c)
        }
        return value.isEmpty ? nil : value
    }

    /// The rule lines `sudo -l` lists under "may run the following commands".
    static func rules(_ listing: String) -> [String] {
        let lines = listing.split(separator: "\n", omittingEmptySubsequences: false)
        guard let header = lines.firstIndex(where: { $0.contains("may run the following commands") }) else { return [] }
        return lines[(header + 1)...].prefix { $0.hasPrefix(" ") || $0.hasPrefix("\t") }.map { String($0) }.filter { !$0.allSatisfy(\.isWhitespace) }
    }

    /// Whether the rule that decides for `command` (the last listed one whose
    /// commands are `ALL` or name it) wants a password: its line carries no
    /// `NOPASSWD` tag before that command (tags carry on along a line).
    static func needsPassword(_ rules: [String], command: String) -> Bool {
        for rule in rules.reversed() {
            // "(ALL : ALL) NOPASSWD: ALL", "(root) /usr/bin/apt, NOPASSWD: /usr/bin/id"
            let body = rule.drop { $0 != ")" }.dropFirst()
            var passwordless = false
            var decides: Bool?
            for item in body.split(separator: ",") {
                var words = item.split(separator: " ")
                while let tag = words.first, tag.hasSuffix(":") {
                    if tag == "NOPASSWD:" { passwordless = true }
                    if tag == "PASSWD:" { passwordless = false }
                    words.removeFirst()
                }
                if let first = words.first, first == "ALL" || first == Substring(command) { decides = passwordless }
            }
            if let decides { return !decides }
        }
        return false
    }

    /// The command as sudo gives it to a shell's `-c`: every character but
    /// letters, digits, `_`, `-` and `$` escaped with a backslash.
    static func shellWords(_ command: [String]) -> String {
        command.map { word in
            var out = ""
            for c in word {
                if c.isLetter || c.isNumber || c == "_" || c == "-" || c == "$" { out.append(c) } else { out += "\\\(c)" }
            }
            return out
        }.joined(separator: " ")
    }

    static func hostname() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        return cStringToString(name)
    }
}
