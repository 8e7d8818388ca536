import Foundation
import SproutAPI
import SproutCore
import SproutHost
import SproutRuntime
import SproutSystem

/// Live fork: one checkpoint of a running sandbox, then the source and
/// `count` copies restored from it, each copy in its own network namespace
/// at its own address (a restore takes its addresses from the namespace it
/// runs in, not from the image), with its own copy of the writable layer.
extension SandboxLifecycle {
    /// The most sandboxes one fork request may start.
    static let maxForks = 32
    /// Restores run this many at a time: each is mostly one busy runsc
    /// process, so more than the host's cores only adds contention.
    static var restoreWidth: Int { max(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    public func fork(_ id: String, count: Int, for identity: Identity) async throws -> [API.Sandbox] {
        guard count >= 1 && count <= Self.maxForks else {
            throw SproutError(.invalidArgument, "count must be between 1 and \(Self.maxForks), got \(count)")
        }
        _ = try await repository.owned(id, team: identity.team)
        try requireMemorySnapshots()
        let made = try await gate.run(.fork, on: id) { try await forkNow(id, count: count) }
        return made.map { api($0) }
    }

    /// The fork itself; the caller holds the gate on the source.
    func forkNow(_ id: String, count: Int) async throws -> [SandboxRecord] {
        guard let source = try await repository.find(id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
        guard source.state == .running else {
            throw SproutError(.conflict, "sandbox \(id) is \(source.state.rawValue); only a running sandbox can be forked")
        }
        let started = monotonicSeconds()
        try await checkpoint.preflight(source)
        // Room for the children (the source keeps its own); counted as a placeholder until they are records.
        let room = try await admit(["forks-of-\(id)-\(Identifiers.random(length: 8))"], memoryMB: source.memoryMB * count)
        defer { room.release() }
        let env = try await graph.resolve(source.env, team: source.team, includeDeleted: true)
        let lowers = try await launcher.lowerDirectories(env)
        let (forking, _) = try await repository.transition(id, .fork, expecting: source.version)
        let imageDirectory = "\(settings.sandboxesDirectory)/.fork-\(Identifiers.random(length: 10))"
        defer { try? FileSystem.removeTree(imageDirectory) }
        do {
            try await checkpoint.take(forking, into: imageDirectory)
        } catch {
            await recover(afterFailedCheckpoint: forking, from: error, operation: "fork")
            throw SproutError(.internal, "cannot fork sandbox \(id): \(error.sentence); it was restarted from its files (its processes were lost)")
        }

        // The forks' records and writable layers, made while the source is
        // stopped; each is `creating` under the gate, so a kill waits for it.
        var forks: [SandboxRecord] = []
        var failure: Error?
        for _ in 0..<count {
            let forkID = Identifiers.make(prefix: "sbx", length: 16)
            do {
                let slot = try host.addresses.allocate(owner: settings.slotOwner(forkID))
                let fork = SandboxRecord(
                    id: forkID, team: forking.team, env: forking.env, runtime: forking.runtime, createdAt: self.clock.now, expiresAt: forking.expiresAt,
                    cpu: forking.cpu, memoryMB: forking.memoryMB, internet: forking.internet, metadata: forking.metadata,
                    envVars: forking.envVars, slot: slot.index, agentToken: forking.agentToken, egress: forking.egressList,
                    diskMB: forking.diskMB, volumes: forking.volumes)
                try await gate.enter(.create, forkID)
                do {
                    try await repository.insert(fork)
                } catch {
                    await gate.leave(forkID)
                    host.addresses.release(slot, owner: settings.slotOwner(forkID))
                    throw error
                }
                forks.append(fork)
            } catch {
                failure = error
                break
            }
        }
        if failure == nil {
            do {
                try await copyWritableLayers(from: id, to: forks)
            } catch {
                failure = error
            }
        }

        // The source and the forks restore together, the source first in line
        // (it was running a moment ago), `restoreWidth` at a time.
        let pending = failure == nil ? forks : []
        let results = await restoreAll(source: forking, forks: pending, layers: lowers, imageDirectory: imageDirectory)
        if let error = results[id] ?? nil {
            logger.withSandbox(id).error("restoring the fork source failed", metadata: ["error": "\(error)"])
            await recover(afterFailedCheckpoint: forking, from: error, operation: "fork")
        } else {
            let (running, _) = try await repository.transition(id, .forked, note: "\(pending.count) fork(s)")
            await launcher.watch(running)
            clockCheckLater(running)
        }
        var made: [SandboxRecord] = []
        for fork in pending {
            if let error = results[fork.id] ?? nil {
                failure = failure ?? error
                continue
            }
            if let (running, _) = try? await repository.transition(fork.id, .started(pooled: false), note: "forked from \(id)", edit: { $0.createdAt = self.clock.now }) {
                await launcher.watch(running)
                made.append(running)
            }
        }
        // Roll back every fork that did not start.
        for fork in forks where !made.contains(where: { $0.id == fork.id }) {
            await launcher.teardown(fork)
            let repository = self.repository
            await Task.detached { try? await repository.delete(fork.id) }.value
        }
        for fork in forks { await gate.leave(fork.id) }
        await publishStateCounts()
        if let failure, made.count < count {
            for fork in made { _ = try? await kill(fork.id, reason: "fork failed") }
            throw SproutError(.internal, "cannot fork sandbox \(id): \(failure.sentence)")
        }
        metrics.memoryOperation("fork", seconds: monotonicSeconds() - started)
        logger.withSandbox(id).info("forked", metadata: ["count": "\(count)", "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))"])
        return made
    }

    /// Each fork's copy of the source's writable layer (`cp -a`: timestamps,
    /// whiteouts and opaque dirs kept — the image expects the files as they
    /// were) and its own identity files.
    func copyWritableLayers(from source: String, to forks: [SandboxRecord]) async throws {
        let sourceUpper = settings.directory(source) + "/upper"
        for fork in forks {
            let dir = settings.directory(fork.id)
            let slot = NetworkSlot(index: fork.slot ?? 0)
            try FileSystem.makeDirectories(dir, mode: 0o700)
            try await HostCommand.run(["cp", "-a", "--reflink=auto", sourceUpper, dir + "/upper"], timeout: .seconds(1800))
            try SandboxLauncher.writeIdentityFiles(directory: dir, id: fork.id, slot: slot, address: network.address(slot),
                                                   certificates: settings.hostCABundle)
        }
    }

    /// Restores the source (its own namespace) and the forks (new ones), at most `restoreWidth` at once.
    func restoreAll(source: SandboxRecord, forks: [SandboxRecord], layers: [String], imageDirectory: String) async -> [String: Error?] {
        let launcher = self.launcher
        return await withTaskGroup(of: (String, Error?).self) { group in
            var results: [String: Error?] = [:]
            func restore(_ record: SandboxRecord, newNetwork: Bool) async -> (String, Error?) {
                do {
                    try await launcher.restore(record, layers: layers, imageDirectory: imageDirectory, newNetwork: newNetwork)
                    return (record.id, nil)
                } catch {
                    return (record.id, error)
                }
            }
            group.addTask { await restore(source, newNetwork: false) }
            var next = 0
            var running = 1
            while running > 0 {
                while next < forks.count && running < Self.restoreWidth {
                    let fork = forks[next]
                    next += 1
                    running += 1
                    group.addTask { await restore(fork, newNetwork: true) }
                }
                if let (id, error) = await group.next() {
                    results[id] = error
                    running -= 1
                }
            }
            return results
        }
    }
}
