import Foundation
import SproutCore
import SproutSystem

/// The warm pool: sandboxes started ahead of demand with the default limits,
/// so a create that fits takes one in milliseconds instead of starting a
/// container. A pooled sandbox is a fresh container nobody has used; its id
/// (and so its hostname) is final, and its env vars are applied by the
/// server to every process it starts.
///
/// What to keep is `PoolPlanner`'s decision: pools follow recent demand,
/// within a total budget, and shrink when demand stops; superseded and
/// deleted envs lose theirs. This actor remembers demand (in memory: pooled
/// sandboxes do not survive a restart either) and carries out the plan.
public actor WarmPool {
    let core: ServerCore
    let planner: PoolPlanner
    private var demand: [String: PoolPlanner.Demand] = [:]
    private var envs: [String: ResolvedEnv] = [:]
    /// Starts in progress per env (not yet `pooled` in the catalog).
    private var starting: [String: Int] = [:]
    private var running = false
    private var again = false

    public init(core: ServerCore) {
        self.core = core
        self.planner = PoolPlanner(perEnv: core.settings.poolSize, budget: core.settings.poolBudget, idleSeconds: core.settings.poolIdleSeconds)
    }

    /// A create that a pooled sandbox could serve asked for `env`.
    func noteDemand(_ env: ResolvedEnv) {
        guard planner.perEnv > 0 && planner.budget > 0 else { return }
        demand[env.id] = PoolPlanner.Demand(lastAsked: now())
        envs[env.id] = env
        kick()
    }

    /// A pooled sandbox was taken: refill.
    func claimed() { kick() }

    /// Looks at the plan again (the supervisor calls this every few seconds, so idle pools shrink).
    func tick() { kick() }

    private func kick() {
        guard !running else {
            again = true
            return
        }
        running = true
        Task { await self.adjust() }
    }

    /// Carries out plans until one finds nothing to do.
    private func adjust() async {
        defer { running = false }
        repeat {
            again = false
            guard !Task.isShuttingDownGracefully else { return }
            let plan = await currentPlan()
            core.metrics.poolTargets(plan.targets)
            for id in plan.retire {
                _ = try? await Sandboxes(core: core).kill(id, reason: "pool: not needed")
            }
            for (env, count) in plan.start.sorted(by: { $0.key < $1.key }) {
                for _ in 0..<count {
                    guard !Task.isShuttingDownGracefully, let resolved = envs[env] else { break }
                    // Refilling yields to the creates users are waiting for.
                    while core.createsInFlight.current > 0 && !Task.isShuttingDownGracefully {
                        try? await Task.sleep(for: .milliseconds(20))
                    }
                    starting[env, default: 0] += 1
                    defer { starting[env, default: 1] -= 1 }
                    do {
                        let request = CreateRequest(
                            env: env, limits: CreateRequest.defaultLimits(core.settings), policy: .open, metadata: [:], envVars: [:],
                            fromPool: true)
                        _ = try await Sandboxes(core: core).start(env: resolved, team: "", request: request, pooled: true)
                    } catch {
                        core.logger.error("cannot refill the pool", metadata: ["env": "\(env)", "error": "\(error)"])
                        break
                    }
                }
            }
            await core.publishStateCounts()
        } while again
    }

    /// The planner's decision for the pool as it stands.
    func currentPlan() async -> PoolPlanner.Plan {
        let pooled = ((try? await core.catalog.sandboxes.all(in: [.pooled])) ?? [])
            .map { PoolPlanner.Pooled(id: $0.id, env: $0.env, createdAt: $0.createdAt) }
        // Starts in flight count as pooled already (so a plan never starts them twice).
        let inFlight = starting.flatMap { env, n in (0..<n).map { PoolPlanner.Pooled(id: "starting-\(env)-\($0)", env: env, createdAt: .infinity) } }
        var unavailable = (try? await core.catalog.envs.superseded(Array(demand.keys))) ?? []
        for env in demand.keys where !EnvGraph.builtins.contains(env) {
            if (try? await core.catalog.envs.find(env)) == nil { unavailable.insert(env) }
        }
        var plan = planner.plan(now: now(), demand: demand, pooled: pooled + inFlight, unavailable: unavailable)
        plan.retire.removeAll { $0.hasPrefix("starting-") }
        // Forget demand that no longer counts.
        for env in Array(demand.keys) where plan.targets[env] == nil && !pooled.contains(where: { $0.env == env }) {
            demand[env] = nil
            envs[env] = nil
        }
        return plan
    }
}
