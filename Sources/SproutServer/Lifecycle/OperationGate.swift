import SproutCore

/// What happens when an operation on a sandbox arrives while another one is
/// in flight on the same sandbox: the one table that decides it
/// (`policy(for:during:)`), and the gate that applies it.
///
/// State changes themselves are compare-and-set in the catalog, so a stale
/// copy can never overwrite a newer state; the gate makes sure two
/// operations never interleave on one sandbox in the first place (an actor
/// alone serialises only between awaits).
public enum SandboxOperation: String, Sendable, CaseIterable {
    case create
    case kill
    case pause
    case resume
    /// A request that needs the sandbox running woke it (auto-resume).
    case wake
    case fork
    case snapshot
    /// The server found the container gone (out of memory, runtime crash).
    case died
    /// Its outbound policy is being replaced.
    case network

    /// How the operation is named in a message: "sandbox X is being paused".
    var progressive: String {
        switch self {
        case .create: "being created"
        case .kill: "being killed"
        case .pause: "being paused"
        case .resume, .wake: "being resumed"
        case .fork: "being forked"
        case .snapshot: "being snapshotted"
        case .died: "being cleaned up after it stopped"
        case .network: "having its network changed"
        }
    }
}

public enum GatePolicy: Sendable, Equatable {
    /// Wait for the operation in flight to end, then go ahead (and look at the state again).
    case wait
    /// Answer 409 at once: the caller may retry.
    case refuse
}

public actor OperationGate {
    /// The whole rule set, in one place.
    ///
    /// - A kill always wins: it waits for whatever is in flight and then
    ///   kills (so `DELETE` never fails because the sandbox was busy).
    /// - Waking a sleeping sandbox for a request waits for a pause, resume
    ///   or another wake in flight, so concurrent requests cause one resume.
    /// - An explicit resume waits for another resume or wake (then finds
    ///   the sandbox running) and for a pause (a pause's record says paused
    ///   a moment before the pause has let go: a resume sent on seeing it
    ///   must not be refused); everything else it refuses.
    /// - Pause, fork and snapshot need the sandbox to themselves: refused.
    /// - Cleanup after a death waits like a kill.
    public static func policy(for incoming: SandboxOperation, during inFlight: SandboxOperation) -> GatePolicy {
        switch (incoming, inFlight) {
        case (.kill, _), (.died, _): .wait
        case (.wake, .kill), (.wake, .died): .refuse
        case (.wake, _): .wait
        case (.resume, .resume), (.resume, .wake), (.resume, .pause): .wait
        default: .refuse
        }
    }

    private struct Slot {
        var operation: SandboxOperation
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private var inFlight: [String: Slot] = [:]

    public init() {}

    /// Runs `body` as `operation` on sandbox `id`, applying the policy to
    /// whatever is in flight. `body` runs with the sandbox to itself.
    public func run<T: Sendable>(
        _ operation: SandboxOperation, on id: String, _ body: @Sendable () async throws -> T
    ) async throws -> T {
        try await enter(operation, id)
        defer { leave(id) }
        return try await body()
    }

    /// Like `run`, but returns nil at once (instead of waiting or refusing)
    /// when anything is in flight: for periodic work (timeouts, disk, liveness)
    /// that tries again on its next tick.
    public func runIfIdle<T: Sendable>(
        _ operation: SandboxOperation, on id: String, _ body: @Sendable () async throws -> T
    ) async rethrows -> T? {
        guard inFlight[id] == nil else { return nil }
        inFlight[id] = Slot(operation: operation)
        defer { leave(id) }
        return try await body()
    }

    /// The operation in flight on `id`, if any.
    public func current(_ id: String) -> SandboxOperation? { inFlight[id]?.operation }

    func enter(_ operation: SandboxOperation, _ id: String) async throws {
        while let slot = inFlight[id] {
            switch Self.policy(for: operation, during: slot.operation) {
            case .refuse:
                throw SproutError(.conflict, "sandbox \(id) is \(slot.operation.progressive); try again once that has finished")
            case .wait:
                await withCheckedContinuation { continuation in
                    inFlight[id]?.waiters.append(continuation)
                }
            }
        }
        inFlight[id] = Slot(operation: operation)
    }

    func leave(_ id: String) {
        guard let slot = inFlight.removeValue(forKey: id) else { return }
        // Every waiter looks again; the first to run takes the slot, the others apply the policy to it.
        for waiter in slot.waiters { waiter.resume() }
    }
}
