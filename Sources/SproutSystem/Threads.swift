import Glibc

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Starts a detached OS thread running `body`.
///
/// Blocking I/O (sockets, pipes, PTYs, `waitpid`) runs on these threads so it
/// never occupies Swift's cooperative pool.
public func startThread(stackSize: Int = 512 * 1024, _ body: @escaping @Sendable () -> Void) {
    let box = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, stackSize)
    var tid = pthread_t()
    let rc = pthread_create(&tid, &attr, { arg in
        let body = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        body.body()
        return nil
    }, box)
    pthread_attr_destroy(&attr)
    if rc != 0 {
        // Out of threads: run inline rather than drop the work.
        let body = Unmanaged<ThreadBody>.fromOpaque(box).takeRetainedValue()
        body.body()
    }
}

/// Runs blocking work on its own thread and awaits its result.
public func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, Error>) in
        startThread {
            do { cont.resume(returning: try body()) } catch { cont.resume(throwing: error) }
        }
    }
}

/// Ignores SIGPIPE for the whole process, so writes to closed peers return EPIPE.
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}
