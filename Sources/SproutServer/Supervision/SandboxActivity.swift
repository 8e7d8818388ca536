import SproutAPI
import Foundation
import SproutCore
import SproutSystem

/// When each sandbox was last used, and how many streams hold it open
/// (exec output, terminals, WebSocket previews, E2B process and watch
/// streams): what idle detection (`idlePauseSeconds`) reads. A request that
/// reaches a sandbox touches it (`Sandboxes.running`); a stream holds it for
/// as long as it is open.
final class SandboxActivity: Sendable {
    private struct Use { var last: Double; var open: Int }
    private let uses = Locked<[String: Use]>([:])
    let clock: any WallClock

    init(clock: any WallClock) { self.clock = clock }

    func touch(_ id: String) {
        let now = clock.now
        uses.withLock { $0[id, default: Use(last: now, open: 0)].last = now }
    }

    /// Runs `body` with the sandbox held busy.
    func holding<T>(_ id: String, _ body: () async throws -> T) async rethrows -> T {
        let now = clock.now
        uses.withLock { $0[id, default: Use(last: now, open: 0)].open += 1 }
        defer {
            let end = clock.now
            uses.withLock { all in
                all[id, default: Use(last: end, open: 1)].open -= 1
                all[id]?.last = end
            }
        }
        return try await body()
    }

    /// Seconds since it was last used, or nil while a stream holds it.
    func idleSeconds(_ id: String, since created: Double) -> Double? {
        let use = uses.withLock { $0[id] }
        if let use, use.open > 0 { return nil }
        return clock.now - (use?.last ?? created)
    }

    func keep(only live: Set<String>) {
        uses.withLock { all in all = all.filter { live.contains($0.key) } }
    }
}
