import Glibc

/// The time the server's policies decide by: timeouts, idle pauses, memory
/// pressure, the warm pool's demand, the supervisor's rounds. The real one
/// reads the system clock; tests pass a `TestClock` and move it by hand, so
/// a policy that waits minutes is checked in microseconds.
public protocol WallClock: Sendable {
    /// Seconds since the Unix epoch.
    var now: Double { get }
    /// Returns once `seconds` have passed on this clock (or throws if the task is cancelled).
    func sleep(seconds: Double) async throws
}

/// The system's clock.
public struct SystemClock: WallClock {
    public init() {}

    public var now: Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    public func sleep(seconds: Double) async throws {
        try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1e9))
    }
}

/// A clock that moves only when told (`advance`): sleepers wake when it
/// passes their deadline, in deadline order.
public final class TestClock: WallClock, @unchecked Sendable {
    private struct Sleeper {
        var deadline: Double
        var continuation: CheckedContinuation<Void, Error>
        var id: Int
    }
    private let lock = Lock()
    private var current: Double
    private var sleepers: [Sleeper] = []
    private var nextID = 0
    /// Who waits for someone to be asleep on the clock (`untilSleeping`).
    private var watchers: [(Int, CheckedContinuation<Void, Never>)] = []

    public init(now: Double = 1_800_000_000) { current = now }

    public var now: Double { lock.withLock { current } }

    /// How many tasks are asleep on this clock.
    public var sleeping: Int { lock.withLock { sleepers.count } }

    public func sleep(seconds: Double) async throws {
        let id = lock.withLock { () -> Int in
            nextID += 1
            return nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                let (ready, woken) = lock.withLock { () -> (Bool, [CheckedContinuation<Void, Never>]) in
                    if seconds <= 0 || Task.isCancelled { return (true, []) }
                    sleepers.append(Sleeper(deadline: current + seconds, continuation: continuation, id: id))
                    let due = watchers.filter { $0.0 <= sleepers.count }.map(\.1)
                    watchers.removeAll { $0.0 <= sleepers.count }
                    return (false, due)
                }
                for watcher in woken { watcher.resume() }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let cancelled = lock.withLock { () -> Sleeper? in
                guard let index = sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return sleepers.remove(at: index)
            }
            cancelled?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Returns once at least `count` tasks are asleep on this clock (so a
    /// move of it is sure to reach them).
    public func untilSleeping(_ count: Int = 1) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                if sleepers.count >= count { return true }
                watchers.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Moves the clock forward and wakes whoever's deadline it passed.
    public func advance(by seconds: Double) {
        let due = lock.withLock { () -> [Sleeper] in
            current += seconds
            let due = sleepers.filter { $0.deadline <= current }.sorted { $0.deadline < $1.deadline }
            sleepers.removeAll { $0.deadline <= current }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}
