/// A lock for async code: one holder at a time, waiters served in order.
/// The holder may suspend while it holds it (unlike a mutex).
public actor AsyncLock {
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public init() {}

    public func withLock<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        guard held else {
            held = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func release() {
        if waiters.isEmpty {
            held = false
        } else {
            // Handed straight to the next waiter: `held` stays true.
            waiters.removeFirst().resume()
        }
    }
}
