import SproutAPI
import Foundation
import SproutRuntime
import SproutCore
import SproutSystem

/// Room in memory for sandboxes, made by putting idle ones to sleep rather
/// than refusing new work.
///
/// Two limits, each optional:
/// - the **sandbox budget** (`--memory-budget-mb`): the memory limits of all
///   of the teams' sandboxes that hold a container (creating, running,
///   pausing, resuming, forking) may add up to this much. A create, resume,
///   wake or fork that would pass it first pauses idle sandboxes; if that
///   cannot make room it is refused (503) and nothing changes.
/// - the **host floor** (`--min-free-memory-mb`): when the host's
///   MemAvailable is below it, idle sandboxes are paused, one per check,
///   until it is not (the supervisor looks every two seconds, and a create
///   looks before it starts). This one never refuses: the kernel still
///   has its own means.
///
/// Who sleeps first: running sandboxes with no request for at least
/// `--pressure-idle` seconds and no open stream, those created with
/// `autoResume` first, then the least recently used. A sandbox put to sleep
/// this way always wakes on its next request (it did not ask to sleep), and
/// pauses with its memory where the runtime can (files only where it asked
/// for that). Each pause is logged, noted on the sandbox as `pressure`, and
/// counted (`sprout_pressure_pauses_total{reason}`); refusals too
/// (`sprout_pressure_refusals_total`). Pooled sandboxes and build steps are
/// outside the budget (`--pool-budget` bounds the pool).
final class MemoryAdmission: Sendable {
    let settings: Settings
    let repository: SandboxRepository
    let runtime: any SandboxRuntime
    let activity: SandboxActivity
    let metrics: ServerMetrics
    /// Memory admitted to sandboxes on their way to running.
    let reservations = MemoryLedger()
    /// What puts a sandbox to sleep for memory (the lifecycle): true if it is now paused.
    typealias Sleep = @Sendable (_ record: SandboxRecord, _ reason: String, _ why: String) async -> Bool

    init(settings: Settings, repository: SandboxRepository, runtime: any SandboxRuntime, activity: SandboxActivity, metrics: ServerMetrics) {
        self.settings = settings
        self.repository = repository
        self.runtime = runtime
        self.activity = activity
        self.metrics = metrics
    }

    /// States whose sandbox holds (or is about to hold) its memory.
    static let committedStates: [SandboxState] = [.creating, .running, .pausing, .resuming, .forking]

    /// Admits `memoryMB` more for `ids` (a new sandbox, one resuming, a
    /// fork's children): makes room first if a limit needs it. The
    /// reservation counts until `release`, which the caller calls once the
    /// record itself is in a committed state (or the operation failed).
    func admit(_ ids: [String], memoryMB: Int, sleep pause: Sleep) async throws -> MemoryReservation {
        await reservations.queue.acquire()
        defer { reservations.queue.release() }
        let reservation = MemoryReservation(ids: ids, memoryMB: memoryMB, ledger: reservations)
        if settings.memoryBudgetMB > 0 {
            var committed = try await committedMB(excluding: Set(ids))
            if committed + memoryMB > settings.memoryBudgetMB {
                // Only if sleepers enough can make the room: a create that cannot fit anyway changes nothing.
                var sleepers: [SandboxRecord] = []
                var freed = 0
                for candidate in try await candidates() where committed - freed + memoryMB > settings.memoryBudgetMB {
                    sleepers.append(candidate)
                    freed += candidate.memoryMB
                }
                if committed - freed + memoryMB <= settings.memoryBudgetMB {
                    let why = "the sandbox memory budget (\(settings.memoryBudgetMB) MiB) needed \(memoryMB) MiB for \(ids.joined(separator: ", "))"
                    for sleeper in sleepers where await pause(sleeper, "budget", why) { committed -= sleeper.memoryMB }
                }
            }
            guard committed + memoryMB <= settings.memoryBudgetMB else {
                metrics.pressureRefusal()
                throw SproutError(.unavailable,
                    "not enough sandbox memory: \(memoryMB) MiB asked, \(max(0, settings.memoryBudgetMB - committed)) MiB of the budget (\(settings.memoryBudgetMB) MiB, --memory-budget-mb) free, and too few idle sandboxes to pause for it")
            }
        }
        if settings.minimumFreeMemoryMB > 0, var available = MemInfo.availableMB(), available - memoryMB < settings.minimumFreeMemoryMB {
            for candidate in try await candidates() {
                guard available - memoryMB < settings.minimumFreeMemoryMB else { break }
                let using = Int((runtime.usage(id: candidate.id)?.memoryBytes ?? 0) >> 20)
                let why = "the host had \(available) MiB available, under the floor of \(settings.minimumFreeMemoryMB) MiB (--min-free-memory-mb), with \(memoryMB) MiB asked"
                if await pause(candidate, "host", why) { available += using }
            }
        }
        reservations.add(reservation)
        return reservation
    }

