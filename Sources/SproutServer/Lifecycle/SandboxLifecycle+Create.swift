import Foundation
import SproutAPI
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutSystem

extension SandboxLifecycle {
    /// Creates a sandbox and returns once its agent is ready: a pooled one if
    /// one fits (milliseconds), else a new one. A failure at any step removes
    /// everything made so far: no container, mount, namespace, veth, address
    /// or directory is left, and no record.
    public func create(_ body: API.CreateSandbox, for identity: Identity) async throws -> API.Sandbox {
        let started = monotonicSeconds()
        var request = try CreateRequest(body, settings: settings)
        if (request.pauseOnTimeout || request.idlePauseSeconds != nil) && !request.pauseFilesOnly { try requireMemorySnapshots() }
        let env = try await graph.resolve(request.env, team: identity.team)
        // No volumes named (nil, not []): the env's own, as its sprout.toml set them.
        request.volumes = try await resolveVolumes(body.volumes ?? env.volumes, team: identity.team, defaultsOf: body.volumes == nil ? env.id : nil)
        if request.poolable(settings) {
            await demand.note(env)
            let timeout = Double(request.limits.timeout)
            let (metadata, envVars) = (request.metadata, request.envVars)
            let team = identity.team
            let (pause, resume, idle) = (request.pauseOnTimeout, request.autoResume, request.idlePauseSeconds.map(Double.init))
            let filesOnly = request.pauseFilesOnly
            if let claimed = try await repository.claim(env: env.id, runtime: runtime.kind.rawValue, { record in
                record.team = team
                record.createdAt = self.clock.now
                record.expiresAt = self.clock.now + timeout
                record.lifetimeSeconds = timeout
                record.onTimeout = pause ? "pause" : nil
                record.resumeOnRequest = resume
                record.idlePauseSeconds = idle
                record.pauseFilesOnly = filesOnly
                record.metadata = metadata
                record.envVars = envVars
            }) {
                await demand.claimed()
                await writeEnvFile(claimed, request.envVars)
                metrics.create(result: "pool", seconds: monotonicSeconds() - started)
                logger.withSandbox(claimed.id).info("running (from the pool)")
                await publishStateCounts()
                return api(claimed)
            }
        }
        let record = try await start(env: env, team: identity.team, request: request, pooled: false)
        await writeEnvFile(record, request.envVars)
        metrics.create(result: "ok", seconds: monotonicSeconds() - started)
        await publishStateCounts()
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
        let path = host.envFile
        do {
            let json = try JSONSerialization.data(withJSONObject: envVars, options: [.sortedKeys])
            try await agents.client(record).write(Array(json), to: path, mode: 0o644)
        } catch {
            logger.withSandbox(record.id).warning("could not write \(path)", metadata: ["error": "\(error)"])
        }
    }

    /// Starts a sandbox for the warm pool: the default limits, no team yet.
    func startPooled(_ env: ResolvedEnv) async throws {
        let request = CreateRequest(
            env: env.id, limits: CreateRequest.defaultLimits(settings), policy: .open, metadata: [:], envVars: [:], fromPool: true)
        _ = try await start(env: env, team: "", request: request, pooled: true)
    }

