import Foundation
import SproutAPI
import SproutCore
import SproutRuntime
import SproutSystem

extension SandboxLifecycle {
    /// Kills a sandbox of `identity`'s team: stops its container and removes
    /// everything it held. Waits for an operation in flight on it (a pause, a
    /// fork) and then kills: a kill always wins.
    public func kill(_ id: String, for identity: Identity) async throws -> API.Sandbox {
        _ = try await repository.owned(id, team: identity.team)
        return api(try await kill(id, reason: "request"))
    }

    /// Kills sandbox `id` for `reason` (request, timeout, disk, shutdown, …).
    @discardableResult
    func kill(_ id: String, reason: String, error: String? = nil) async throws -> SandboxRecord {
        try await gate.run(.kill, on: id) {
            try await killNow(id, reason: reason, error: error)
        }
    }

    /// Kills unless something is being done to the sandbox (periodic work: it looks again next round).
    func killIfIdle(_ id: String, reason: String, error: String?) async {
        _ = try? await gate.runIfIdle(.kill, on: id) { try await killNow(id, reason: reason, error: error) }
    }

    /// The kill itself; the caller holds the gate.
    func killNow(_ id: String, reason: String, error: String?) async throws -> SandboxRecord {
        guard let current = try await repository.find(id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
        if current.state == .killed { return current }
        let started = monotonicSeconds()
        // `killing` already: a kill that did not finish (finish it now: its action was the teardown).
        let (dying, action) = current.state == .killing ? (current, .teardown) : try await repository.transition(id, .kill, note: reason)
        await perform(action, dying)
        let (record, _) = try await repository.transition(id, .tornDown) { record in
            record.endedAt = self.clock.now
            if let error { record.error = error }
        }
        if !record.imageList.isEmpty { await collector.collect(.images) }
        await releaseDeletedEnvs()
        metrics.kill(reason: reason, seconds: monotonicSeconds() - started)
        await publishStateCounts()
        logger.withSandbox(id).info("killed", metadata: ["reason": "\(reason)"])
        return record
    }

    /// A deleted env that this sandbox was the last to hold goes now, with
    /// the layers and images only it used.
    func releaseDeletedEnvs() async {
        guard let purged = try? await catalog.envs.purgeDeleted(), purged > 0 else { return }
        await collector.collect(.layers)
        await collector.collect(.images)
    }

    /// The container of a running (or pooled) sandbox ended on its own:
    /// record why, clean up, and keep the record (`killed`, with the reason in `error`).
    func died(_ id: String, reason: String) async {
        _ = try? await gate.runIfIdle(.died, on: id) {
            guard let current = try await repository.find(id), current.state == .running || current.state == .pooled else { return }
            let log = logger.withSandbox(id)
            log.error("the sandbox stopped on its own", metadata: ["reason": "\(reason)"])
            metrics.died()
            let (record, action) = try await repository.transition(id, .died, note: reason)
            await perform(action, record)
            try await repository.transition(id, .tornDown) { record in
                record.endedAt = self.clock.now
                record.error = reason
            }
            await releaseDeletedEnvs()
            await publishStateCounts()
        }
    }

    /// Kills every live sandbox but the paused ones (graceful shutdown, or a
    /// node fenced out of its fleet): paused sandboxes keep their images,
    /// files and addresses for after the restart.
    func killAll(reason: String = "shutdown", error: String? = nil) async {
        await createsInFlight.settled()
        let live = (try? await repository.all(in: [.running, .pooled, .creating])) ?? []
        await withTaskGroup(of: Void.self) { group in
            for record in live {
                group.addTask { _ = try? await self.kill(record.id, reason: reason, error: error) }
            }
        }
    }
}
