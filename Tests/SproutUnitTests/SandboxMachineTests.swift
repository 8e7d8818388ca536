import SproutAPI
import SproutCore
import SproutServer
import Testing

@Suite("Unit: sandbox state machine")
struct SandboxMachineTests {
    typealias Event = SandboxMachine.Event
    typealias Action = SandboxMachine.Action
    typealias State = SandboxMachine.State

    /// Every allowed (state, event) pair, with the state and action it leads to.
    static let allowed: [(State, Event, State, Action)] = [
        (.creating, .started(pooled: false), .running, .none),
        (.creating, .started(pooled: true), .pooled, .none),
        (.pooled, .claimed, .running, .none),
        (.running, .pause(memory: true), .pausing(memory: true), .checkpoint),
        (.running, .pause(memory: false), .pausing(memory: false), .stopContainer),
        (.pausing(memory: true), .checkpointed, .paused(memory: true), .none),
        (.pausing(memory: false), .checkpointed, .paused(memory: false), .none),
        (.pausing(memory: true), .checkpointRefused, .running, .none),
        (.pausing(memory: false), .checkpointRefused, .running, .none),
        (.forking, .checkpointRefused, .running, .none),
        (.pausing(memory: true), .restartedFromFiles, .running, .none),
        (.pausing(memory: false), .restartedFromFiles, .running, .none),
        (.forking, .restartedFromFiles, .running, .none),
        (.paused(memory: true), .resume, .resuming(memory: true), .restoreFromImage),
        (.paused(memory: false), .resume, .resuming(memory: false), .bootFromFiles),
        (.resuming(memory: true), .restored, .running, .none),
        (.resuming(memory: false), .restored, .running, .none),
        (.resuming(memory: true), .restoreFailed, .paused(memory: true), .removeContainer),
        (.resuming(memory: false), .restoreFailed, .paused(memory: false), .removeContainer),
        (.running, .fork, .forking, .checkpoint),
        (.forking, .forked, .running, .none),
        (.running, .kill, .killing, .teardown),
        (.pooled, .kill, .killing, .teardown),
        (.paused(memory: true), .kill, .killing, .teardown),
        (.paused(memory: false), .kill, .killing, .teardown),
        (.running, .died, .killing, .teardown),
        (.pooled, .died, .killing, .teardown),
        (.pausing(memory: true), .died, .killing, .teardown),
        (.pausing(memory: false), .died, .killing, .teardown),
        (.forking, .died, .killing, .teardown),
        (.killing, .tornDown, .killed, .none),
    ]

    static let events: [Event] = [
        .started(pooled: false), .started(pooled: true), .claimed, .pause(memory: true), .pause(memory: false), .checkpointed,
        .checkpointRefused, .restartedFromFiles, .resume, .restored, .restoreFailed,
        .fork, .forked, .kill, .died, .tornDown,
    ]

    @Test("every allowed transition leads to its state and returns its action")
    func allowedTransitions() throws {
        for (from, event, to, action) in Self.allowed {
            var machine = SandboxMachine(state: from)
            #expect(try machine.handle(event) == action, "\(from) + \(event)")
            #expect(machine.state == to, "\(from) + \(event)")
        }
    }

    @Test("every other (state, event) pair is refused with a conflict and leaves the state alone")
    func refusedTransitions() {
        var refused = 0
        for state in State.all {
            for event in Self.events where !Self.allowed.contains(where: { $0.0 == state && $0.1 == event }) {
                var machine = SandboxMachine(state: state)
                #expect(throws: SproutError.self, "\(state) + \(event)") { try machine.handle(event) }
                do {
                    _ = try machine.handle(event)
                } catch let error as SproutError {
                    #expect(error.code == .conflict)
                    #expect(error.message.contains(state.status.rawValue))
                } catch {
                    Issue.record("unexpected \(error)")
                }
                #expect(machine.state == state)
                refused += 1
            }
        }
        // 12 states (three of them both ways) x 16 events, less the allowed ones: the table is exhaustive.
        #expect(State.all.count == 12)
        #expect(refused == State.all.count * Self.events.count - Self.allowed.count)
    }

