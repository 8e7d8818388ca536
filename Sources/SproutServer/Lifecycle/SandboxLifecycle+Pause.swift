import Foundation
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem
import SproutBlocking

/// Pause and resume (gVisor checkpoint/restore): a paused sandbox holds no
/// process, CPU or memory; its memory is an image in the chunk store, its
/// writable layer, namespace and address wait for resume.
extension SandboxLifecycle {
    /// Pause images kept per sandbox (each later one stores only the chunks it does not share).
    static let imageHistory = 10

    // MARK: Pause

    public func pause(_ id: String, autoResume: Bool, filesOnly: Bool = false, for identity: Identity) async throws -> API.Sandbox {
        _ = try await repository.owned(id, team: identity.team)
        if !filesOnly { try requireMemorySnapshots() }
        return api(try await gate.run(.pause, on: id) { try await pauseNow(id, autoResume: autoResume, filesOnly: filesOnly) })
    }

    /// The pause itself; the caller holds the gate. The machine says what
    /// the pause does: checkpoint the memory, or stop the container and
    /// keep the files.
    func pauseNow(_ id: String, autoResume: Bool, filesOnly: Bool = false) async throws -> SandboxRecord {
        guard let record = try await repository.find(id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
        guard record.state == .running else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue); only a running sandbox can be paused")
        }
        let paused = try await repository.pausedCount(team: record.team)
        guard paused < settings.maxPausedPerTeam else {
            throw SproutError(.conflict, "team \(record.team) already has \(paused) paused sandboxes, its limit (--max-paused-per-team); kill some first")
        }
        let started = monotonicSeconds()
        // A store that cannot take the pause refuses it before anything changes.
        try await stores.remote?.check()
        if !filesOnly {
            // Refused before anything changes (an open connection, too little disk).
            try await checkpoint.preflight(record)
        } else {
            // What the container wrote reaches its writable layer before it stops.
            _ = try? await agents.client(record).run(.sync)
        }
        let (pausing, action) = try await repository.transition(id, .pause(memory: !filesOnly), expecting: record.version)
        let result: SandboxRecord
        switch action {
        case .checkpoint: result = try await checkpointForPause(pausing, autoResume: autoResume, started: started)
        case .stopContainer: result = try await stopForPause(pausing, autoResume: autoResume, started: started)
        default: throw SproutError(.internal, "a pause cannot \(action)")
        }
        await publishStateCounts()
        return result
    }

    /// Saves the memory into the image store; the sandbox is paused on it.
    private func checkpointForPause(_ pausing: SandboxRecord, autoResume: Bool, started: Double) async throws -> SandboxRecord {
        let id = pausing.id
        // The image is leased from before its chunks are written until the record names it.
        let stored: SandboxRecord = try await collector.leasing(.images) {
            let image: ImageStore.Stored
            do {
                image = try await checkpoint.takeIntoStore(pausing)
            } catch {
                await recover(afterFailedCheckpoint: pausing, from: error, operation: "pause")
                throw SproutError(.internal, "cannot pause sandbox \(id): \(error.sentence); it was restarted from its files (its processes were lost)")
            }
            let history = Array((pausing.imageList + [image.id]).suffix(Self.imageHistory))
            let now = clock.now
            let asleep: @Sendable (inout SandboxRecord) -> Void = { record in
                record.images = history
                record.fallAsleep(at: now, autoResume: autoResume)
            }
            let stored = await storeRemotely(pausing, image: image.id, asleep: asleep)
            let (paused, _) = try await repository.transition(id, .checkpointed, note: "image \(image.id)") { record in
                asleep(&record)
                // A pause not stored leaves no key: the local layer is the only one.
                record.storedUpper = (try? stored.get()) ?? nil
            }
            if case .failure(let error) = stored { throw try await resumeAfterUnstoredPause(paused, error) }
            logger.withSandbox(id).info("paused", metadata: [
                "image": "\(image.id)", "bytes": "\(image.size)", "new": "\(image.newBytes)",
                "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))",
            ])
            return paused
        }
        await collector.collect(.images)
        // Its layers are no longer mounted: with --cache-gb, copies of them may go.
        if collector.cacheBounded { await collector.collect(.layers) }
        metrics.memoryOperation("pause", seconds: monotonicSeconds() - started)
        return stored
    }

    /// A pause that keeps only the files: the container stopped (its
    /// processes end) and its writable layer, address and network kept;
    /// resume boots it again from them.
    private func stopForPause(_ pausing: SandboxRecord, autoResume: Bool, started: Double) async throws -> SandboxRecord {
        let id = pausing.id
        await launcher.removeContainer(pausing)
        let now = clock.now
        let asleep: @Sendable (inout SandboxRecord) -> Void = { $0.fallAsleep(at: now, autoResume: autoResume) }
        let stored = await storeRemotely(pausing, image: nil, asleep: asleep)
        let (paused, _) = try await repository.transition(id, .checkpointed, note: "files only") { record in
            asleep(&record)
            // A pause not stored leaves no key: the local layer is the only one.
            record.storedUpper = (try? stored.get()) ?? nil
        }
        if case .failure(let error) = stored { throw try await resumeAfterUnstoredPause(paused, error) }
        logger.withSandbox(id).info("paused (files only)", metadata: ["seconds": "\(String(format: "%.3f", monotonicSeconds() - started))"])
        metrics.memoryOperation("pause-files", seconds: monotonicSeconds() - started)
        return paused
    }

    /// With `--store`: puts the pause's memory image (if any), writable
    /// layer and handoff (the record as `asleep` leaves it, the same change
    /// the pause's transition makes) in the object store; the key of the
    /// layer there, or the failure. (Nil without a store.)
    private func storeRemotely(
        _ pausing: SandboxRecord, image: String?, asleep: (inout SandboxRecord) -> Void
    ) async -> Result<String?, Error> {
        guard let remote = stores.remote else { return .success(nil) }
        let started = monotonicSeconds()
        do {
            var requests = 0
            if let image { requests = try await remote.pushImage(image) }
            let upper = settings.directory(pausing.id) + "/upper"
            let key = try await remote.pushDirectory(upper)
            // The record as it will be once paused, and its env: what another node needs to take the sandbox in.
            var paused = pausing
            asleep(&paused)
            paused.storedUpper = key
            let env = try await catalog.envs.find(pausing.env)
            try await remote.putHandoff(PauseHandoff(record: paused, env: env, memory: image != nil, writer: settings.instance), for: pausing.id)
            // The local layer is the stored one until the sandbox runs again.
            try FileSystem.writeAtomically(settings.storedUpperMarker(pausing.id), key)
            logger.withSandbox(pausing.id).info("pause stored", metadata: [
                "upper": "\(key)", "imageRequests": "\(requests)", "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))",
            ])
            return .success(key)
        } catch {
            return .failure(error)
        }
    }

    /// A pause the object store did not take is not a pause: the sandbox
    /// runs on from what it was just paused into (its processes intact).
    private func resumeAfterUnstoredPause(_ paused: SandboxRecord, _ error: Error) async throws -> SproutError {
        logger.withSandbox(paused.id).error("pause not stored; resuming", metadata: ["error": "\(error)"])
        _ = try await resumeNow(paused, stored: false)
        return SproutError(.unavailable, "cannot pause sandbox \(paused.id): the object store did not take it (\(error.sentence)); it keeps running")
    }

    // MARK: Resume

    public func resume(_ id: String, for identity: Identity) async throws -> API.Sandbox {
        let owned = try await repository.owned(id, team: identity.team)
        if owned.machineState.keepsMemory != false { try requireMemorySnapshots() }
        return api(try await gate.run(.resume, on: id) {
            guard let record = try await repository.find(id), record.state == .paused else {
                let state = try await repository.find(id)?.state.rawValue ?? "gone"
                throw SproutError(.conflict, "sandbox \(id) is \(state); only a paused sandbox can be resumed")
            }
            return try await resumeNow(record)
        })
    }

    /// Resumes a sandbox that asked to resume on demand, for a request that
    /// needs it running. Concurrent requests wait for the one resume.
    func wake(_ id: String) async throws -> SandboxRecord {
        try await gate.run(.wake, on: id) {
            guard let record = try await repository.find(id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
            guard record.state == .paused && record.autoResume else { return record }
            let woken = try await resumeNow(record)
            metrics.wake()
            await repository.note(id, kind: "wake", "resumed by a request")
            return woken
        }
    }

    /// The resume itself; the caller holds the gate. The machine says how:
    /// restore the memory image, or (a pause that kept only files) boot again.
    /// `stored`: the pause is in the object store (if there is one), and is
    /// taken out of it; false for a pause the store did not take.
    func resumeNow(_ current: SandboxRecord, stored: Bool = true) async throws -> SandboxRecord {
        let id = current.id
        let room = try await admit([id], memoryMB: current.memoryMB)
        defer { room.release() }
        let started = monotonicSeconds()
        let (resuming, action) = try await repository.transition(id, .resume, expecting: current.version)
        // No copy of what the object store has is evicted while this sandbox comes back from it.
        let hold = await collector.holdingCachedCopies()
        defer { hold.end() }
        var phases = ""
        var handoff: PauseHandoff?
        do {
            let env = try await graph.resolve(resuming.env, team: resuming.team, includeDeleted: true)
            let lowers = try await launcher.lowerDirectories(env)
            if let remote = stores.remote, stored {
                try await fetchPause(resuming, memory: action == .restoreFromImage, from: remote)
                handoff = try await remote.takeHandoff(for: id)
            }
            switch action {
            case .restoreFromImage: phases = try await restoreFromImage(resuming, layers: lowers, started: started)
            case .bootFromFiles:
                try await launcher.bootAgain(resuming, layers: lowers)
                // Its processes ended with the pause; the env's start runs again, as at a boot.
                if let start = env.start { try await runStart(start, in: resuming, of: env) }
            default: throw SproutError(.internal, "a resume cannot \(action)")
            }
        } catch {
            // Still paused: its pause goes back in the store, for a node that takes it in (its
            // image and layer stored again first: while it was out, the store's collector saw nothing hold them).
            var storedUpper: String?
            if let handoff, let remote = stores.remote { storedUpper = try? await restoreHandoff(handoff, for: id, in: remote) }
            logger.withSandbox(id).error("resume failed; still paused", metadata: ["error": "\(error)"])
            metrics.runtimeError(operation: "restore")
            let upper = storedUpper
            let (paused, next) = (try? await repository.transition(id, .restoreFailed) { record in
                record.error = "resume failed: \(error.sentence)"
                if let upper { record.storedUpper = upper }
            })
                ?? (resuming, .removeContainer)
            await perform(next, paused)
            await publishStateCounts()
            throw SproutError(.unavailable, "cannot resume sandbox \(id): \(error.sentence); it stays paused and its files are intact")
        }
        let fromMemory = action == .restoreFromImage
        let up = monotonicSeconds()
        let running = try await markRunning(id, note: fromMemory ? nil : "booted again from its files")
        let marked = monotonicSeconds()
        metrics.memoryOperation(fromMemory ? "resume" : "resume-files", seconds: marked - started)
        await publishStateCounts()
        if fromMemory { clockCheckLater(running) }
        logger.withSandbox(id).info("resumed", metadata: [
            "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))", "from": "\(fromMemory ? "memory" : "files")",
            "phases": "\(phases), record \(String(format: "%.1f", (marked - up) * 1000)) ms, counts \(String(format: "%.1f", (monotonicSeconds() - marked) * 1000)) ms",
        ])
        return running
    }

    /// Puts a pause a resume took out of the store back, with what it holds
    /// (its memory image and writable layer, from this host's copies).
    /// Returns the writable layer's key in the store.
    private func restoreHandoff(_ taken: PauseHandoff, for id: String, in remote: RemoteStore) async throws -> String {
        var handoff = taken
        if let image = handoff.image { try await remote.pushImage(image) }
        let upper = try await remote.pushDirectory(settings.directory(id) + "/upper")
        try FileSystem.writeAtomically(settings.storedUpperMarker(id), upper)
        handoff.record.storedUpper = upper
        handoff.writer = settings.instance
        try await remote.putHandoff(handoff, for: id)
        return upper
    }

    /// Brings back from the object store what this host lacks of a pause:
    /// the memory image, and the writable layer unless the local one is the
    /// one stored.
    private func fetchPause(_ resuming: SandboxRecord, memory: Bool, from remote: RemoteStore) async throws {
        if memory, let image = resuming.imageList.last { try await remote.fetchImage(image) }
        guard let key = resuming.storedUpper else { return }
        let directory = settings.directory(resuming.id)
        let local = (try? Descriptor.readFile(settings.storedUpperMarker(resuming.id), limit: 4096)).map { String(decoding: $0, as: UTF8.self) }
        if local != key || !FileSystem.isDirectory(directory + "/upper") {
            try await remote.fetchDirectory(key, into: directory + "/upper")
            try FileSystem.writeAtomically(settings.storedUpperMarker(resuming.id), key)
            logger.withSandbox(resuming.id).info("writable layer fetched from the store", metadata: ["upper": "\(key)"])
        }
    }

    /// Restores the sandbox's last memory image; returns the phases' timings.
    private func restoreFromImage(_ resuming: SandboxRecord, layers: [String], started: Double) async throws -> String {
        guard let image = resuming.imageList.last else {
            throw SproutError(.internal, "sandbox \(resuming.id) is paused but has no memory image")
        }
        let t0 = monotonicSeconds()
        // The files runsc wrote at the pause, if this host kept them; else the image written again from its chunks.
        let kept = await checkpoint.keptImages.take(sandbox: resuming.id, image: image, sandboxDirectory: settings.directory(resuming.id))
        let imageDirectory = kept ?? settings.directory(resuming.id) + "/image"
        defer { try? FileSystem.removeTree(imageDirectory) }
        if kept == nil {
            let images = stores.images
            try await onThread { try images.materialize(image, to: imageDirectory) }
        }
        let phases = String(format: "prepare %.1f ms, image %.1f ms", (t0 - started) * 1000, (monotonicSeconds() - t0) * 1000) + (kept == nil ? ", " : " (kept), ")
        return phases + (try await launcher.restore(resuming, layers: layers, imageDirectory: imageDirectory, newNetwork: false))
    }

    /// A resumed sandbox is running again: its timeout's clock restarts with what was left.
    private func markRunning(_ id: String, note: String?) async throws -> SandboxRecord {
        // Its writable layer changes from here on: no longer the stored one.
        unlink(settings.storedUpperMarker(id))
        let fallback = Double(settings.defaultTimeoutSeconds)
        let (running, _) = try await repository.transition(id, .restored, note: note) { record in
            record.expiresAt = self.clock.now + (record.remainingSeconds ?? fallback)
            record.remainingSeconds = nil
            record.autoResume = false
            record.pausedAt = nil
            record.error = nil
        }
        await launcher.watch(running)
        return running
    }

    // MARK: Clock

    /// Checks the clock off the request's path.
    func clockCheckLater(_ record: SandboxRecord) {
        Task { await correctClock(record) }
    }

    /// After a restore the sandbox's wall clock must match the host's. gVisor
    /// reads the host's clock, so it does; if it ever does not (another
    /// runtime, an old image), set it through the agent. The agent says its
    /// time in its health answer; an agent restored from an image older
    /// than that field is asked with `date` (a process: in gVisor 20240729
    /// every short-lived process that looks at /proc/self leaves its procfs
    /// inodes in the sandbox for good, so not at every resume).
    func correctClock(_ record: SandboxRecord) async {
        let client = agents.client(record)
        let inside: Double
        if let time = try? await client.health().unixTime {
            inside = time
        } else if let bytes = try? await client.run(ProcessSpec(cmd: ["date", "+%s.%N"])).stdout,
            let time = Double(String(decoding: bytes, as: UTF8.self).trimmed) {
            inside = time
        } else {
            return
        }
        let skew = inside - SystemClock().now
        metrics.clockSkew(skew)
        guard abs(skew) > 1 else { return }
        logger.withSandbox(record.id).warning("clock off after restore; setting it", metadata: ["skew": "\(skew)"])
        try? await client.setClock(unixNanos: Int64(SystemClock().now * 1e9))
    }
}

