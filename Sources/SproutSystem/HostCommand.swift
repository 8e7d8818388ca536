import Glibc
import SproutCore

/// Runs host tools (`ip`, `iptables`, `runsc`, `debootstrap`) as supervised
/// children: own process group, minimal environment, output captured.
public enum HostCommand {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    public static let environment = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG=C.UTF-8",
    ]

    /// Runs `argv` to completion (blocking the calling thread). `input` is
    /// written to its stdin; `env` replaces the minimal default environment.
    /// Throws if it cannot start; returns its status.
    public static func capture(_ argv: [String], input: String? = nil, environment env: [String]? = nil) throws -> Output {
        guard let path = Spawn.resolveExecutable(argv[0], searchPath: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") else {
            throw SproutError(.unavailable, "\(argv[0]) is not installed")
        }
        let out = try Spawn.pipe()
        let err = try Spawn.pipe()
        var inPipe: (read: Int32, write: Int32)?
        var options = Spawn.Options()
        options.stdout = out.write
        options.stderr = err.write
        if input != nil {
            inPipe = try Spawn.pipe()
            options.stdin = inPipe!.read
        }
        let pid: pid_t
        do {
            pid = try Spawn.spawn(path: path, argv: argv, env: env ?? environment, options: options)
        } catch {
            [out.read, out.write, err.read, err.write].forEach { close($0) }
            if let inPipe { close(inPipe.read); close(inPipe.write) }
            throw error
        }
        close(out.write)
        close(err.write)
        if let inPipe, let input {
            close(inPipe.read)
            let fd = inPipe.write
            startThread {
                try? Descriptor.writeAll(fd, Array(input.utf8))
                close(fd)
            }
        }
        let (stdout, stderr) = drainBoth(out.read, err.read)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let decoded = decodeWaitStatus(status)
        return Output(status: decoded.code ?? (128 + (decoded.signal ?? 0)), stdout: stdout, stderr: stderr)
    }

    /// Runs a command whose children outlive it (e.g. `run --detach`): its
    /// output goes to /dev/null, so no pipe is held open by what it leaves
    /// running. Throws unless it exits 0.
    public static func runDetached(_ argv: [String]) throws {
        guard let path = Spawn.resolveExecutable(argv[0], searchPath: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin") else {
            throw SproutError(.unavailable, "\(argv[0]) is not installed")
        }
        let pid = try Spawn.spawn(path: path, argv: argv, env: environment, options: Spawn.Options())
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let decoded = decodeWaitStatus(status)
        guard decoded.code == 0 else {
            throw SproutError(.internal, "\(argv.prefix(3).joined(separator: " ")) failed (exit \(decoded.code ?? -1))")
        }
    }

    /// Runs `argv` and throws a clear error unless it exits 0.
    @discardableResult
    public static func run(_ argv: [String], input: String? = nil) throws -> String {
        let output = try capture(argv, input: input)
        guard output.status == 0 else {
            let detail = output.stderr.isEmpty ? output.stdout : output.stderr
            throw SproutError(.internal, "\(argv.prefix(3).joined(separator: " ")) failed (exit \(output.status)): \(detail.trimmed)")
        }
        return output.stdout
    }

    /// Reads two pipes to end of file without letting either fill up; closes both.
    static func drainBoth(_ a: Int32, _ b: Int32) -> (String, String) {
        var outputs: [[UInt8]] = [[], []]
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        var open = 2
        var buffer = [UInt8](repeating: 0, count: 16384)
        while open > 0 {
            if poll(&fds, 2, -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = read(fds[i].fd, &buffer, buffer.count)
                if n > 0 {
                    outputs[i] += buffer[0..<n]
                } else if n == 0 || errno != EINTR {
                    close(fds[i].fd)
                    fds[i].fd = -1
                    open -= 1
                }
            }
        }
        return (String(decoding: outputs[0], as: UTF8.self), String(decoding: outputs[1], as: UTF8.self))
    }
}

extension String {
    /// Without leading and trailing whitespace.
    public var trimmed: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