    @Test("a killed sandbox stays killed: nothing brings it back")
    func killedIsFinal() {
        for event in Self.events {
            var machine = SandboxMachine(state: .killed)
            #expect(throws: SproutError.self) { try machine.handle(event) }
            #expect(machine.state == .killed)
        }
    }

    @Test("after a restart: live containers stay, half-done work is finished or undone (a cut-short checkpoint leaves the files, paused), lost ones are torn down")
    func recovery() throws {
        let cases: [(State, Bool, State, Action)] = [
            (.running, true, .running, .none),
            (.pooled, true, .pooled, .none),
            (.pausing(memory: true), true, .running, .none),
            (.resuming(memory: true), true, .running, .none),
            (.forking, true, .running, .none),
            (.paused(memory: true), false, .paused(memory: true), .none),
            (.paused(memory: false), false, .paused(memory: false), .none),
            (.paused(memory: true), true, .paused(memory: true), .removeContainer),
            (.resuming(memory: true), false, .paused(memory: true), .removeContainer),
            (.resuming(memory: false), false, .paused(memory: false), .removeContainer),
            (.killed, false, .killed, .none),
            (.running, false, .killing, .teardown),
            (.pooled, false, .killing, .teardown),
            (.pausing(memory: true), false, .paused(memory: false), .removeContainer),
            (.forking, false, .paused(memory: false), .removeContainer),
            (.creating, true, .killing, .teardown),
            (.creating, false, .killing, .teardown),
            (.killing, true, .killing, .teardown),
        ]
        for (from, alive, to, action) in cases {
            var machine = SandboxMachine(state: from)
            #expect(try machine.handle(.recovered(containerAlive: alive)) == action, "\(from), alive \(alive)")
            #expect(machine.state == to, "\(from), alive \(alive)")
        }
    }

    @Test("a pause's kind travels with it: what a resume does is the state's, not the caller's")
    func pauseKindTravels() throws {
        for memory in [true, false] {
            var machine = SandboxMachine(state: .running)
            _ = try machine.handle(.pause(memory: memory))
            _ = try machine.handle(.checkpointed)
            #expect(machine.state.keepsMemory == memory)
            #expect(SandboxMachine.State(machine.state.status, memory: memory) == machine.state, "stored parts make the state again")
            #expect(try machine.handle(.resume) == (memory ? .restoreFromImage : .bootFromFiles))
        }
        #expect(SandboxMachine.State.running.keepsMemory == nil)
    }

    @Test("only running and pooled sandboxes have a container; only killed ones hold nothing")
    func stateProperties() {
        #expect(SandboxState.allCases.filter(\.hasContainer) == [.pooled, .running])
        #expect(SandboxState.allCases.filter { !$0.isLive } == [.killed])
    }
}

@Suite("Unit: build state machine")
struct BuildMachineTests {
    @Test("running builds succeed, fail or are cancelled; failures and cancels discard their layers")
    func transitions() throws {
        let cases: [(BuildStatus, BuildMachine.Event, BuildStatus, BuildMachine.Action)] = [
            (.running, .succeeded, .succeeded, .none),
            (.running, .failed, .failed, .discardLayers),
            (.running, .cancel, .cancelling, .cancelTask),
            (.cancelling, .failed, .cancelled, .discardLayers),
            (.cancelling, .stopped, .cancelled, .discardLayers),
            (.cancelling, .succeeded, .cancelled, .discardLayers),
            (.running, .stopped, .cancelled, .discardLayers),
            (.running, .interrupted, .failed, .discardLayers),
            (.cancelling, .interrupted, .failed, .discardLayers),
        ]
        for (from, event, to, action) in cases {
            var machine = BuildMachine(status: from)
            #expect(try machine.handle(event) == action, "\(from) + \(event)")
            #expect(machine.status == to)
        }
    }

    @Test("a finished build takes no further event")
    func finalStates() {
        for status in BuildStatus.allCases where status.isFinal {
            for event in [BuildMachine.Event.succeeded, .failed, .cancel, .stopped, .interrupted] {
                var machine = BuildMachine(status: status)
                #expect(throws: SproutError.self) { try machine.handle(event) }
                #expect(machine.status == status)
            }
        }
        var cancelling = BuildMachine(status: .cancelling)
        #expect(throws: SproutError.self) { try cancelling.handle(.cancel) }
    }
}
