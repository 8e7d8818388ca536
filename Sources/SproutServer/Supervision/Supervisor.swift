import Foundation
import Logging
import ServiceLifecycle
import SproutCore
import SproutRuntime
import SproutSystem

/// The server's background work, as one service: every second, sandboxes
/// past their timeout and sandboxes whose container ended on its own; every
/// two, disk limits; every five, the warm pool's plan. On shutdown: builds
/// are cancelled, every running sandbox killed (paused ones stay paused),
/// and the runtime's helpers ended.
struct Supervisor: Service {
    let core: ServerCore
    let builder: EnvBuilder

    func run() async throws {
        let sandboxes = Sandboxes(core: core)
        var tick = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await sandboxes.reapExpired()
            await sandboxes.pauseIdle()
            await checkLiveness()
            if tick % 2 == 0 {
                await DiskWatch(core: core).enforce()
                await MemoryPressure(core: core).relieveHost()
            }
            if tick % 5 == 0 { await core.pool?.tick() }
            if tick % Int(SandboxMetrics.interval) == 0 { await sampleMetrics() }
            tick += 1
            try? await Task.sleep(for: .seconds(1))
        }
        core.logger.info("shutting down: cancelling builds, killing sandboxes")
        await builder.cancelAll()
        await sandboxes.killAll()
        let live = (try? await core.catalog.sandboxes.all(in: SandboxState.allCases.filter(\.isLive))) ?? []
        if live.isEmpty { await core.network.removeInstanceRules() }
        await core.runtime.shutdown()
    }

    /// Sandboxes whose container process is gone, though nothing here stopped
    /// it: out of memory (the host's OOM killer), a runtime crash.
    func checkLiveness() async {
        let watched = core.containers.current
        for (id, process) in watched where !ProcessWatch.isAlive(process) {
            // Still watched after the check: no operation stopped it on purpose meanwhile.
            guard core.containers.current[id] == process else { continue }
            await Sandboxes(core: core).died(id, reason: deathReason(id))
        }
    }

    /// Why a container ended, from its cgroup (still there until teardown) and its runtime's log.
    func deathReason(_ id: String) -> String {
        if let usage = core.runtime.usage(id: id), usage.oomKills > 0 {
            return "stopped: the host's OOM killer ended the sandbox (its memory reached the cgroup's hard limit)"
        }
        let log = (try? Descriptor.readFile(core.settings.directory(id) + "/runtime.log", limit: 1 << 20))
            .map { String(decoding: $0, as: UTF8.self) } ?? ""
        let last = log.split(separator: "\n").last.map { String($0.prefix(300)) }
        return "stopped: its runtime exited unexpectedly" + (last.map { " (\($0))" } ?? "")
    }
}

/// Stops sandboxes that wrote more than their disk limit, and, when the data
/// directory is nearly full, the one that wrote the most: a clear failure
/// for that sandbox only, before the disk is full for everyone. (The
/// writable layer is a plain directory: there is no quota the kernel enforces.)
struct DiskWatch: Sendable {
    let core: ServerCore

    func enforce() async {
        let running = ((try? await core.catalog.sandboxes.all(in: [.running])) ?? []).filter { !$0.team.isEmpty }
        guard !running.isEmpty else { return }
        let directories = running.map { core.settings.directory($0.id) + "/upper" }
        let used = (try? await onThread { directories.map { FileSystem.allocatedBytes($0) } }) ?? []
        guard used.count == running.count else { return }
        for (record, bytes) in zip(running, used) { core.sandboxMetrics.recordDisk(record.id, bytes: bytes) }
        var victims: [(SandboxRecord, String)] = []
        for (record, bytes) in zip(running, used) {
            let limit = Int64(record.diskMB ?? core.settings.defaultDiskMB) << 20
            if bytes > limit {
                victims.append((record, "disk limit exceeded: wrote \(bytes >> 20) MiB, the limit is \(limit >> 20) MiB"))
            }
        }
        if victims.isEmpty, let free = FileSystem.freeBytes(core.settings.dataDirectory), free < Self.nearlyFull(core.settings.minimumFreeBytes),
            let (record, bytes) = zip(running, used).max(by: { $0.1 < $1.1 })
        {
            victims.append((record, "stopped: the host's disk is nearly full (\(free >> 20) MiB free) and this sandbox wrote the most (\(bytes >> 20) MiB)"))
        }
        let sandboxes = Sandboxes(core: core)
        for (record, reason) in victims {
            core.logger.withSandbox(record.id).warning("\(reason)")
            _ = try? await core.gate.runIfIdle(.kill, on: record.id) {
                try await sandboxes.killNow(record.id, reason: "disk", error: reason)
            }
        }
    }

    /// "Nearly full": half the create floor, and never more than 128 MiB, so
    /// a high floor (which only refuses creates) does not stop sandboxes.
    static func nearlyFull(_ floor: Int64) -> Int64 { min(floor / 2, 128 << 20) }
}
