import Foundation
import SproutStore
import SproutSystem

/// Removes layers no env uses and memory images no sandbox or env uses,
/// never while something being made may still come to use them (see
/// `LeaseTable`).
struct GarbageCollector: Sendable {
    let core: ServerCore

    /// Installs the sweeper the lease table calls.
    static func install(on core: ServerCore) async {
        await core.leases.setSweeper { [weak core] store in
            guard let core else { return }
            await GarbageCollector(core: core).sweep(store)
        }
    }

    /// Sweeps `store` now, or once no operation holds a lease on it.
    func collect(_ store: StoreKind) async {
        await core.leases.collect(store)
    }

    /// Runs `body` holding a lease on `store`.
    func leasing<T: Sendable>(_ store: StoreKind, _ body: @Sendable () async throws -> T) async rethrows -> T {
        try await core.leases.withLease(store, body)
    }

    /// The sweep itself; only ever called by the lease table, with no lease held.
    func sweep(_ store: StoreKind) async {
        switch store {
        case .layers:
            guard let live = try? await core.catalog.envs.referencedLayers() else { return }
            let layers = core.layers
            let removed = (try? await onThread { try layers.collect(keeping: live) }) ?? 0
            if removed > 0 { core.logger.info("garbage collected", metadata: ["layers": "\(removed)"]) }
        case .images:
            guard let sandboxes = try? await core.catalog.sandboxes.referencedImages(),
                let envs = try? await core.catalog.envs.referencedImages()
            else { return }
            let referenced = sandboxes.union(envs)
            let images = core.images
            let ready = core.settings.readyImagesDirectory
            let freed = (try? await onThread { () -> Int64 in
                let freed = images.collect(keep: referenced)
                for name in (try? FileSystem.children(ready)) ?? [] where !referenced.contains(name) {
                    try? FileSystem.removeTree("\(ready)/\(name)")
                }
                return freed
            }) ?? 0
            if freed > 0 { core.logger.info("garbage collected", metadata: ["imageBytes": "\(freed)"]) }
        }
    }
}
