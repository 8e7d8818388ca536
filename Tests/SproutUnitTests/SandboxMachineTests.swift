import SproutCore
import SproutServer
import Testing

@Suite("Unit: sandbox state machine")
struct SandboxMachineTests {
    typealias Event = SandboxMachine.Event
    typealias Action = SandboxMachine.Action

    /// Every allowed (state, event) pair, with the state and action it leads to.
    static let allowed: [(SandboxState, Event, SandboxState, Action)] = [
        (.creating, .started(pooled: false), .running, .none),
        (.creating, .started(pooled: true), .pooled, .none),
        (.pooled, .claimed, .running, .none),
        (.running, .pause(memory: true), .pausing, .checkpoint),
        (.running, .pause(memory: false), .pausing, .stopContainer),
        (.pausing, .checkpointed, .paused, .none),
        (.pausing, .checkpointRefused, .running, .none),
        (.forking, .checkpointRefused, .running, .none),
        (.pausing, .restartedFromFiles, .running, .none),
        (.forking, .restartedFromFiles, .running, .none),
        (.paused, .resume(fromMemory: true), .resuming, .restoreFromImage),
        (.paused, .resume(fromMemory: false), .resuming, .bootFromFiles),
        (.resuming, .restored, .running, .none),
        (.resuming, .restoreFailed, .paused, .removeContainer),
        (.running, .fork, .forking, .checkpoint),
        (.forking, .forked, .running, .none),
        (.running, .kill, .killing, .teardown),
        (.pooled, .kill, .killing, .teardown),
        (.paused, .kill, .killing, .teardown),
        (.running, .died, .killing, .teardown),
        (.pooled, .died, .killing, .teardown),
        (.pausing, .died, .killing, .teardown),
        (.forking, .died, .killing, .teardown),
        (.killing, .tornDown, .killed, .none),
    ]

    static let events: [Event] = [
        .started(pooled: false), .started(pooled: true), .claimed, .pause(memory: true), .pause(memory: false), .checkpointed,
        .checkpointRefused, .restartedFromFiles, .resume(fromMemory: true), .resume(fromMemory: false), .restored, .restoreFailed,
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
        for state in SandboxState.allCases {
            for event in Self.events where !Self.allowed.contains(where: { $0.0 == state && $0.1 == event }) {
                var machine = SandboxMachine(state: state)
                #expect(throws: SproutError.self, "\(state) + \(event)") { try machine.handle(event) }
                do {
                    _ = try machine.handle(event)
                } catch let error as SproutError {
                    #expect(error.code == .conflict)
                    #expect(error.message.contains(state.rawValue))
                } catch {
                    Issue.record("unexpected \(error)")
                }
                #expect(machine.state == state)
                refused += 1
            }
        }
        // 9 states x 17 events, less the allowed ones: the table is exhaustive.
        #expect(refused == SandboxState.allCases.count * Self.events.count - Self.allowed.count)
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
        let cases: [(SandboxState, Bool, SandboxState, Action)] = [
            (.running, true, .running, .none),
            (.pooled, true, .pooled, .none),
            (.pausing, true, .running, .none),
            (.resuming, true, .running, .none),
            (.forking, true, .running, .none),
            (.paused, false, .paused, .none),
            (.paused, true, .paused, .removeContainer),
            (.resuming, false, .paused, .removeContainer),
            (.killed, false, .killed, .none),
            (.running, false, .killing, .teardown),
            (.pooled, false, .killing, .teardown),
            (.pausing, false, .paused, .removeContainer),
            (.forking, false, .paused, .removeContainer),
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
