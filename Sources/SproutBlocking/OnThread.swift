import NIOPosix

/// Where blocking work runs: a SwiftNIO thread pool of its own, so that file
/// system walks, pipes, `waitpid` and the agent's sockets never hold one of
/// Swift's cooperative threads (two on a 2-core host).
public enum BlockingPool {
    /// Generous, because many of these calls wait rather than work (a
    /// container's ready line, a checkpoint, an agent's answer): twenty
    /// concurrent creates each hold one for their whole start. Calls past
    /// it wait for a free thread.
    public static let threads = 64

    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        return pool
    }()
}

/// Runs blocking work on the blocking pool and awaits its result. The work
/// runs even when the calling task is cancelled: much of it is cleanup (a
/// create's rollback, a cancelled build's sandbox), which must happen. (NIO's
/// `runIfActive` drops work a cancelled task queued, with `CancellationError`.)
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        BlockingPool.pool.submit { state in
            switch state {
            case .active: continuation.resume(with: Result(catching: body))
            case .cancelled: continuation.resume(throwing: CancellationError())  // only once the pool is shut down, which it never is
            }
        }
    }
}
