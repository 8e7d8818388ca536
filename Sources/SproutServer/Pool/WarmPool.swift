import Foundation
import Logging
import ServiceLifecycle
import SproutCore
import SproutSystem

/// What the warm pool should keep: which envs creates asked for, and when.
/// The lifecycle writes it (a create that a pooled sandbox could have
/// served, a pooled sandbox claimed); the pool reads it. Each write wakes
/// the pool (`changes`). In memory: pooled sandboxes do not survive a
/// restart either.
public actor PoolDemand {
    private var demand: [String: PoolPlanner.Demand] = [:]
    private var envs: [String: ResolvedEnv] = [:]
    private let clock: any WallClock
    /// One element per change (coalesced): a reason for the pool to look again.
    nonisolated let changes: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    public init(clock: any WallClock) {
        self.clock = clock
        (changes, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// A create that a pooled sandbox could serve asked for `env`.
    func note(_ env: ResolvedEnv) {
        demand[env.id] = PoolPlanner.Demand(lastAsked: clock.now)
        envs[env.id] = env
        continuation.yield()
    }

    /// A pooled sandbox was taken; or time passed (the supervisor's rounds, so idle pools shrink).
    func changed() { continuation.yield() }

    /// A pooled sandbox was taken: the pool refills.
    func claimed() { continuation.yield() }

    var current: (demand: [String: PoolPlanner.Demand], envs: [String: ResolvedEnv]) { (demand, envs) }

    func forget(_ ids: [String]) {
        for id in ids {
            demand[id] = nil
            envs[id] = nil
        }
    }

    func finish() { continuation.finish() }
}

/// The warm pool: sandboxes started ahead of demand with the default limits,
/// so a create that fits takes one in milliseconds instead of starting a
/// container. A pooled sandbox is a fresh container nobody has used; its id
/// (and so its hostname) is final, and its env vars are applied by the
/// server to every process it starts.
///
/// What to keep is `PoolPlanner`'s decision: pools follow recent demand,
/// within a total budget, and shrink when demand stops; superseded and
/// deleted envs lose theirs. This service carries out the plan whenever
/// demand changes.
public actor WarmPool: Service {
    let lifecycle: SandboxLifecycle
    let demand: PoolDemand
    let planner: PoolPlanner
    let clock: any WallClock
    let logger: Logger
    /// Starts in progress per env (not yet `pooled` in the catalog).
    private var starting: [String: Int] = [:]
    private var adjusting = false
    private var again = false
    /// Callers of `adjust` waiting for the pass in progress (and its repeat) to end.
    private var waiting: [CheckedContinuation<Void, Never>] = []

    init(lifecycle: SandboxLifecycle, demand: PoolDemand, settings: Settings, clock: any WallClock, logger: Logger) {
        self.lifecycle = lifecycle
        self.demand = demand
        self.planner = PoolPlanner(perEnv: settings.poolSize, budget: settings.poolBudget, idleSeconds: settings.poolIdleSeconds)
        self.clock = clock
        self.logger = logger
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            for await _ in demand.changes {
                guard !Task.isShuttingDownGracefully else { return }
                await adjust()
            }
        } onGracefulShutdown: {
            Task { await self.demand.finish() }
        }
    }

    /// Carries out plans until one finds nothing to do. A call while a pass
    /// runs makes that pass look again, and returns when it has.
    func adjust() async {
        guard planner.perEnv > 0 && planner.budget > 0 else { return }
        guard !adjusting else {
            again = true
            await withCheckedContinuation { waiting.append($0) }
            return
        }
        adjusting = true
        defer {
            adjusting = false
            for waiter in waiting { waiter.resume() }
            waiting = []
        }
        repeat {
            again = false
            guard !Task.isShuttingDownGracefully else { return }
            let (plan, envs) = await currentPlan()
            lifecycle.metrics.poolTargets(plan.targets)
            for id in plan.retire {
                _ = try? await lifecycle.kill(id, reason: "pool: not needed")
            }
            for (env, count) in plan.start.sorted(by: { $0.key < $1.key }) {
                for _ in 0..<count {
                    guard !Task.isShuttingDownGracefully, let resolved = envs[env] else { break }
                    await lifecycle.createsSettled()
                    starting[env, default: 0] += 1
                    defer { starting[env, default: 1] -= 1 }
                    do {
                        try await lifecycle.startPooled(resolved)
                    } catch {
                        logger.error("cannot refill the pool", metadata: ["env": "\(env)", "error": "\(error)"])
                        break
                    }
                }
            }
            await lifecycle.publishStateCounts()
        } while again
    }

    /// The planner's decision for the pool as it stands, and the envs it may start.
    func currentPlan() async -> (PoolPlanner.Plan, [String: ResolvedEnv]) {
        let (wanted, envs) = await demand.current
        let pooled = ((try? await lifecycle.repository.all(in: [.pooled])) ?? [])
            .map { PoolPlanner.Pooled(id: $0.id, env: $0.env, createdAt: $0.createdAt) }
        // Starts in flight count as pooled already (so a plan never starts them twice).
        let inFlight = starting.flatMap { env, n in (0..<n).map { PoolPlanner.Pooled(id: "starting-\(env)-\($0)", env: env, createdAt: .infinity) } }
        var unavailable = (try? await lifecycle.catalog.envs.superseded(Array(wanted.keys))) ?? []
        for env in wanted.keys where !EnvGraph.builtins.contains(env) {
            if (try? await lifecycle.catalog.envs.find(env)) == nil { unavailable.insert(env) }
        }
        var plan = planner.plan(now: clock.now, demand: wanted, pooled: pooled + inFlight, unavailable: unavailable)
        plan.retire.removeAll { $0.hasPrefix("starting-") }
        // Forget demand that no longer counts.
        await demand.forget(wanted.keys.filter { env in plan.targets[env] == nil && !pooled.contains(where: { $0.env == env }) })
        return (plan, envs)
    }
}
