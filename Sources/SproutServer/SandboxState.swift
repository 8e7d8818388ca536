import GRDB
import SproutCore

/// A sandbox's lifecycle. Every change goes through `transition(to:)`, which
/// refuses the ones the lifecycle does not allow.
///
/// ```
/// creating ──▶ running ──▶ killing ──▶ killed
///     │                        ▲
///     └── (failed create: rolled back and removed) 
/// ```
public enum SandboxState: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case creating
    case running
    case killing
    case killed

    public func canTransition(to next: SandboxState) -> Bool {
        switch (self, next) {
        case (.creating, .running), (.creating, .killing), (.running, .killing), (.killing, .killed): true
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
