import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem
import SproutBlocking

/// One piece of a process's life as a client sees it.
public enum ProcessOutput: Sendable, Equatable {
    case stdout([UInt8])
    case stderr([UInt8])
    /// A non-fatal error the agent reported on the stream (e.g. a bad signal).
    case error(ErrorBody)
    case exit(ProcessExit)
}

/// A live connection to a process: its output as it is produced, and its input.
/// Closing the session detaches from the process; it keeps running.
public final class ProcessSession: AsyncSequence, Sendable {
    public typealias Element = ProcessOutput
    public let info: AgentProcess
    private let channel: FrameChannel
    private let queue: HandoffQueue<ProcessOutput>
    /// Writes from async code go through one thread of their own (made on first use).
    private let writer = Locked<WorkerThread?>(nil)

    init(info: AgentProcess, channel: FrameChannel) {
        self.info = info
        self.channel = channel
        self.queue = HandoffQueue(limit: 256)
        startThread { [channel, queue] in
            while true {
                let frame: Frame?
                do { frame = try channel.receive() } catch {
                    queue.finish(throwing: error)
                    return
                }
                guard let frame else {
                    queue.finish(throwing: SproutError(.unavailable, "connection to the agent closed before the process exited"))
                    return
                }
                switch frame.kind {
                case .stdout: guard queue.push(.stdout(frame.payload)) else { return }
                case .stderr: guard queue.push(.stderr(frame.payload)) else { return }
                case .message:
                    guard let event = try? WireJSON.decode(Event.self, frame.payload) else { continue }
                    if let exit = event.exit {
                        queue.push(.exit(exit))
                        queue.finish()
                        channel.close()
                        return
                    }
                    if let error = event.error { guard queue.push(.error(error)) else { return } }
                default: continue
                }
            }
        }
    }

    deinit { close() }

    public struct AsyncIterator: AsyncIteratorProtocol {
        /// Keeps the stream open while it is iterated (its deinit closes it).
        let owner: ProcessSession
        let queue: HandoffQueue<ProcessOutput>
        public mutating func next() async throws -> ProcessOutput? { try await queue.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(owner: self, queue: queue) }

    /// Writes to the process's standard input (or terminal).
    public func write(_ bytes: [UInt8]) throws {
        var offset = 0
        repeat {
            let end = Swift.min(offset + AgentProtocol.fileChunkSize, bytes.count)
            try channel.send(.stdin, Array(bytes[offset..<end]))
            offset = end
        } while offset < bytes.count
    }

    public func write(_ text: String) throws { try write(Array(text.utf8)) }

    /// Closes the process's standard input.
    public func closeStdin() throws { try channel.send(.end, []) }

    public func signal(_ number: Int32) throws { try channel.send(message: Control(signal: number)) }

    public func resize(cols: UInt16, rows: UInt16) throws {
        try channel.send(message: Control(resize: TerminalSize(cols: cols, rows: rows)))
    }

    /// Runs a (blocking) write on the session's writer thread, in order.
    private func onWriter(_ body: @escaping @Sendable () throws -> Void) async throws {
        let thread = writer.withLock { current -> WorkerThread in
            if let current { return current }
            let made = WorkerThread()
            current = made
            return made
        }
        try await thread.run(body)
    }

    /// `write`, from async code, off the cooperative pool.
    public func send(_ bytes: [UInt8]) async throws { try await onWriter { [self] in try write(bytes) } }
    /// `closeStdin`, from async code.
    public func sendEndOfInput() async throws { try await onWriter { [self] in try closeStdin() } }
    /// `signal`, from async code.
    public func sendSignal(_ number: Int32) async throws { try await onWriter { [self] in try signal(number) } }
    /// `resize`, from async code.
    public func sendResize(cols: UInt16, rows: UInt16) async throws { try await onWriter { [self] in try resize(cols: cols, rows: rows) } }

    /// Detaches from the process without stopping it.
    public func close() {
        queue.cancel()
        channel.close()
        writer.current?.close()
    }

    /// Consumes the rest of the output and returns the exit status.
    public func collect() async throws -> ProcessResult {
        var result = ProcessResult(stdout: [], stderr: [], exit: ProcessExit())
        for try await item in self {
            switch item {
            case .stdout(let b): result.stdout += b
            case .stderr(let b): result.stderr += b
            case .error: continue
            case .exit(let status):
                result.exit = status
                return result
            }
        }
        throw SproutError(.unavailable, "the process stream ended without an exit status")
    }
}

extension AgentClient {
    /// Starts a process; its output streams on the returned session from the
    /// first byte (one round trip, one connection).
    public func start(_ spec: ProcessSpec) async throws -> ProcessSession {
        try await session(.startProcess(spec))
    }

    /// Reattaches to a running process by id or tag; output flows from now on.
    public func attach(_ selector: ProcessSelector) async throws -> ProcessSession {
        try await session(.attachProcess(selector))
    }

    private func session(_ request: AgentRequest) async throws -> ProcessSession {
        try await onThread { [self] in
            let (channel, reply) = try connect(request)
            guard let info = reply.process else {
                channel.close()
                throw SproutError(.malformed, "process reply without process")
            }
            return ProcessSession(info: info, channel: channel)
        }
    }

    /// Runs a process to completion and collects its output.
    public func run(_ spec: ProcessSpec) async throws -> ProcessResult {
        let session = try await start(spec)
        defer { session.close() }
        return try await session.collect()
    }

    public func processes() async throws -> [AgentProcess] {
        try await call(.listProcesses).processes ?? []
    }

    @discardableResult
    public func signal(_ selector: ProcessSelector, _ number: Int32) async throws -> AgentProcess {
        let reply = try await call(.signalProcess(SignalRequest(id: selector.id, tag: selector.tag, signal: number)))
        guard let info = reply.process else { throw SproutError(.malformed, "signal reply without process") }
        return info
    }
}
