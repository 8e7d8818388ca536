import Foundation
import GRDB
import SproutClient
import SproutCore

/// The warm pool: sandboxes started ahead of demand for the default limits,
/// so a create that fits takes one in milliseconds instead of starting a
/// container. A pooled sandbox is a fresh container nobody has used; its id
/// (and so its hostname) is final, and its env vars are applied by the
/// server to every process it starts. An env gets a pool once it has been
/// asked for; the pool refills in the background after every claim.
extension SandboxManager {
    /// Notes that `env` is in use, so the pool keeps sandboxes of it ready.
    func wantPool(for env: ResolvedEnv) {
        guard settings.poolSize > 0, pooledEnvs[env.id] == nil else { return }
        pooledEnvs[env.id] = env
        poolWakeup.yield()
    }

    /// Takes a pooled sandbox of `request.env` for `identity`, if there is one.
    func claim(_ request: API.CreateSandbox, env: String, limits: Limits, for identity: Identity) async throws -> SandboxRecord? {
        let claimed: SandboxRecord? = try await catalog.db.write { db in
            guard var record = try SandboxRecord
                .filter(Column("state") == SandboxState.pooled.rawValue && Column("env") == env
                        && Column("runtime") == self.runtime.kind.rawValue)
                .order(Column("createdAt"))
                .fetchOne(db)
            else { return nil }
            record.state = try record.state.transition(to: .running, id: record.id)
            record.team = identity.team
            record.createdAt = now()
            record.expiresAt = now() + Double(limits.timeout)
            record.metadata = SandboxRecord.encode(request.metadata ?? [:])
            record.envVars = SandboxRecord.encode(request.envVars ?? [:])
            try record.update(db)
            return record
        }
        if claimed != nil { poolWakeup.yield() }
        return claimed
    }

    /// Starts sandboxes until every wanted env has `poolSize` ready.
    func fillPool() async {
        guard !fillingPool else { return }
        fillingPool = true
        defer { fillingPool = false }
        for env in pooledEnvs.values.sorted(by: { $0.id < $1.id }) {
            while !Task.isCancelled && !Task.isShuttingDownGracefully {
                let ready = (try? await catalog.db.read { db in
                    try SandboxRecord.filter(Column("state") == SandboxState.pooled.rawValue && Column("env") == env.id).fetchCount(db)
                }) ?? settings.poolSize
                guard ready < settings.poolSize else { break }
                // Refilling yields to the creates users are waiting for.
                while createsInFlight > 0 && !Task.isShuttingDownGracefully {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                let limits = Limits(cpu: settings.defaultCPU, memoryMB: settings.defaultMemoryMB, timeout: settings.defaultTimeoutSeconds, diskMB: settings.defaultDiskMB)
                do {
                    _ = try await start(env: env, team: "", limits: limits, internet: true, metadata: [:], envVars: [:], state: .pooled)
                    publishStateCounts()
                } catch {
                    logger.error("cannot refill the pool", metadata: ["env": "\(env.id)", "error": "\(error)"])
                    break
                }
            }
        }
    }
}
