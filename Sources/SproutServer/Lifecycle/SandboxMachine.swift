import SproutAPI
import SproutCore

/// The sandbox lifecycle as a pure state machine, in the style of
/// async-http-client's: `handle(_:)` checks that an event is allowed in the
/// current state, moves to the next state and returns the one action the
/// caller must perform next. No I/O happens here, so every transition (and
/// every refused one) is tested alone (`SandboxMachineTests`).
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
/// A pause carries what it keeps (`memory`) from `pausing` through `paused`
/// to `resuming`: a resume restores the memory image or boots again on the
/// files because the state says which, not the caller. `pausing` and
/// `forking` fall back to `running` when the checkpoint is refused before it
/// began, or (processes lost) when it failed and the sandbox was started
/// again from its files; `resuming` falls back to `paused` when the restore
/// fails.
public struct SandboxMachine: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        case creating
        case pooled
        case running
        case pausing(memory: Bool)
        case paused(memory: Bool)
        case resuming(memory: Bool)
        case forking
        case killing
        case killed

        /// The state as stored and reported.
        public var status: SandboxState {
            switch self {
            case .creating: .creating
            case .pooled: .pooled
            case .running: .running
            case .pausing: .pausing
            case .paused: .paused
            case .resuming: .resuming
            case .forking: .forking
            case .killing: .killing
            case .killed: .killed
            }
        }

        /// What a pause keeps, where the state carries it.
        public var keepsMemory: Bool? {
            switch self {
            case .pausing(let memory), .paused(let memory), .resuming(let memory): memory
            default: nil
            }
        }

        /// A state from its stored parts.
        public init(_ status: SandboxState, memory: Bool) {
            switch status {
            case .creating: self = .creating
            case .pooled: self = .pooled
            case .running: self = .running
            case .pausing: self = .pausing(memory: memory)
            case .paused: self = .paused(memory: memory)
            case .resuming: self = .resuming(memory: memory)
            case .forking: self = .forking
            case .killing: self = .killing
            case .killed: self = .killed
            }
        }

        /// Every state, both ways where it carries a pause's kind.
        public static let all: [State] = SandboxState.allCases.flatMap { status in
            [State(status, memory: true), State(status, memory: false)]
        }.reduce(into: []) { all, state in if !all.contains(state) { all.append(state) } }
    }

    public private(set) var state: State

    public init(state: State) { self.state = state }

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
        /// Start again: from the memory image, or from the files, as the pause kept.
        case resume
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
            state = .pausing(memory: memory)
            return memory ? .checkpoint : .stopContainer
        case (.pausing(let memory), .checkpointed):
            state = .paused(memory: memory)
            return .none
        case (.pausing, .checkpointRefused), (.forking, .checkpointRefused):
            state = .running
            return .none
        case (.pausing, .restartedFromFiles), (.forking, .restartedFromFiles):
            state = .running
            return .none
        case (.paused(let memory), .resume):
            state = .resuming(memory: memory)
            return memory ? .restoreFromImage : .bootFromFiles
        case (.resuming, .restored):
            state = .running
            return .none
        case (.resuming(let memory), .restoreFailed):
            state = .paused(memory: memory)
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
            throw SproutError(.conflict, "a \(state.status.rawValue) sandbox cannot \(event.verb)")
        }
    }

    /// What a restart finds, and what it makes of it: a running container
    /// stays (`running`, `pooled`) or is finished (`resuming`, `forking`,
    /// `pausing` whose checkpoint never happened); a paused one keeps its
    /// image and files; a pause or fork whose checkpoint stopped the
    /// container keeps the files, paused (without memory: the image was never
    /// stored); anything else was lost with the server.
    private mutating func recover(containerAlive alive: Bool) -> Action {
        switch (state, alive) {
        case (.running, true), (.pooled, true):
            return .none
        case (.pausing, true), (.resuming, true), (.forking, true):
            state = .running
            return .none
        case (.paused, let alive):
            return alive ? .removeContainer : .none
        case (.resuming(let memory), false):
            state = .paused(memory: memory)
            return .removeContainer
        case (.pausing, false), (.forking, false):
            // The checkpoint stopped the container but its image was never
            // stored: the sandbox keeps its files, asleep as after a
            // files-only pause (its next resume boots it on them).
            state = .paused(memory: false)
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
