import SproutCore
import SproutServer
import SproutSystem
import Testing

@Suite("Unit: operation gate")
struct OperationGateTests {
    @Test("the policy table: kills and death clean-ups wait; wakes wait except for a kill; the rest refuse")
    func policy() {
        for inFlight in SandboxOperation.allCases {
            #expect(OperationGate.policy(for: .kill, during: inFlight) == .wait)
            #expect(OperationGate.policy(for: .died, during: inFlight) == .wait)
            let wake: GatePolicy = inFlight == .kill || inFlight == .died ? .refuse : .wait
            #expect(OperationGate.policy(for: .wake, during: inFlight) == wake, "wake during \(inFlight)")
            let resume: GatePolicy = [.resume, .wake, .pause].contains(inFlight) ? .wait : .refuse
            #expect(OperationGate.policy(for: .resume, during: inFlight) == resume, "resume during \(inFlight)")
            for exclusive in [SandboxOperation.pause, .fork, .snapshot, .create] {
                #expect(OperationGate.policy(for: exclusive, during: inFlight) == .refuse, "\(exclusive) during \(inFlight)")
            }
        }
    }

    @Test("a pause in flight refuses a second pause with 409 and makes a kill wait until it is done")
    func serialises() async throws {
        let gate = OperationGate()
        let order = Locked<[String]>([])
        let pauseEntered = AsyncStream<Void>.makeStream()
        let release = AsyncStream<Void>.makeStream()
        let pause = Task {
            try await gate.run(.pause, on: "sbx_a") {
                order.withLock { $0.append("pause start") }
                pauseEntered.continuation.yield()
                for await _ in release.stream { break }
                order.withLock { $0.append("pause end") }
            }
        }
        for await _ in pauseEntered.stream { break }
        #expect(await gate.current("sbx_a") == .pause)
        await #expect(throws: SproutError.self) { try await gate.run(.pause, on: "sbx_a") {} }
        await #expect(throws: SproutError.self) { try await gate.run(.fork, on: "sbx_a") {} }
        // Another sandbox is not held up.
        try await gate.run(.pause, on: "sbx_b") { order.withLock { $0.append("b") } }
        let kill = Task { try await gate.run(.kill, on: "sbx_a") { order.withLock { $0.append("kill") } } }
        try await Task.sleep(for: .milliseconds(50))
        #expect(!order.current.contains("kill"), "the kill waits for the pause")
        #expect(await gate.runIfIdle(.kill, on: "sbx_a") { 1 } == nil, "periodic work skips a busy sandbox")
        release.continuation.yield()
        try await pause.value
        try await kill.value
        #expect(order.current == ["pause start", "b", "pause end", "kill"])
        #expect(await gate.current("sbx_a") == nil)
    }

    @Test("concurrent wakes run one after another, never at once")
    func wakesQueue() async throws {
        let gate = OperationGate()
        let inside = Locked(0)
        let most = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    try await gate.run(.wake, on: "sbx_w") {
                        let now = inside.withLock { $0 += 1; return $0 }
                        most.withLock { $0 = max($0, now) }
                        try await Task.sleep(for: .milliseconds(2))
                        inside.withLock { $0 -= 1 }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(most.current == 1)
    }
}

@Suite("Unit: store leases")
struct LeaseTableTests {
    @Test("no sweep while a lease is held; a sweep asked for meanwhile runs when the last lease ends")
    func sweepWaitsForLeases() {
        var table = LeaseTable()
        #expect(table.lease(.images) == .none)
        #expect(table.lease(.images) == .none)
        #expect(table.collect(.images) == .none)
        #expect(table.release(.images) == .none)
        #expect(table.release(.images) == .sweep)
        // While it sweeps, a new lease waits; a second collect is remembered.
        #expect(table.lease(.images) == .wait)
        #expect(table.collect(.images) == .none)
        #expect(table.sweepFinished(.images) == .sweep)
        #expect(table.sweepFinished(.images) == .none)
        #expect(table.lease(.images) == .none)
    }

    @Test("stores are independent; an idle store sweeps at once")
    func independentStores() {
        var table = LeaseTable()
        #expect(table.lease(.layers) == .none)
        #expect(table.collect(.images) == .sweep)
        #expect(table.collect(.layers) == .none)
        #expect(table.sweepFinished(.images) == .none)
        #expect(table.release(.layers) == .sweep)
    }
}

@Suite("Unit: warm pool planner")
struct PoolPlannerTests {
    let planner = PoolPlanner(perEnv: 2, budget: 5, idleSeconds: 600)

    @Test("envs in demand get their share, most recent first, within the budget")
    func budget() {
        let demand = (0..<4).reduce(into: [String: PoolPlanner.Demand]()) { $0["env\($1)"] = .init(lastAsked: 1000 + Double($1)) }
        let plan = planner.plan(now: 1100, demand: demand, pooled: [], unavailable: [])
        #expect(plan.targets == ["env3": 2, "env2": 2, "env1": 1, "env0": 0])
        #expect(plan.start == ["env3": 2, "env2": 2, "env1": 1])
        #expect(plan.retire.isEmpty)
        #expect(plan.targets.values.reduce(0, +) == 5)
    }

    @Test("demand that stopped, and superseded envs, lose their pooled sandboxes, oldest first")
    func shrinks() {
        let pooled = [
            PoolPlanner.Pooled(id: "a1", env: "old", createdAt: 1), PoolPlanner.Pooled(id: "a2", env: "old", createdAt: 2),
            PoolPlanner.Pooled(id: "b1", env: "gone", createdAt: 3),
            PoolPlanner.Pooled(id: "c1", env: "hot", createdAt: 4), PoolPlanner.Pooled(id: "c2", env: "hot", createdAt: 5),
            PoolPlanner.Pooled(id: "c3", env: "hot", createdAt: 6),
        ]
        let demand: [String: PoolPlanner.Demand] = ["old": .init(lastAsked: 0), "gone": .init(lastAsked: 990), "hot": .init(lastAsked: 995)]
        let plan = planner.plan(now: 1000, demand: demand, pooled: pooled, unavailable: ["gone"])
        #expect(plan.retire == ["a1", "a2", "b1", "c1"])
        #expect(plan.start.isEmpty)
        #expect(plan.targets == ["hot": 2])
    }

    @Test("30 chained envs asked for once each keep at most the budget, and none once demand is idle")
    func chainedSnapshots() {
        var demand: [String: PoolPlanner.Demand] = [:]
        for i in 0..<30 { demand["snap\(i)"] = .init(lastAsked: Double(i)) }
        let busy = planner.plan(now: 30, demand: demand, pooled: [], unavailable: [])
        #expect(busy.start.values.reduce(0, +) == 5)
        let pooled = busy.start.flatMap { env, n in (0..<n).map { PoolPlanner.Pooled(id: "\(env)-\($0)", env: env, createdAt: 30) } }
        let idle = planner.plan(now: 30 + 601 + 30, demand: demand, pooled: pooled, unavailable: [])
        #expect(idle.retire.count == 5)
        #expect(idle.start.isEmpty)
    }
}
