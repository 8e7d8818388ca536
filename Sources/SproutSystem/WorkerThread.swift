/// One dedicated OS thread that runs blocking work for async code, in the
/// order it was submitted: socket writes of a stream (an upload's chunks, a
/// process's input) stay off Swift's cooperative pool without a thread per
/// write. The thread ends with `close()`, which its owner must call.
public final class WorkerThread: @unchecked Sendable {
    private let lock = Lock()
    private var queue: [@Sendable () -> Void] = []
    private var closed = false

    public init() {
        startThread { [self] in
            while let work = next() { work() }
        }
    }

    private func next() -> (@Sendable () -> Void)? {
        lock.lock()
        defer { lock.unlock() }
        while queue.isEmpty && !closed { lock.wait() }
        return queue.isEmpty ? nil : queue.removeFirst()
    }

    /// Runs `body` on the thread and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
            let accepted = lock.withLock { () -> Bool in
                guard !closed else { return false }
                queue.append { continuation.resume(with: Result { try body() }) }
                lock.broadcast()
                return true
            }
            if !accepted { continuation.resume(throwing: CancellationError()) }
        }
    }

    /// Lets queued work finish, then ends the thread.
    public func close() {
        lock.withLock {
            closed = true
            lock.broadcast()
        }
    }
}
