import Foundation
import SproutAPI
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutSystem

extension Sandboxes {
    /// Creates a sandbox and returns once its agent is ready: a pooled one if
    /// one fits (milliseconds), else a new one. A failure at any step removes
    /// everything made so far: no container, mount, namespace, veth, address
    /// or directory is left, and no record.
    public func create(_ body: API.CreateSandbox, for identity: Identity) async throws -> API.Sandbox {
        let started = monotonicSeconds()
        let request = try CreateRequest(body, settings: core.settings)
        if (request.pauseOnTimeout || request.idlePauseSeconds != nil) && !request.pauseFilesOnly { try core.requireMemorySnapshots() }
        let env = try await EnvGraph(core: core).resolve(request.env, team: identity.team)
        if request.poolable(core.settings) {
            await core.pool?.noteDemand(env)
            let timeout = Double(request.limits.timeout)
            let metadata = JSONColumn.encode(request.metadata)
            let envVars = JSONColumn.encode(request.envVars)
            let team = identity.team
            let (pause, resume, idle) = (request.pauseOnTimeout, request.autoResume, request.idlePauseSeconds.map(Double.init))
            let filesOnly = request.pauseFilesOnly
            if let claimed = try await repository.claim(env: env.id, runtime: core.runtime.kind.rawValue, { record in
                record.team = team
                record.createdAt = now()
                record.expiresAt = now() + timeout
                record.lifetimeSeconds = timeout
                record.onTimeout = pause ? "pause" : nil
                record.resumeOnRequest = resume
                record.idlePauseSeconds = idle
                record.pauseFilesOnly = filesOnly
                record.metadata = metadata
                record.envVars = envVars
            }) {
                await core.pool?.claimed()
                await writeEnvFile(claimed, request.envVars)
                core.metrics.create(result: "pool", seconds: monotonicSeconds() - started)
                core.logger.withSandbox(claimed.id).info("running (from the pool)")
                await core.publishStateCounts()
                return api(claimed)
            }
        }
        let record = try await start(env: env, team: identity.team, request: request, pooled: false)
        await writeEnvFile(record, request.envVars)
        core.metrics.create(result: "ok", seconds: monotonicSeconds() - started)
        await core.publishStateCounts()
        return api(record)
    }

    /// Where a sandbox's own variables are, for processes that were running
    /// before it existed: a warm env's `start` (the code interpreter reads
    /// them from here). Every process Sprout starts gets them in its
    /// environment anyway.
    public static let envFile = "/run/sprout/env.json"

    /// Writes the sandbox's variables to `envFile` (only if it has any).
    /// A sandbox whose file system refuses it still runs: that is logged.
    func writeEnvFile(_ record: SandboxRecord, _ envVars: [String: String]) async {
        guard !envVars.isEmpty else { return }
        let path = core.host.envFile
        do {
            let json = try JSONSerialization.data(withJSONObject: envVars, options: [.sortedKeys])
            try await core.agent(record).write(Array(json), to: path, mode: 0o644)
        } catch {
            core.logger.withSandbox(record.id).warning("could not write \(path)", metadata: ["error": "\(error)"])
        }
    }

    /// Starts a new sandbox, ending `running` (or `pooled`, for the pool; no
    /// team, for a build step). Creates users wait for are counted, so the
    /// pool's refills yield to them.
    func start(env: ResolvedEnv, team: String, request: CreateRequest, pooled: Bool) async throws -> SandboxRecord {
        if !pooled { core.createsInFlight.withLock { $0 += 1 } }
        defer { if !pooled { core.createsInFlight.withLock { $0 -= 1 } } }
        let started = monotonicSeconds()
        if let free = FileSystem.freeBytes(core.settings.dataDirectory), free < core.settings.minimumFreeBytes {
            throw SproutError(.unavailable,
                "not enough disk space in \(core.settings.dataDirectory): \(free >> 20) MiB free, \(core.settings.minimumFreeBytes >> 20) MiB needed")
        }
        // Deep chains are squashed in blocks (cached) before anything is allocated.
        let lowers = try await launcher.lowerDirectories(env)
        // A warm env starts from its memory image, on a runtime that can restore one.
        let warmImage: String? = if let image = env.memoryImage, core.runtime.capabilities.memorySnapshot {
            try await launcher.materializedImage(image)
        } else {
            nil
        }
        let id = Identifiers.make(prefix: "sbx", length: 16)
        // The pool and build steps are outside the memory budget (--pool-budget bounds the pool).
        let room: MemoryReservation? = pooled || team.isEmpty ? nil : try await MemoryPressure(core: core).admit([id], memoryMB: request.limits.memoryMB)
        defer { room?.release() }
        let token = warmImage != nil ? (env.memoryToken ?? "") : Identifiers.random(length: 40)
        let slot = try core.host.addresses.allocate(owner: core.slotOwner(id))
        var made = SandboxRecord(
            id: id, team: team, env: env.id, runtime: core.runtime.kind.rawValue, createdAt: now(),
            expiresAt: pooled ? nil : now() + Double(request.limits.timeout), cpu: request.limits.cpu, memoryMB: request.limits.memoryMB,
            internet: request.policy.internet, metadata: request.metadata, envVars: request.envVars, slot: slot.index, agentToken: token,
            egress: request.policy.egress, diskMB: request.limits.diskMB)
        made.lifetimeSeconds = Double(request.limits.timeout)
        made.onTimeout = request.pauseOnTimeout ? "pause" : nil
        made.resumeOnRequest = request.autoResume
        made.idlePauseSeconds = request.idlePauseSeconds.map(Double.init)
        made.pauseFilesOnly = request.pauseFilesOnly
        let record = made
        do {
            try await repository.insert(record)
        } catch {
            core.host.addresses.release(slot, owner: core.slotOwner(id))
            throw error
        }
        let log = core.logger.withSandbox(id)
        log.info("creating", metadata: ["env": "\(env.id)", "runtime": "\(core.runtime.kind.rawValue)", "pooled": "\(pooled)"])
        // A kill that arrives meanwhile waits for this to finish (see OperationGate).
        return try await core.gate.run(.create, on: id) {
            do {
                let prepared = monotonicSeconds()
                let phases = try await launcher.bringUp(record, layers: lowers, image: warmImage)
                let broughtUp = monotonicSeconds()
                let timeout = Double(request.limits.timeout)
                let (running, _) = try await repository.transition(id, .started(pooled: pooled)) { record in
                    if !pooled { record.expiresAt = now() + timeout }
                }
                await launcher.watch(running)
                log.info("\(running.state.rawValue)", metadata: [
                    "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))", "from": "\(warmImage != nil ? "memory" : "boot")",
                    "phases": "prepare \(String(format: "%.1f", (prepared - started) * 1000)) ms, \(phases), record \(String(format: "%.1f", (monotonicSeconds() - broughtUp) * 1000)) ms",
                ])
                return running
            } catch {
                log.error("create failed; rolling back", metadata: ["error": "\(error)"])
                core.metrics.runtimeError(operation: "create")
                core.metrics.create(result: "error", seconds: monotonicSeconds() - started)
                await launcher.teardown(record)
                // Detached: the rollback must complete even if this task was cancelled.
                let repository = self.repository
                await Task.detached { try? await repository.delete(id) }.value
                throw error
            }
        }
    }
}
