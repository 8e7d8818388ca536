import CSprout
import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// `sudo` in a gVisor sandbox: the agent binary run under that name. Parses
/// sudo's command line, hands the request and its own standard input,
/// output and error to the agent (see `Sudo`), relays signals, and exits as
/// the command did.
public enum SudoCommand {
    /// Whether the program was started as `sudo` (a symlink to the agent).
    public static func isInvoked(as argv0: String) -> Bool {
        argv0.split(separator: "/").last == "sudo"
    }

    static let usage = """
        usage: sudo [-EHiKklnsSv] [-u user] [-D directory] [--preserve-env[=list]] [VAR=value]... [--] command [arg ...]
        Sprout's sudo: the sandbox's agent runs the command if /etc/sudoers allows it (gVisor ignores setuid).
        """

    /// Parses `arguments` (without argv[0]) into a request; nil for what needs no agent (help, version).
    static func parse(_ arguments: [String], cwd: String, environment: [String: String]) throws -> Sudo.Request? {
        var request = Sudo.Request(command: [], cwd: cwd, environment: environment)
        var args = arguments[...]
        var onlyReset = false
        func value(_ flag: String, _ attached: Substring?) throws -> String {
            if let attached, !attached.isEmpty { return String(attached) }
            guard let next = args.popFirst() else { throw SproutError(.invalidArgument, "option requires an argument -- '\(flag)'") }
            return next
        }
        parsing: while let arg = args.first, arg.hasPrefix("-"), arg != "-" {
            args.removeFirst()
            if arg == "--" { break parsing }
            if arg.hasPrefix("--") {
                let (name, attached) = arg.firstIndex(of: "=").map { (String(arg[..<$0]), arg[arg.index(after: $0)...]) } ?? (arg, nil)
                switch name {
                case "--user": request.user = try value("u", attached)
                case "--preserve-env":
                    if let attached { request.preserve += attached.split(separator: ",").map(String.init) } else { request.preserveEnvironment = true }
                case "--set-home": request.setHome = true
                case "--login": request.login = true
                case "--shell": request.shell = true
                case "--non-interactive", "--stdin", "--askpass", "--preserve-groups": break
                case "--chdir": request.directory = try value("D", attached)
                case "--list": request.list = true
                case "--validate": request.validateOnly = true
                case "--reset-timestamp", "--remove-timestamp": onlyReset = true
                case "--help": return nil
                case "--version": return nil
                default: throw SproutError(.invalidArgument, "unrecognized option '\(name)'")
                }
                continue
            }
            var letters = arg.dropFirst()
            while let letter = letters.popFirst() {
                switch letter {
                case "u": request.user = try value("u", letters); letters = ""
                case "D": request.directory = try value("D", letters); letters = ""
                case "E": request.preserveEnvironment = true
                case "H": request.setHome = true
                case "i": request.login = true
                case "s": request.shell = true
                case "l": request.list = true
                case "v": request.validateOnly = true
                case "k", "K": onlyReset = true
                case "n", "S", "A", "P": break
                case "h", "V": return nil
                default: throw SproutError(.invalidArgument, "invalid option -- '\(letter)'")
                }
            }
        }
        while let word = args.first, let eq = word.firstIndex(of: "="), eq != word.startIndex, !word[..<eq].contains("/") {
            request.assignments[String(word[..<eq])] = String(word[word.index(after: eq)...])
            args.removeFirst()
        }
        request.command = Array(args)
        if request.login && request.shell { throw SproutError(.invalidArgument, "you may not specify both the -i and -s options") }
        if request.command.isEmpty && !request.login && !request.shell && !request.list && !request.validateOnly {
            if onlyReset { request.validateOnly = true } else { throw SproutError(.invalidArgument, usage) }
        }
        return request
    }

    /// Runs `sudo` with `arguments` (argv without argv[0]) and exits.
    public static func run(_ arguments: [String]) -> Never {
        func fail(_ message: String) -> Never {
            try? Descriptor.writeAll(2, Array("sudo: \(message)\n".utf8))
            exit(1)
        }
        var environment: [String: String] = [:]
        var cursor = environ
        while let entry = cursor.pointee {
            let text = String(cString: entry)
            if let eq = text.firstIndex(of: "=") { environment[String(text[..<eq])] = String(text[text.index(after: eq)...]) }
            cursor += 1
        }
        var cwdBuffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let cwd = getcwd(&cwdBuffer, cwdBuffer.count) != nil ? cStringToString(cwdBuffer) : "/"
        let request: Sudo.Request
        do {
            guard let parsed = try parse(arguments, cwd: cwd, environment: environment) else {
                print(arguments.contains(where: { $0 == "-V" || $0 == "--version" }) ? "Sudo version 1.9 (Sprout: run by the sandbox's agent)" : usage)
                exit(0)
            }
            request = parsed
        } catch let error as SproutError {
            fail(error.message)
        } catch {
            fail("\(error)")
        }
        let name = environment["SPROUT_SUDO_SOCKET"] ?? Sudo.socketName
        let socket = csprout_unix_connect_abstract(name)
        guard socket >= 0 else { fail("cannot reach the sandbox's agent (@\(name)): \(String(cString: strerror(errno)))") }
        do {
            let body = try WireJSON.encode(request)
            let n = UInt32(body.count)
            let header: [UInt8] = [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
            let stdio: [Int32] = [0, 1, 2]
            let sent = header.withUnsafeBytes { raw in stdio.withUnsafeBufferPointer { csprout_send_request(socket, raw.baseAddress, 4, $0.baseAddress, 3) } }
            guard sent == 4 else { throw SproutError.system("send to the agent") }
            try Descriptor.writeAll(socket, body)
        } catch {
            fail("\(error)")
        }
        relaySignals(to: socket)
        while true {
            let reply: Sudo.Reply?
            do {
                reply = try Sudo.receive(Sudo.Reply.self, on: socket)
            } catch {
                fail("\(error)")
            }
            guard let reply else { fail("the sandbox's agent closed the connection") }
            if let error = reply.error { fail(error) }
            if let status = reply.exit {
                if let signal = status.signal {
                    // End as the command did: by its signal.
                    var unblock = sigset_t()
                    sigemptyset(&unblock)
                    sigaddset(&unblock, signal)
                    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
                    Glibc.signal(signal, SIG_DFL)
                    raise(signal)
                    exit(128 + signal)
                }
                exit(status.code ?? 1)
            }
        }
    }

    /// Signals sent to `sudo` (a terminal's ^C, `kill`) go to the command.
    static func relaySignals(to socket: Int32) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT] { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let relayed = set
        startThread {
            var waitSet = relayed
            while true {
                var signal: Int32 = 0
                guard sigwait(&waitSet, &signal) == 0 else { continue }
                try? Sudo.send(Sudo.ClientMessage(signal: signal), on: socket)
            }
        }
    }
}
