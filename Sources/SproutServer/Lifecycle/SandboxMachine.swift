import GRDB
import SproutCore

/// Where a sandbox is in its life. Stored in the catalog; changed only by
/// `SandboxMachine` (through `SandboxRepository.transition`).
///
/// ```
///            ┌──────────────▶ pooled ──(claimed)──┐
/// creating ──┤                                    ▼
///            └──────────────────────────────▶ running ◀──────────────┐
///                                              │  │ ▲                  │
///                          (pause, or stop) ◀──┘  │ └── (forked) ── forking
///                                  │              └──(fork)───────────┘
///                                  ▼
///                               pausing ──▶ paused ──(resume)──▶ resuming ──▶ running
///
/// running, pooled, paused ──(kill, died)──▶ killing ──▶ killed
/// ```
/// `pausing` and `forking` fall back to `running` when the checkpoint is
/// refused before it began, or (processes lost) when it failed and the
/// sandbox was started again from its files; `resuming` falls back to
/// `paused` when the restore fails.
public enum SandboxState: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case creating
    case pooled
    case running
    case pausing
    case paused
    case resuming
    case forking
    case killing
    case killed

    /// States whose sandbox still holds host resources.
    public var isLive: Bool { self != .killed }

    /// States in which the sandbox's container runs (its agent answers).
    public var hasContainer: Bool { self == .running || self == .pooled }
}

/// The sandbox lifecycle as a pure state machine, in the style of
/// async-http-client's: `handle(_:)` checks that an event is allowed in the
/// current state, moves to the next state and returns the one action the
/// caller must perform. No I/O happens here, so every transition (and every
/// refused one) is tested alone (`SandboxMachineTests`).
public struct SandboxMachine: Sendable, Equatable {
    public private(set) var state: SandboxState

    public init(state: SandboxState) { self.state = state }

    public enum Event: Sendable, Equatable {
        /// The container started (or was restored from a warm image); `pooled` for the warm pool.
        case started(pooled: Bool)
        /// A create took this pooled sandbox.
        case claimed
        /// Save memory and stop (`memory: false`: stop, keeping only the files).
        case pause(memory: Bool)
        /// The checkpoint is stored (or the container stopped): nothing runs any more.
        case checkpointed
        /// The checkpoint was refused before anything changed.
        case checkpointRefused
        /// The checkpoint failed and ended the container; it was started again from its files.
        case restartedFromFiles
        /// Start from the last memory image (`fromMemory`), or boot from the files.
        case resume(fromMemory: Bool)
        case restored
        case restoreFailed
        /// A live fork: checkpoint once, restore the source and the copies.
        case fork
        case forked
        /// A request, the timeout, a disk limit or a server shutdown ends it.
        case kill
        /// The container ended on its own (out of memory, a runtime crash).
        case died
        case tornDown
        /// After a server restart: whether the container is still there and its agent answers.
        case recovered(containerAlive: Bool)
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Checkpoint the container into a memory image (it stops).
        case checkpoint
        /// Stop the container, keeping its files (a pause without memory).
        case stopContainer
        case restoreFromImage
        case bootFromFiles
        /// Stop the container, remove its network, address and directory.
        case teardown
        /// A container is there but the record says none should be: remove it, keep the files.
        case removeContainer
    }

    /// Applies `event`; throws `conflict` (naming both) when this state does not allow it.
    public mutating func handle(_ event: Event) throws -> Action {
        switch (state, event) {
        case (.creating, .started(let pooled)):
            state = pooled ? .pooled : .running
            return .none
        case (.pooled, .claimed):
            state = .running
            return .none
        case (.running, .pause(let memory)):
            state = .pausing
            return memory ? .checkpoint : .stopContainer
        case (.pausing, .checkpointed):
            state = .paused
            return .none
        case (.pausing, .checkpointRefused), (.forking, .checkpointRefused):
            state = .running
            return .none
        case (.pausing, .restartedFromFiles), (.forking, .restartedFromFiles):
            state = .running
            return .none
        case (.paused, .resume(let fromMemory)):
            state = .resuming
            return fromMemory ? .restoreFromImage : .bootFromFiles
        case (.resuming, .restored):
            state = .running
            return .none
        case (.resuming, .restoreFailed):
            state = .paused
            return .removeContainer
        case (.running, .fork):
            state = .forking
            return .checkpoint
        case (.forking, .forked):
            state = .running
            return .none
        case (.running, .kill), (.pooled, .kill), (.paused, .kill):
            state = .killing
            return .teardown
        case (.running, .died), (.pooled, .died), (.pausing, .died), (.forking, .died):
            // (pausing, forking: the checkpoint ended the container and it could not be started again.)
            state = .killing
            return .teardown
        case (.killing, .tornDown):
            state = .killed
            return .none
        case (_, .recovered(let alive)):
            return recover(containerAlive: alive)
        default:
            throw SproutError(.conflict, "a \(state.rawValue) sandbox cannot \(event.verb)")
        }
    }

    /// What a restart finds, and what it makes of it: a running container
    /// stays (`running`, `pooled`) or is finished (`resuming`, `forking`,
    /// `pausing` whose checkpoint never happened); a paused one keeps its
    /// image and files; a pause or fork whose checkpoint stopped the
    /// container keeps the files, paused; anything else was lost with the
    /// server.
    private mutating func recover(containerAlive alive: Bool) -> Action {
        switch (state, alive) {
        case (.running, true), (.pooled, true):
            return .none
        case (.pausing, true), (.resuming, true), (.forking, true):
            state = .running
            return .none
        case (.paused, let alive):
            return alive ? .removeContainer : .none
        case (.resuming, false):
            state = .paused
            return .removeContainer
        case (.pausing, false), (.forking, false):
            // The checkpoint stopped the container but its image was never
            // stored: the sandbox keeps its files, asleep as after a
            // files-only pause (its next resume boots it on them).
            state = .paused
            return .removeContainer
        case (.killed, _):
            return .none
        default:
            // creating, killing, or a container that is gone.
            state = .killing
            return .teardown
        }
    }
}

extension SandboxMachine.Event {
    /// The event as a verb, for error messages.
    var verb: String {
        switch self {
        case .started: "start"
        case .claimed: "be claimed from the pool"
        case .pause: "be paused"
        case .checkpointed, .checkpointRefused, .restartedFromFiles: "finish a checkpoint"
        case .resume: "be resumed"
        case .restored, .restoreFailed: "finish a restore"
        case .fork: "be forked"
        case .forked: "finish a fork"
        case .kill: "be killed"
        case .died: "die"
        case .tornDown: "finish being killed"
        case .recovered: "be recovered"
        }
    }
}
