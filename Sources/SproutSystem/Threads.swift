import Glibc

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Starts a detached OS thread running `body`.
///
/// The agent's long-lived loops (a connection, a process's output, a PTY)
/// each run on one; the server's short blocking calls go through `onThread`
/// (SproutBlocking) instead.
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

/// Ignores SIGPIPE for the whole process, so writes to closed peers return EPIPE.
public func ignoreSIGPIPE() {
    signal(SIGPIPE, SIG_IGN)
}
