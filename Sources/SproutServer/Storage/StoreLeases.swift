/// The stores garbage collection sweeps.
public enum StoreKind: String, Sendable, CaseIterable {
    /// Filesystem layers (`LayerStore`): made by builds, snapshots and warm captures.
    case layers
    /// Memory images and their chunks (`ImageStore`): made by pauses and warm captures.
    case images
}

/// Garbage collection against work in flight, as a pure state machine.
///
/// Writing into a store and recording the reference to what was written are
/// two steps (a layer is frozen, then an env names it; an image's chunks are
/// written, then its manifest, then a sandbox names it). Between them the
/// data is referenced by nothing, and a sweep would delete it. So every
/// such operation holds a lease on its store from before it writes until
/// its reference is committed (or it gave up); a store is swept only while
/// no lease is held on it (a sweep asked for meanwhile runs when the last
/// lease ends), and no lease starts while a sweep runs (it waits).
///
/// ```
/// idle ──(lease)──▶ leased(n) ──(release, n = 1)──▶ idle
///  │  ▲               │  ▲
///  │  │       (collect)│  │(lease)
///  │  │               ▼  │
///  │  │         leased(n), sweep pending ──(release, n = 1)──▶ sweeping
///  │  └──(sweep finished)── sweeping ◀──(collect)── idle
///  └──(collect)──────────────▲       (lease while sweeping: wait)
/// ```
public struct LeaseTable: Sendable, Equatable {
    public struct Store: Sendable, Equatable {
        public var leases = 0
        public var sweepPending = false
        public var sweeping = false
    }

    public private(set) var stores: [StoreKind: Store] = [:]

    public init() {}

    public enum Action: Sendable, Equatable {
        case none
        /// Sweep the store now (and report `sweepFinished`).
        case sweep
        /// A sweep is running: wait for it, then lease again.
        case wait
    }

    /// An operation wants to start writing into `store`.
    public mutating func lease(_ store: StoreKind) -> Action {
        var entry = stores[store, default: Store()]
        defer { stores[store] = entry }
        if entry.sweeping { return .wait }
        entry.leases += 1
        return .none
    }

    /// The operation's reference is committed (or it gave up).
    public mutating func release(_ store: StoreKind) -> Action {
        var entry = stores[store, default: Store()]
        precondition(entry.leases > 0, "release without a lease on \(store)")
        defer { stores[store] = entry }
        entry.leases -= 1
        if entry.leases == 0 && entry.sweepPending {
            entry.sweepPending = false
            entry.sweeping = true
            return .sweep
        }
        return .none
    }

    /// A sweep is wanted: now if nothing is in flight, else when the last lease ends.
    public mutating func collect(_ store: StoreKind) -> Action {
        var entry = stores[store, default: Store()]
        defer { stores[store] = entry }
        if entry.sweeping {
            entry.sweepPending = true
            return .none
        }
        if entry.leases == 0 {
            entry.sweeping = true
            return .sweep
        }
        entry.sweepPending = true
        return .none
    }

    /// The sweep ended; one asked for while it ran runs now (its view of the references may be older).
    public mutating func sweepFinished(_ store: StoreKind) -> Action {
        var entry = stores[store, default: Store()]
        defer { stores[store] = entry }
        entry.sweeping = false
        if entry.sweepPending && entry.leases == 0 {
            entry.sweepPending = false
            entry.sweeping = true
            return .sweep
        }
        return .none
    }
}

/// The lease table behind an actor; sweeps run through `sweeper`.
public actor StoreLeases {
    private var table = LeaseTable()
    private let sweeper: @Sendable (StoreKind) async -> Void
    private var waiting: [StoreKind: [CheckedContinuation<Void, Never>]] = [:]

    public init(sweeper: @escaping @Sendable (StoreKind) async -> Void) {
        self.sweeper = sweeper
    }

    /// Runs `body` holding a lease on `store`: nothing it writes is swept before it returns.
    func withLease<T: Sendable>(_ store: StoreKind, _ body: @Sendable () async throws -> T) async rethrows -> T {
        await acquire(store)
        do {
            let result = try await body()
            await perform(table.release(store), store)
            return result
        } catch {
            await perform(table.release(store), store)
            throw error
        }
    }

    /// Takes a lease on `store` to be given back with `release` (for work
    /// that does not fit one closure).
    func acquire(_ store: StoreKind) async {
        while table.lease(store) == .wait {
            await withCheckedContinuation { waiting[store, default: []].append($0) }
        }
    }

    func release(_ store: StoreKind) async {
        await perform(table.release(store), store)
    }

    /// Sweeps `store` now, or as soon as no lease is held on it.
    func collect(_ store: StoreKind) async {
        await perform(table.collect(store), store)
    }

    private func perform(_ action: LeaseTable.Action, _ store: StoreKind) async {
        var action = action
        while action == .sweep {
            await sweeper(store)
            action = table.sweepFinished(store)
        }
        for waiter in waiting.removeValue(forKey: store) ?? [] { waiter.resume() }
    }

    var snapshot: LeaseTable { table }
}
