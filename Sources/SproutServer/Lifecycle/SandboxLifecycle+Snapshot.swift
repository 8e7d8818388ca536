import Crypto
import Foundation
import SproutAPI
import SproutAgentProtocol
import SproutCore
import SproutSystem
import SproutStore

/// A running sandbox's writable layer, frozen, becomes a new env whose
/// parent is the sandbox's env; the sandbox keeps running. The new env keeps
/// its parent's `start` (not its default volumes: a snapshot holds files).
extension SandboxLifecycle {
    /// Snapshotting the same content twice gives the same env.
    public func snapshot(_ id: String, name: String?, for identity: Identity) async throws -> API.Env {
        _ = try await repository.owned(id, team: identity.team)
        if let name { try EnvGraph.validateName(name) }
        return try await gate.run(.snapshot, on: id) {
            guard let record = try await repository.find(id), record.state == .running else {
                let state = try await repository.find(id)?.state.rawValue ?? "gone"
                throw SproutError(.conflict, "sandbox \(id) is \(state), not running")
            }
            let parent = try await graph.resolve(record.env, team: identity.team, includeDeleted: true)
            // The layer is leased from before it is written until an env names it.
            let stored = try await collector.leasing(.layers) {
                // gVisor may hold written data in its own cache: flush it to the upper dir.
                _ = try await agents.client(record).run(.sync)
                let frozen = try await stores.layers.freeze(upper: settings.directory(id) + "/upper", excluding: SandboxLauncher.identityFiles)
                let parentName = try await catalog.envs.find(parent.id)?.name ?? parent.id
                let envName = name ?? parentName
                var hasher = SHA256()
                hasher.update(data: Data("\(parent.id)\n\(frozen.digest)".utf8))
                let env = EnvRecord(
                    id: "\(envName)-\(hexString(hasher.finalize()).prefix(8))", name: envName, parent: parent.id, team: identity.team,
                    base: parent.base, layers: parent.layers + [frozen.digest], createdAt: self.clock.now,
                    ownBytes: frozen.addedBytes, published: true, publishedAt: self.clock.now,
                    totalBytes: try await graph.chainBytes(parent) + frozen.addedBytes,
                    // Its parent's start: a sandbox of the snapshot boots (it has no memory image) and runs it.
                    start: parent.start?.command, ready: parent.start?.ready, startTimeout: parent.start?.timeoutSeconds,
                    process: parent.process)
                let stored = try await recordEnv(env)
                logger.withSandbox(id).info("snapshot", metadata: [
                    "env": "\(stored.id)", "layer": "\(frozen.digest.prefix(12))", "bytes": "\(frozen.addedBytes)",
                ])
                return stored
            }
            await refreshAfterSnapshot(id)
            return stored.api
        }
    }

    /// A sandbox whose timeout passed while it was being snapshotted gets a
    /// minute more: the user was working with it (the seeds' "refresh edit
    /// sessions that are being snapshotted").
    func refreshAfterSnapshot(_ id: String) async {
        _ = try? await repository.modify(id) { record in
            guard record.state == .running, let expires = record.expiresAt, expires < self.clock.now + 60 else { return }
            record.expiresAt = self.clock.now + 60
        }
    }
}

extension SandboxLifecycle {
    /// Deletes an env: at once it is found no more and starts nothing new.
    /// Sandboxes that run (or sleep) from it keep it, and its layers, until
    /// the last of them ends, as E2B's snapshots do; then the layers only it
    /// referenced go. Refused while another env forks it, unless `force`
    /// (which deletes its descendants too and kills every sandbox of them).
    /// With `--store`, forks recorded there by other nodes count too, and the
    /// deletes are written there first (`RemoteStore.tombstone`), so no node
    /// finds the envs again; an API server then has every other node forget
    /// them (`forgetEnvs`).
    public func deleteEnv(_ reference: String, force: Bool, for identity: Identity) async throws -> [String] {
        guard !EnvGraph.builtins.contains(reference) else {
            throw SproutError(.invalidArgument, "the built-in env '\(reference)' cannot be deleted")
        }
        let env = try await graph.resolve(reference, team: identity.team)
        if try await catalog.envs.find(env.id)?.team == BuiltinEnvs.team {
            throw SproutError(.invalidArgument, "the built-in env '\(reference)' cannot be deleted")
        }
        var doomed = [env.id] + (try await graph.tree(env.id, for: identity)).descendants.map(\.id)
        if let remote = stores.remote {
            for id in try await remote.storedDescendants(of: env.id) where !doomed.contains(id) { doomed.append(id) }
        }
        if !force && doomed.count > 1 {
            throw SproutError(.conflict, "env \(env.id) has \(doomed.count - 1) descendant env(s); delete them first or use --force")
        }
        if let remote = stores.remote {
            var known: [EnvRecord] = []
            for id in doomed { if let record = try await catalog.envs.find(id) { known.append(record) } }
            try await remote.tombstone(doomed, known: known, at: clock.now)
        }
        try await forgetEnvs(doomed, force: force)
        logger.info("env deleted", metadata: ["env": "\(env.id)", "with": "\(doomed.count - 1) descendants"])
        return doomed
    }

    /// This node's part of deleting `ids`: they are marked deleted here,
    /// their pooled sandboxes go (with `force`, every sandbox of them), and
    /// what nothing holds any more is collected. Ids this node does not have
    /// are passed over.
    func forgetEnvs(_ ids: [String], force: Bool) async throws {
        let users = try await repository.all(in: SandboxState.allCases.filter(\.isLive)).filter { ids.contains($0.env) }
        try await catalog.envs.markDeleted(ids)
        // Pooled ones go (the pool keeps nothing of a deleted env); with force, every one.
        for sandbox in users where force || sandbox.state == .pooled {
            _ = try? await kill(sandbox.id, reason: "env deleted")
        }
        try await catalog.envs.purgeDeleted()
        await collector.collect(.layers)
        await collector.collect(.images)
    }

}

extension SandboxLifecycle {
    /// Records a new env. With `--store`, its layers and memory image are put
    /// in the object store first: an env exists only once any host can fetch it.
    func recordEnv(_ env: EnvRecord) async throws -> EnvRecord {
        if let remote = stores.remote {
            let started = monotonicSeconds()
            var uploaded = 0
            for digest in env.layers where try await remote.pushLayer(digest, path: stores.layers.path(digest)) { uploaded += 1 }
            if let image = env.memoryImage { try await remote.pushImage(image) }
            // The record itself, then its name: another node of the fleet finds it by either.
            try await remote.putEnv(env)
            if env.published, !env.name.isEmpty { try await remote.putName(env.name, team: env.team, env: env.id) }
            logger.info("env stored", metadata: [
                "env": "\(env.id)", "layersUploaded": "\(uploaded)", "layers": "\(env.layers.count)",
                "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))",
            ])
        }
        return try await catalog.envs.insertIfAbsent(env)
    }
}
