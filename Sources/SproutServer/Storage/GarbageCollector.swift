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
    let cacheBounded: Bool

    init(catalog: Catalog, stores: Stores, readyImages: String, metrics: ServerMetrics? = nil, logger: Logger) {
        cacheBounded = stores.cacheBytes != nil
        let sweeper = Sweeper(catalog: catalog, stores: stores, readyImages: readyImages, metrics: metrics, logger: logger)
        leases = StoreLeases { store in await sweeper.sweep(store) }
    }

    /// Sweeps `store` now, or once no operation holds a lease on it.
    func collect(_ store: StoreKind) async {
        await leases.collect(store)
    }

    /// With `--cache-gb`: leases on both stores, so that no copy of what
    /// the object store has is evicted while a sandbox is brought up from it;
    /// `end` gives them back (and runs a sweep that waited, evicting what is
    /// over the bound, the copies just used last). Without: nothing.
    func holdingCachedCopies() async -> CachedCopiesHold {
        guard cacheBounded else { return CachedCopiesHold(leases: nil) }
        await leases.acquire(.layers)
        await leases.acquire(.images)
        return CachedCopiesHold(leases: leases)
    }

    struct CachedCopiesHold: Sendable {
        let leases: StoreLeases?

        /// Gives the leases back, in the background (a sweep that waited runs then, off the caller's path).
        func end() {
            guard let leases else { return }
            Task {
                await leases.release(.images)
                await leases.release(.layers)
                // What was fetched counts now.
                await leases.collect(.images)
                await leases.collect(.layers)
            }
        }
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
        let metrics: ServerMetrics?
        let logger: Logger

        func sweep(_ store: StoreKind) async {
            let evicted = await collect(store)
            metrics?.sweep(store: store.rawValue, evicted: evicted)
        }

        /// The sweep; how many copies of what the object store has it evicted.
        private func collect(_ store: StoreKind) async -> Int {
            switch store {
            case .layers:
                guard let live = try? await catalog.envs.referencedLayers() else { return 0 }
                let layers = stores.layers
                let evicted = await evictableLayers()
                let removed = (try? await onThread { try layers.collect(keeping: live.subtracting(evicted)) }) ?? 0
                if removed > 0 { logger.info("garbage collected", metadata: ["layers": "\(removed)", "fromCache": "\(evicted.count)"]) }
                return evicted.count
            case .images:
                guard let sandboxes = try? await catalog.sandboxes.referencedImages(),
                    let envs = try? await catalog.envs.referencedImages()
                else { return 0 }
                let evicted = evictions(.image)
                let kept = sandboxes.union(envs).subtracting(evicted)
                let images = stores.images
                let ready = readyImages
                let freed = (try? await onThread { () -> Int64 in
                    let freed = images.collect(keep: kept)
                    for name in (try? FileSystem.children(ready)) ?? [] where !kept.contains(name) {
                        try? FileSystem.removeTree("\(ready)/\(name)")
                    }
                    return freed
                }) ?? 0
                if freed > 0 { logger.info("garbage collected", metadata: ["imageBytes": "\(freed)", "fromCache": "\(evicted.count)"]) }
                return evicted.count
            }
        }

        /// `--cache-gb`: the host's copies of what the object store has, over
        /// the bound, least recently used first. A sweep runs with no lease
        /// held, so nothing is fetching or about to start from them now.
        private func evictions(_ kind: RemoteStore.Cached, keep: Set<String> = []) -> Set<String> {
            guard let budget = stores.cacheBytes, let remote = stores.remote else { return [] }
            // Both kinds count against one bound; only what the host holds.
            let held = RemoteStore.Cached.allCases.flatMap { other in
                remote.cached(other).filter { other == .image ? stores.images.contains($0.id) : stores.layers.contains($0.id) }.map { (other, $0) }
            }
            var over = held.reduce(0) { $0 + $1.1.bytes } - budget
            var out: Set<String> = []
            for (other, entry) in held.sorted(by: { $0.1.lastUse < $1.1.lastUse }) where over > 0 {
                guard other == kind, !keep.contains(entry.id) else { continue }
                out.insert(entry.id)
                over -= entry.bytes
            }
            return out
        }


        /// Layers of sandboxes whose root filesystem is mounted stay.
        private func evictableLayers() async -> Set<String> {
            guard stores.cacheBytes != nil, let envs = try? await catalog.sandboxes.mountedEnvs() else { return [] }
            var mounted: Set<String> = []
            for id in envs { mounted.formUnion((try? await catalog.envs.find(id))?.layers ?? []) }
            return evictions(.layer, keep: mounted)
        }
    }
}