    /// The supervisor's check: while the host is under its floor, pause the
    /// least recently used idle sandbox (one per call, so the effect of each
    /// is seen before the next).
    @discardableResult
    func relieveHost(sleep pause: Sleep) async -> Bool {
        let floor = settings.minimumFreeMemoryMB
        guard floor > 0, let available = MemInfo.availableMB(), available < floor else { return false }
        await reservations.queue.acquire()
        defer { reservations.queue.release() }
        for candidate in (try? await candidates()) ?? [] {
            let why = "the host had \(available) MiB available, under the floor of \(floor) MiB (--min-free-memory-mb)"
            if await pause(candidate, "host", why) { return true }
        }
        return false
    }

    /// The memory limits of the teams' sandboxes that hold their memory,
    /// and of admissions still on their way there.
    func committedMB(excluding ids: Set<String>) async throws -> Int {
        // Reservations first: one released meanwhile is then in the catalog.
        let reserved = reservations.current
        let records = try await repository.all(in: Self.committedStates).filter { !$0.team.isEmpty && !ids.contains($0.id) }
        let counted = Set(records.map(\.id))
        return records.reduce(0) { $0 + $1.memoryMB }
            + reserved.filter { !$0.ids.contains { counted.contains($0) || ids.contains($0) } }.reduce(0) { $0 + $1.memoryMB }
    }

    /// Running sandboxes that may be put to sleep, in the order they should be.
    func candidates() async throws -> [SandboxRecord] {
        let minimum = settings.pressureIdleSeconds
        let snapshots = runtime.capabilities.memorySnapshot
        let idle: [(SandboxRecord, Double)] = try await repository.all(in: [.running]).compactMap { record in
            guard !record.team.isEmpty, snapshots || record.pauseFilesOnly,
                  let seconds = activity.idleSeconds(record.id, since: record.createdAt), seconds >= minimum
            else { return nil }
            return (record, seconds)
        }
        return idle.sorted { a, b in
            if a.0.resumeOnRequest != b.0.resumeOnRequest { return a.0.resumeOnRequest }
            return a.1 > b.1
        }.map(\.0)
    }
}

/// Memory admitted to sandboxes not yet in a committed state, and the
/// queue admissions take their turn in (so two cannot both take the last
/// room).
final class MemoryLedger: Sendable {
    let queue = AsyncQueue()
    private let held = Locked<[ObjectIdentifier: MemoryReservation]>([:])

    var current: [MemoryReservation] { held.withLock { Array($0.values) } }
    func add(_ reservation: MemoryReservation) { held.withLock { $0[ObjectIdentifier(reservation)] = reservation } }
    func remove(_ reservation: MemoryReservation) { _ = held.withLock { $0.removeValue(forKey: ObjectIdentifier(reservation)) } }
}

final class MemoryReservation: Sendable {
    let ids: [String]
    let memoryMB: Int
    private let ledger: MemoryLedger

    init(ids: [String], memoryMB: Int, ledger: MemoryLedger) {
        self.ids = ids
        self.memoryMB = memoryMB
        self.ledger = ledger
    }

    func release() { ledger.remove(self) }
}

/// One holder at a time, in the order they came.
final class AsyncQueue: Sendable {
    private struct State {
        var busy = false
        var waiting: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Locked(State())

    func acquire() async {
        await withCheckedContinuation { (turn: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.busy {
                    s.waiting.append(turn)
                    return false
                }
                s.busy = true
                return true
            }
            if now { turn.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiting.isEmpty {
                s.busy = false
                return nil
            }
            return s.waiting.removeFirst()
        }
        next?.resume()
    }
}
