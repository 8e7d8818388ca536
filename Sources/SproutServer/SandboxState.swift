import GRDB
import SproutCore

/// A sandbox's lifecycle. Every change goes through `transition(to:)`, which
/// refuses the ones the lifecycle does not allow.
///
/// ```
/// creating ──▶ running ──▶ killing ──▶ killed
///     │           ▲           ▲
///     │        (claim)        │
///     └──▶ pooled ────────────┘
///
/// running ──▶ pausing ──▶ paused ──▶ resuming ──▶ running
///                │          ▲            │
///                └─▶ running └────────────┘ (restore failed)
/// ```
/// (any of pausing, paused, resuming can also go to killing)
/// `pooled` sandboxes are started ahead of demand, belong to no team, and
/// become `running` when a create claims one. `paused` sandboxes hold no
/// process, CPU or memory: their memory is an image in the store; `pausing`
/// falls back to `running` when the checkpoint is refused before it began.
/// A live fork takes its source through `pausing` and `resuming` too.
public enum SandboxState: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case creating
    case pooled
    case running
    case killing
    case killed
    case pausing
    case paused
    case resuming

    public func canTransition(to next: SandboxState) -> Bool {
        switch (self, next) {
        case (.creating, .running), (.creating, .pooled), (.creating, .killing), (.pooled, .running), (.pooled, .killing),
            (.running, .killing), (.killing, .killed),
            (.running, .pausing), (.pausing, .paused), (.pausing, .running), (.pausing, .killing),
            (.paused, .resuming), (.paused, .killing), (.resuming, .running), (.resuming, .paused), (.resuming, .killing): true
        default: false
        }
    }

    /// The new state, or a `conflict` error naming both.
    public func transition(to next: SandboxState, id: String) throws -> SandboxState {
        guard canTransition(to: next) else {
            throw SproutError(.conflict, "sandbox \(id) is \(rawValue) and cannot become \(next.rawValue)")
        }
        return next
    }

    /// States whose sandbox still holds host resources.
    public var isLive: Bool { self != .killed }
}
