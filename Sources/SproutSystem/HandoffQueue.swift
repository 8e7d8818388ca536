/// Hands elements from a producer thread to an async consumer, with backpressure:
/// `push` blocks the (dedicated) producer thread while `limit` elements wait.
public final class HandoffQueue<Element: Sendable>: @unchecked Sendable {
    private let lock = Lock()
    private var buffer: [Element] = []
    private var head = 0
    private var waiter: CheckedContinuation<Element?, Error>?
    private var ended = false
    private var failure: Error?
    private var cancelled = false
    private let limit: Int

    public init(limit: Int = 64) { self.limit = limit }

    /// Adds an element; blocks while the queue is full. Returns false once the
    /// consumer has cancelled, telling the producer to stop.
    @discardableResult
    public func push(_ element: Element) -> Bool {
        lock.lock()
        while buffer.count - head >= limit && !cancelled { lock.wait() }
        if cancelled || ended {
            lock.unlock()
            return false
        }
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.resume(returning: element)
            return true
        }
        buffer.append(element)
        lock.unlock()
        return true
    }

    /// Ends the sequence after the buffered elements, with an optional error.
    public func finish(throwing error: Error? = nil) {
        lock.lock()
        guard !ended else {
            lock.unlock()
            return
        }
        ended = true
        failure = error
        let waiter = self.waiter
        self.waiter = nil
        lock.unlock()
        if let waiter {
            if let error { waiter.resume(throwing: error) } else { waiter.resume(returning: nil) }
        }
    }

    /// The consumer is gone: wake and stop the producer, drop what is buffered.
    public func cancel() {
        lock.withLock {
            cancelled = true
            buffer = []
            head = 0
            lock.broadcast()
        }
        finish()
    }

    /// The next element, or nil at the end. Cancelling the waiting task
    /// cancels the queue (and so stops the producer).
    public func next() async throws -> Element? {
        try await withTaskCancellationHandler {
            try await take()
        } onCancel: {
            cancel()
        }
    }

    private func take() async throws -> Element? {
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Element?, Error>) in
            lock.lock()
            if head < buffer.count {
                let element = buffer[head]
                head += 1
                if head > 1024 && head * 2 > buffer.count {
                    buffer.removeFirst(head)
                    head = 0
                }
                lock.broadcast()
                lock.unlock()
                cont.resume(returning: element)
            } else if ended {
                let failure = self.failure
                self.failure = nil
                lock.unlock()
                if let failure { cont.resume(throwing: failure) } else { cont.resume(returning: nil) }
            } else {
                waiter = cont
                lock.unlock()
            }
        }
    }
}