extension SandboxRecord {
    /// Asleep from now (after a pause, or a checkpoint a restart cut short):
    /// what is left of its timeout is kept for the resume (`markRunning`).
    mutating func fallAsleep(at now: Double, autoResume: Bool, error: String? = nil) {
        remainingSeconds = max(1, (expiresAt ?? now) - now)
        expiresAt = nil
        self.autoResume = autoResume
        pausedAt = now
        self.error = error
    }
}

extension SandboxLifecycle {
    /// gVisor ends a sandbox whose save failed: start it again from its files
    /// (the writable layer is intact) so it stays usable, and record why; if
    /// even that fails, it is gone (`died`). The caller holds the gate.
    func recover(afterFailedCheckpoint record: SandboxRecord, from error: Error, operation: String) async {
        let id = record.id
        let log = logger.withSandbox(id)
        log.error("checkpoint failed; restarting from files", metadata: ["error": "\(error)"])
        metrics.runtimeError(operation: "checkpoint")
        let message = "\(operation) failed (\(error.sentence)); restarted from its files, processes were lost"
        do {
            let env = try await graph.resolve(record.env, team: record.team, includeDeleted: true)
            try await launcher.bootAgain(record, layers: try await launcher.lowerDirectories(env))
            let (running, _) = try await repository.transition(id, .restartedFromFiles, note: message) { $0.error = message }
            await launcher.watch(running)
        } catch {
            log.error("restart after a failed checkpoint failed", metadata: ["error": "\(error)"])
            let reason = "\(operation) failed (\(error.sentence)) and the sandbox could not be started again"
            if let (dying, action) = try? await repository.transition(id, .died, note: reason) {
                await perform(action, dying)
                _ = try? await repository.transition(id, .tornDown) { record in
                    record.endedAt = self.clock.now
                    record.error = reason
                }
            }
        }
        await publishStateCounts()
    }
}

extension SandboxLifecycle {
    /// Pauses one sandbox for memory, if it is still idle and nothing else
    /// is being done to it. True if it is now paused.
    func pauseForMemory(_ record: SandboxRecord, reason: String, why: String) async -> Bool {
        let id = record.id
        do {
            let done: Bool? = try await gate.runIfIdle(.pause, on: id) {
                // Looked at again under the gate: a request may have come meanwhile.
                guard let current = try await repository.find(id), current.state == .running,
                      let idle = activity.idleSeconds(id, since: current.createdAt), idle >= settings.pressureIdleSeconds
                else { return false }
                _ = try await pauseNow(id, autoResume: true, filesOnly: current.pauseFilesOnly)
                let message = "paused for memory after \(Int(idle)) s idle: \(why); the next request wakes it"
                await repository.note(id, kind: "pressure", message)
                logger.withSandbox(id).notice("paused for memory", metadata: ["reason": "\(reason)", "why": "\(why)", "memoryMB": "\(current.memoryMB)"])
                metrics.pressurePause(reason: reason)
                return true
            }
            return done == true
        } catch {
            logger.withSandbox(id).notice("pause for memory not done", metadata: ["error": "\(error)"])
            return false
        }
    }
}
