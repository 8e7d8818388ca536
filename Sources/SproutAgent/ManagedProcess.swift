import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// A process the agent started, with its output fanned out to every attached
/// client connection.
///
/// Output is read by one thread per stream and written to subscribers as it
/// arrives; with no subscriber it is discarded, so a process never blocks on a
/// client that went away. The exit event is sent only after both output
/// streams reached end of file (or a short grace period after the process was
/// reaped, in case a background child keeps them open), so every byte arrives
/// before it.
final class ManagedProcess: @unchecked Sendable {
    let id: String
    let pid: pid_t
    let tag: String?
    let cmd: [String]
    let cwd: String
    let isTerminal: Bool
    let startedAt: Double

    private let lock = Lock()
    private var subscribers: [Int: FrameChannel] = [:]
    private var nextSubscriber = 0
    private var openStreams: Int
    private var waitStatus: ProcessExit?
    private(set) var exit: ProcessExit?

    /// Guards the input descriptor so it is never written after close.
    private let inputLock = Lock()
    private var inputFD: Int32?
    /// Set once the client has sent its end of input (guarded by `inputLock`).
    private var inputEndedByClient = false
    /// A terminal's master side: output is read from it, input written to it.
    private let terminalFD: Int32?

    /// Seconds to wait for output to end after the process was reaped.
    static let outputGraceSeconds = 0.5

    init(
        id: String, pid: pid_t, tag: String?, cmd: [String], cwd: String,
        inputFD: Int32?, terminalFD: Int32?, streamCount: Int
    ) {
        self.id = id
        self.pid = pid
        self.tag = tag
        self.cmd = cmd
        self.cwd = cwd
        self.isTerminal = terminalFD != nil
        self.startedAt = wallClockSeconds()
        self.inputFD = inputFD
        self.terminalFD = terminalFD
        self.openStreams = streamCount
    }

    var info: AgentProcess {
        lock.withLock {
            AgentProcess(id: id, pid: pid, tag: tag, cmd: cmd, cwd: cwd, pty: isTerminal, startedAt: startedAt, exit: exit)
        }
    }

    var isRunning: Bool { lock.withLock { waitStatus == nil } }

    /// Blocks until the process has exited (and its output, if any, ended).
    func waitForExit() -> ProcessExit {
        lock.withLock {
            while exit == nil { lock.wait() }
            return exit!
        }
    }

    // MARK: Subscribers

    /// Sends `reply` on `channel` and attaches it, atomically with respect to
    /// output, so the reply is the first frame the client sees. Returns the
    /// subscription key, or nil if the process had already finished (the exit
    /// event has then been sent too).
    func attach(_ channel: FrameChannel, reply: (AgentProcess) -> Reply) throws -> Int? {
        lock.lock()
        defer { lock.unlock() }
        let current = AgentProcess(id: id, pid: pid, tag: tag, cmd: cmd, cwd: cwd, pty: isTerminal, startedAt: startedAt, exit: exit)
        try channel.send(message: reply(current))
        if let exit {
            try channel.send(message: Event(exit: exit))
            return nil
        }
        nextSubscriber += 1
        subscribers[nextSubscriber] = channel
        return nextSubscriber
    }

    func detach(_ key: Int) {
        lock.withLock { _ = subscribers.removeValue(forKey: key) }
    }

    private func publish(_ kind: FrameKind, _ bytes: UnsafeRawBufferPointer) {
        let targets = lock.withLock { subscribers }
        for (key, channel) in targets {
            do {
                try channel.send(kind, bytes)
            } catch {
                detach(key)
            }
        }
    }

    // MARK: Output

    /// Starts a thread that copies `fd` to subscribers as `kind` frames until EOF.
    func startReader(fd: Int32, kind: FrameKind) {
        startThread { [self] in
            let size = 64 * 1024
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
            defer { buffer.deallocate() }
            while true {
                let n = Glibc.read(fd, buffer.baseAddress!, size)
                if n > 0 {
                    publish(kind, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    break  // EOF, or EIO once a terminal's last slave closed
                }
            }
            if fd == terminalFD {
                // The terminal is also the input: stop writers before closing it.
                inputLock.withLock {
                    inputFD = nil
                    Glibc.close(fd)
                }
            } else {
                Glibc.close(fd)
            }
            readerFinished()
        }
    }

    private func readerFinished() {
        let done = lock.withLock { () -> Bool in
            openStreams -= 1
            return openStreams == 0 && waitStatus != nil
        }
        if done { finish() }
    }

    /// Called by the reaper with the process's wait status.
    func reaped(_ status: Int32) {
        let decoded = decodeWaitStatus(status)
        let done = lock.withLock { () -> Bool in
            waitStatus = ProcessExit(code: decoded.code, signal: decoded.signal)
            return openStreams == 0
        }
        closeInput()
        if done {
            finish()
        } else {
            startThread { [self] in
                sleepSeconds(Self.outputGraceSeconds)
                finish()
            }
        }
    }

    /// Publishes the exit once; later calls do nothing.
    private func finish() {
        let targets: [Int: FrameChannel]? = lock.withLock {
            guard exit == nil, let status = waitStatus else { return nil }
            exit = status
            lock.broadcast()
            defer { subscribers = [:] }
            return subscribers
        }
        guard let targets, let status = exit else { return }
        for channel in targets.values {
            // The exit event is the last frame; the client closes first (see `AgentServer.finish`).
            try? channel.send(message: Event(exit: status))
        }
    }

    // MARK: Input and control

    /// Writes to the process's standard input. Input for a process that has
    /// exited or closed its input is dropped, as a pipe's reader going away
    /// drops it (`echo x | true` succeeds); input after the client's own end
    /// of input is an error.
    func writeInput(_ bytes: [UInt8]) throws {
        try inputLock.withLock {
            guard let fd = inputFD else {
                if inputEndedByClient { throw SproutError(.conflict, "process \(id) has no open standard input") }
                return
            }
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
                if n >= 0 {
                    offset += n
                } else if errno == EPIPE {
                    return
                } else if errno != EINTR {
                    throw SproutError.system("write to the standard input of \(id)")
                }
            }
        }
    }

    /// The client's end of input.
    func endInput() {
        inputLock.withLock { inputEndedByClient = true }
        closeInput()
    }

    func closeInput() {
        inputLock.withLock {
            guard let fd = inputFD, fd != terminalFD else { return }
            Glibc.close(fd)
            inputFD = nil
        }
    }

    func signal(_ number: Int32) throws {
        guard number > 0 && number < 65 else {
            throw SproutError(.invalidArgument, "invalid signal number \(number)")
        }
        guard isRunning else { throw SproutError(.conflict, "process \(id) has already exited") }
        try sysCall("kill \(pid)") { kill(pid, number) }
    }

    func resize(_ size: TerminalSize) throws {
        guard let terminalFD else {
            throw SproutError(.invalidArgument, "process \(id) has no terminal to resize")
        }
        try inputLock.withLock {
            guard inputFD == terminalFD else { return }  // already closed
            try Terminal.setSize(terminalFD, size)
        }
    }
}

func wallClockSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func sleepSeconds(_ seconds: Double) {
    var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
}
