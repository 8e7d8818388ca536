import SproutAPI
import Foundation
import Logging
import ServiceLifecycle
import SproutCore
import SproutRuntime
import SproutSystem
import SproutBlocking

/// The server's background work, as one service, in rounds a second apart
/// on the injected clock: every round, sandboxes past their timeout or idle
/// long enough, and sandboxes whose container ended on its own; every
/// second round, disk limits and the host's memory floor; every fifth, the
/// warm pool looks again; every `SandboxMetrics.interval`, a metrics
/// sample. On shutdown: builds are cancelled, every running sandbox killed
/// (paused ones stay paused), and the runtime's helpers ended.
public struct Supervisor: Service {
    let lifecycle: SandboxLifecycle
    let watcher: ContainerWatch
    let disk: DiskWatch
    let demand: PoolDemand
    let builder: EnvBuilder
    let sandboxMetrics: SandboxMetrics
    let clock: any WallClock
    let logger: Logger
    /// Rounds done so far (a test moves its clock and waits for the next).
    let rounds = RoundCounter()

    public func run() async throws {
        var tick = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await round(tick)
            rounds.completed()
            lifecycle.metrics.supervisorRound()
            tick += 1
            // A clock that never moves (a test's) must not hold up shutdown.
            try? await cancelWhenGracefulShutdown { try await clock.sleep(seconds: 1) }
        }
        logger.info("shutting down: cancelling builds, killing sandboxes")
        await builder.cancelAll()
        await lifecycle.killAll()
        let live = (try? await lifecycle.repository.all(in: SandboxState.allCases.filter(\.isLive))) ?? []
        if live.isEmpty { await lifecycle.network.removeInstanceRules() }
        await lifecycle.runtime.shutdown()
        await lifecycle.launcher.volumes.unmountAll()
    }

    /// One round of checks (`tick` counts rounds, for those that run less often).
    func round(_ tick: Int) async {
        await lifecycle.reapExpired()
        await lifecycle.pauseIdle()
        await checkLiveness()
        if tick % 2 == 0 {
            await disk.enforce()
            _ = await lifecycle.admission.relieveHost { await lifecycle.pauseForMemory($0, reason: $1, why: $2) }
        }
        if tick % 5 == 0 { await demand.changed() }
        if tick % Int(SandboxMetrics.interval) == 0 { await sampleMetrics() }
    }

    /// Sandboxes whose container process is gone, though nothing here stopped
    /// it: out of memory (the host's OOM killer), a runtime crash.
    func checkLiveness() async {
        for (id, process) in watcher.ended() where watcher.isWatching(id, process) {
            await lifecycle.died(id, reason: deathReason(id))
        }
    }

    /// Why a container ended, from its cgroup (still there until teardown) and its runtime's log.
    func deathReason(_ id: String) -> String {
        if let usage = lifecycle.runtime.usage(id: id), usage.oomKills > 0 {
            return "stopped: the host's OOM killer ended the sandbox (its memory reached the cgroup's hard limit)"
        }
        let log = (try? Descriptor.readFile(lifecycle.settings.directory(id) + "/runtime.log", limit: 1 << 20))
            .map { String(decoding: $0, as: UTF8.self) } ?? ""
        let last = log.split(separator: "\n").last.map { String($0.prefix(300)) }
        return "stopped: its runtime exited unexpectedly" + (last.map { " (\($0))" } ?? "")
    }

    /// One sample of every running sandbox; the series of sandboxes that are
    /// gone (killed, failed) are dropped, paused ones keep theirs.
    func sampleMetrics() async {
        let live = (try? await lifecycle.repository.all(in: SandboxState.allCases.filter(\.isLive))) ?? []
        sandboxMetrics.keep(only: Set(live.map(\.id)))
        lifecycle.activity.keep(only: Set(live.map(\.id)))
        let now = clock.now
        for record in live where record.state == .running && !record.team.isEmpty {
            guard let usage = lifecycle.runtime.usage(id: record.id) else { continue }
            sandboxMetrics.sample(record, usage: usage, at: now, defaultDiskMB: lifecycle.settings.defaultDiskMB)
        }
    }
}

/// How many supervisor rounds have finished; waits for a later one.
final class RoundCounter: Sendable {
    private struct State {
        var count = 0
        var waiters: [(Int, CheckedContinuation<Void, Never>)] = []
    }
    private let state = Locked(State())

    var count: Int { state.current.count }

    func completed() {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.count += 1
            let due = s.waiters.filter { $0.0 <= s.count }.map(\.1)
            s.waiters.removeAll { $0.0 <= s.count }
            return due
        }
        for waiter in ready { waiter.resume() }
    }

    /// Returns once `count` rounds in all have finished.
    func wait(for count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.count >= count { return true }
                s.waiters.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }
}

/// Stops sandboxes that wrote more than their disk limit, and, when the data
/// directory is nearly full, the one that wrote the most: a clear failure
/// for that sandbox only, before the disk is full for everyone. (The
/// writable layer is a plain directory: there is no quota the kernel enforces.)
struct DiskWatch: Sendable {
    let lifecycle: SandboxLifecycle
    let sandboxMetrics: SandboxMetrics

    func enforce() async {
        let settings = lifecycle.settings
        let running = ((try? await lifecycle.repository.all(in: [.running])) ?? []).filter { !$0.team.isEmpty }
        guard !running.isEmpty else { return }
        let directories = running.map { settings.directory($0.id) + "/upper" }
        let used = (try? await onThread { directories.map { FileSystem.allocatedBytes($0) } }) ?? []
        guard used.count == running.count else { return }
        for (record, bytes) in zip(running, used) { sandboxMetrics.recordDisk(record.id, bytes: bytes) }
        var victims: [(SandboxRecord, String)] = []
        for (record, bytes) in zip(running, used) {
            let limit = Int64(record.diskMB ?? settings.defaultDiskMB) << 20
            if bytes > limit {
                victims.append((record, "disk limit exceeded: wrote \(bytes >> 20) MiB, the limit is \(limit >> 20) MiB"))
            }
        }
        if victims.isEmpty, let free = FileSystem.freeBytes(settings.dataDirectory), free < Self.nearlyFull(settings.minimumFreeBytes),
            let (record, bytes) = zip(running, used).max(by: { $0.1 < $1.1 })
        {
            victims.append((record, "stopped: the host's disk is nearly full (\(free >> 20) MiB free) and this sandbox wrote the most (\(bytes >> 20) MiB)"))
        }
        for (record, reason) in victims {
            lifecycle.logger.withSandbox(record.id).warning("\(reason)")
            await lifecycle.killIfIdle(record.id, reason: "disk", error: reason)
        }
    }

    /// "Nearly full": half the create floor, and never more than 128 MiB, so
    /// a high floor (which only refuses creates) does not stop sandboxes.
    static func nearlyFull(_ floor: Int64) -> Int64 { min(floor / 2, 128 << 20) }
}