    /// Starts a new sandbox, ending `running` (or `pooled`, for the pool; no
    /// team, for a build step). Creates users wait for are counted, so the
    /// pool's refills yield to them.
    func start(env: ResolvedEnv, team: String, request: CreateRequest, pooled: Bool) async throws -> SandboxRecord {
        if !pooled { createsInFlight.enter() }
        defer { if !pooled { createsInFlight.leave() } }
        let started = monotonicSeconds()
        if let free = FileSystem.freeBytes(settings.dataDirectory), free < settings.minimumFreeBytes {
            throw SproutError(.unavailable,
                "not enough disk space in \(settings.dataDirectory): \(free >> 20) MiB free, \(settings.minimumFreeBytes >> 20) MiB needed")
        }
        // No copy of what the object store has is evicted while this sandbox comes up from it.
        let hold = await collector.holdingCachedCopies()
        defer { hold.end() }
        // Deep chains are squashed in blocks (cached) before anything is allocated.
        let lowers = try await launcher.lowerDirectories(env)
        // A warm env starts from its memory image, on a runtime that can restore one,
        // unless it mounts volumes: the image was saved without them, and a restore
        // needs the mounts it was saved with. Such a sandbox boots and runs `start`.
        let warm = env.memoryImage != nil && runtime.capabilities.memorySnapshot && request.volumes.isEmpty
        guard env.memoryImage == nil || request.volumes.isEmpty || env.start != nil else {
            throw SproutError(.unsupported, "volumes cannot be mounted in a sandbox of \(env.id): it was built before envs kept their start command; push it again")
        }
        let warmImage: String? = if warm, let image = env.memoryImage { try await launcher.materializedImage(image) } else { nil }
        let id = Identifiers.make(prefix: "sbx", length: 16)
        // The pool and build steps are outside the memory budget (--pool-budget bounds the pool).
        let room: MemoryReservation? = pooled || team.isEmpty ? nil : try await admit([id], memoryMB: request.limits.memoryMB)
        defer { room?.release() }
        let token = warmImage != nil ? (env.memoryToken ?? "") : Identifiers.random(length: 40)
        let slot = try host.addresses.allocate(owner: settings.slotOwner(id))
        var made = SandboxRecord(
            id: id, team: team, env: env.id, runtime: runtime.kind.rawValue, createdAt: self.clock.now,
            expiresAt: pooled ? nil : self.clock.now + Double(request.limits.timeout), cpu: request.limits.cpu, memoryMB: request.limits.memoryMB,
            internet: request.policy.internet, metadata: request.metadata, envVars: request.envVars, slot: slot.index, agentToken: token,
            egress: request.policy.egress, diskMB: request.limits.diskMB)
        made.lifetimeSeconds = Double(request.limits.timeout)
        made.onTimeout = request.pauseOnTimeout ? "pause" : nil
        made.resumeOnRequest = request.autoResume
        made.idlePauseSeconds = request.idlePauseSeconds.map(Double.init)
        made.pauseFilesOnly = request.pauseFilesOnly
        made.volumes = request.volumes.isEmpty ? nil : request.volumes
        let record = made
        do {
            try await repository.insert(record)
        } catch {
            host.addresses.release(slot, owner: settings.slotOwner(id))
            throw error
        }
        let log = logger.withSandbox(id)
        log.info("creating", metadata: ["env": "\(env.id)", "runtime": "\(runtime.kind.rawValue)", "pooled": "\(pooled)"])
        // A kill that arrives meanwhile waits for this to finish (see OperationGate).
        return try await gate.run(.create, on: id) {
            do {
                let prepared = monotonicSeconds()
                let phases = try await launcher.bringUp(record, layers: lowers, image: warmImage)
                if warmImage == nil, let start = env.start { try await runStart(start, in: record, of: env) }
                let broughtUp = monotonicSeconds()
                let timeout = Double(request.limits.timeout)
                let (running, _) = try await repository.transition(id, .started(pooled: pooled)) { record in
                    if !pooled { record.expiresAt = self.clock.now + timeout }
                }
                await launcher.watch(running)
                log.info("\(running.state.rawValue)", metadata: [
                    "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))", "from": "\(warmImage != nil ? "memory" : "boot")",
                    "phases": "prepare \(String(format: "%.1f", (prepared - started) * 1000)) ms, \(phases), record \(String(format: "%.1f", (monotonicSeconds() - broughtUp) * 1000)) ms",
                ])
                return running
            } catch {
                log.error("create failed; rolling back", metadata: ["error": "\(error)"])
                metrics.runtimeError(operation: "create")
                metrics.create(result: "error", seconds: monotonicSeconds() - started)
                await launcher.teardown(record)
                // Detached: the rollback must complete even if this task was cancelled.
                let repository = self.repository
                await Task.detached { try? await repository.delete(id) }.value
                throw error
            }
        }
    }
}

extension SandboxLifecycle {
    /// Paths a volume may not be mounted at: the root, Sprout's own, and
    /// the kernel's file systems.
    static let reservedMountPaths = ["/", "/.sprout", "/proc", "/sys", "/dev", "/run/sprout"]

    /// Runs an env's `start` in a sandbox that booted, and waits until it is ready.
    func runStart(_ start: EnvStart, in record: SandboxRecord, of env: ResolvedEnv) async throws {
        do {
            try await start.run(agent: agents.client(record), endpoint: network.agentEndpoint(NetworkSlot(index: record.slot ?? 0)),
                                environment: environment(record, defaults: env.process ?? API.ProcessDefaults()),
                                defaults: env.process ?? API.ProcessDefaults())
        } catch let failure as EnvStart.Failure {
            throw SproutError(.unavailable, "\(env.id)'s start (\(start.command.prefix(200))): \(failure.sentence)")
        }
    }

    /// A fleet node's refusal of a create whose env mounts by default volumes
    /// that are not here (`names`): answered with `Sprout-Place-Elsewhere`, so
    /// the API server places the create where they live.
    struct VolumesElsewhere: Error {
        let error: SproutError
        let names: [String]
    }

    /// A create's volumes, each the team's, at distinct clean absolute paths
    /// (`defaultsOf`: the env whose defaults they are, for the errors).
    func resolveVolumes(_ asked: [API.VolumeMount], team: String, defaultsOf env: String? = nil) async throws -> [VolumeMount] {
        guard asked.count <= 16 else { throw SproutError(.invalidArgument, "at most 16 volumes") }
        var mounts: [VolumeMount] = []
        for mount in asked {
            let path = try VolumeFiles.clean(mount.path)
            guard mount.path.hasPrefix("/"), !path.split(separator: "/").contains(".."),
                  !Self.reservedMountPaths.contains(where: { path == $0 || ($0 != "/" && path.hasPrefix($0 + "/")) })
            else {
                throw SproutError(.invalidArgument, "a volume cannot be mounted at '\(mount.path.prefix(200))'")
            }
            guard !mounts.contains(where: { $0.path == path }) else { throw SproutError(.invalidArgument, "two volumes at \(path)") }
            guard let volume = try await catalog.volumes.find(mount.volume, team: team) else {
                let error = SproutError(.notFound, "no volume named '\(mount.volume.prefix(64))'" + (env.map { " (a volume \($0) mounts by default)" } ?? ""))
                // On a fleet node, an env's own volumes may live on another node: the API server places the create there.
                guard env != nil, settings.node != nil else { throw error }
                var missing: [String] = []
                for other in asked where try await catalog.volumes.find(other.volume, team: team) == nil { missing.append(other.volume) }
                throw VolumesElsewhere(error: error, names: missing)
            }
            mounts.append(VolumeMount(volume: volume.id, name: volume.name, path: path, readOnly: mount.readOnly ?? false))
        }
        return mounts
    }
}
