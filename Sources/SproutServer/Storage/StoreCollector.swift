import Foundation
import Logging
import ServiceLifecycle
import SproutAPI
import SproutCore
import SproutSystem

/// Collects the object store's garbage (`--store`): memory images, packs,
/// writable layers and env layers that no pause and no env holds any more,
/// and the pauses of sandboxes that ended. Mark and sweep with a grace
/// period (`RemoteStore.collect` says why that is safe beside pauses and
/// builds in flight on any node); it runs every half grace on each server
/// with a store, and when an admin asks (`POST /v1/store/collect`).
///
/// A pause is dead when this server wrote it, its sandbox here ended (killed)
/// more than a grace ago, and no node of the fleet has the sandbox placed (a
/// sandbox moved away is another node's now). Pauses other servers wrote are
/// theirs to judge; pauses written before writers were recorded are kept.
///
/// Envs the store records as deleted that this server still has (it missed
/// the delete: down, or unreachable from the API server then) are forgotten
/// here as a delete would (`forget`).
public final class StoreCollector: Service, Sendable {
    /// Six hours: what a pause or a build reuses of the store is renewed if
    /// written more than three hours before.
    public static let defaultGrace: Double = 6 * 3600

    let remote: RemoteStore
    let catalog: Catalog
    let instance: String
    /// Whether a fleet has the sandbox placed on any node (nil: not in a fleet).
    let placed: (@Sendable (String) async throws -> Bool)?
    /// This server's part of deleting envs (`SandboxLifecycle.forgetEnvs`).
    let forget: @Sendable ([String]) async throws -> Void
    let metrics: ServerMetrics
    let logger: Logger
    private let running = AsyncLock()

    init(remote: RemoteStore, catalog: Catalog, instance: String, placed: (@Sendable (String) async throws -> Bool)?,
         forget: @escaping @Sendable ([String]) async throws -> Void, metrics: ServerMetrics, logger: Logger) {
        (self.remote, self.catalog, self.instance, self.placed, self.forget, self.metrics, self.logger) =
            (remote, catalog, instance, placed, forget, metrics, logger)
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(self.remote.grace / 2)) }
            } catch {
                return
            }
            do {
                _ = try await collect()
            } catch {
                logger.error("the object store's collection failed; nothing more was deleted", metadata: ["error": "\(error.sentence)"])
            }
        }
    }

    /// One collection (one at a time on this server). `grace` below the
    /// store's own is for a store with nothing in flight.
    func collect(grace: Double? = nil) async throws -> API.StoreCollection {
        let grace = grace ?? remote.grace
        guard grace >= 0, grace.isFinite else { throw SproutError(.invalidArgument, "graceSeconds must be 0 or more") }
        return try await running.withLock {
            let started = monotonicSeconds()
            let (catalog, instance, placed) = (self.catalog, self.instance, self.placed)
            let local = try await catalog.envs.all()
            let (report, deleted) = try await self.remote.collect(grace: grace, localEnvs: local) { id, handoff in
                guard handoff.writer == instance, let record = try await catalog.sandboxes.find(id), record.state == .killed,
                      let ended = record.endedAt, ended < Date().timeIntervalSince1970 - grace
                else { return true }
                return try await placed?(id) ?? false
            }
            let missed = Set(local.filter { $0.deletedAt == nil }.map(\.id)).intersection(deleted).sorted()
            if !missed.isEmpty {
                try await self.forget(missed)
                self.logger.notice("envs deleted elsewhere in the fleet were forgotten here", metadata: ["envs": "\(missed)"])
            }
            self.metrics.storeCollected(report)
            self.logger.info("the object store was collected", metadata: [
                "roots": "\(report.roots)", "kept": "\(report.kept)", "deleted": "\(report.deleted)", "bytes": "\(report.deletedBytes)",
                "stoppedEarly": "\(report.stoppedEarly)", "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))",
            ])
            return report
        }
    }
}
