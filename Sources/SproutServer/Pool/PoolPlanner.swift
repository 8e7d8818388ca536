/// Decides how many sandboxes the warm pool keeps ready for each env: a
/// pure function of demand, what is ready and the limits, tested alone
/// (`PoolPlannerTests`).
///
/// - An env is in demand if a create that a pooled sandbox could serve
///   asked for it within the last `idleSeconds`.
/// - Envs in demand get up to `perEnv` sandboxes each, the most recently
///   asked-for first, until `budget` sandboxes are pooled in all.
/// - Envs not in demand (or superseded: their name now points at a newer
///   env, or deleted) lose their pooled sandboxes, oldest first, and so do
///   envs holding more than their share.
public struct PoolPlanner: Sendable, Equatable {
    public var perEnv: Int
    public var budget: Int
    public var idleSeconds: Double

    public init(perEnv: Int, budget: Int, idleSeconds: Double) {
        self.perEnv = perEnv
        self.budget = budget
        self.idleSeconds = idleSeconds
    }

    /// Creates of an env that the pool could have served.
    public struct Demand: Sendable, Equatable {
        public var lastAsked: Double
        public init(lastAsked: Double) { self.lastAsked = lastAsked }
    }

    /// A sandbox in the pool (or starting for it).
    public struct Pooled: Sendable, Equatable {
        public var id: String
        public var env: String
        public var createdAt: Double
        public init(id: String, env: String, createdAt: Double) {
            self.id = id
            self.env = env
            self.createdAt = createdAt
        }
    }

    public struct Plan: Sendable, Equatable {
        /// Sandboxes to start, per env.
        public var start: [String: Int] = [:]
        /// Pooled sandboxes to kill.
        public var retire: [String] = []
        /// How many each env should have.
        public var targets: [String: Int] = [:]

        public var isEmpty: Bool { start.isEmpty && retire.isEmpty }
    }

    public func plan(now: Double, demand: [String: Demand], pooled: [Pooled], unavailable: Set<String>) -> Plan {
        var plan = Plan()
        // Who gets the budget: recent demand first; ties by env id, so the plan is stable.
        let wanted = demand
            .filter { now - $0.value.lastAsked <= idleSeconds && !unavailable.contains($0.key) }
            .sorted { ($0.value.lastAsked, $1.key) > ($1.value.lastAsked, $0.key) }
        var left = max(0, budget)
        for (env, _) in wanted {
            let share = min(perEnv, left)
            plan.targets[env] = share
            left -= share
        }
        let byEnv = Dictionary(grouping: pooled, by: \.env)
        for (env, sandboxes) in byEnv {
            let target = plan.targets[env] ?? 0
            if sandboxes.count > target {
                let oldestFirst = sandboxes.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }
                plan.retire += oldestFirst.prefix(sandboxes.count - target).map(\.id)
            }
        }
        for (env, target) in plan.targets {
            let have = byEnv[env]?.count ?? 0
            if have < target { plan.start[env] = target - have }
        }
        plan.retire.sort()
        return plan
    }
}
