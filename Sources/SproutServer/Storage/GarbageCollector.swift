import Foundation
import Logging
import SproutStore
import SproutSystem
import SproutBlocking

/// Removes layers no env uses and memory images no sandbox or env uses,
/// never while something being made may still come to use them (see
/// `LeaseTable`).
final class GarbageCollector: Sendable {
    let leases: StoreLeases

    init(catalog: Catalog, stores: Stores, readyImages: String, logger: Logger) {
        let sweeper = Sweeper(catalog: catalog, stores: stores, readyImages: readyImages, logger: logger)
        leases = StoreLeases { store in await sweeper.sweep(store) }
    }

    /// Sweeps `store` now, or once no operation holds a lease on it.
    func collect(_ store: StoreKind) async {
        await leases.collect(store)
    }

    /// Runs `body` holding a lease on `store`.
    func leasing<T: Sendable>(_ store: StoreKind, _ body: @Sendable () async throws -> T) async rethrows -> T {
        try await leases.withLease(store, body)
    }

    /// The sweep itself; only ever called by the lease table, with no lease held.
    struct Sweeper: Sendable {
        let catalog: Catalog
        let stores: Stores
        let readyImages: String
        let logger: Logger

        func sweep(_ store: StoreKind) async {
            switch store {
            case .layers:
                guard let live = try? await catalog.envs.referencedLayers() else { return }
                let layers = stores.layers
                let removed = (try? await onThread { try layers.collect(keeping: live) }) ?? 0
                if removed > 0 { logger.info("garbage collected", metadata: ["layers": "\(removed)"]) }
            case .images:
                guard let sandboxes = try? await catalog.sandboxes.referencedImages(),
                    let envs = try? await catalog.envs.referencedImages()
                else { return }
                let referenced = sandboxes.union(envs)
                let images = stores.images
                let ready = readyImages
                let freed = (try? await onThread { () -> Int64 in
                    let freed = images.collect(keep: referenced)
                    for name in (try? FileSystem.children(ready)) ?? [] where !referenced.contains(name) {
                        try? FileSystem.removeTree("\(ready)/\(name)")
                    }
                    return freed
                }) ?? 0
                if freed > 0 { logger.info("garbage collected", metadata: ["imageBytes": "\(freed)"]) }
            }
        }
    }
}
