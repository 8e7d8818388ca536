import Crypto
import Foundation
import SproutAPI
import SproutAgentProtocol
import SproutCore
import SproutStore

/// A running sandbox's writable layer, frozen, becomes a new env whose
/// parent is the sandbox's env; the sandbox keeps running.
public struct Snapshots: Sendable {
    let core: ServerCore

    public init(core: ServerCore) { self.core = core }

    /// Snapshotting the same content twice gives the same env.
    public func snapshot(_ id: String, name: String?, for identity: Identity) async throws -> API.Env {
        _ = try await core.catalog.sandboxes.owned(id, team: identity.team)
        if let name { try EnvGraph.validateName(name) }
        return try await core.gate.run(.snapshot, on: id) {
            guard let record = try await core.catalog.sandboxes.find(id), record.state == .running else {
                let state = try await core.catalog.sandboxes.find(id)?.state.rawValue ?? "gone"
                throw SproutError(.conflict, "sandbox \(id) is \(state), not running")
            }
            let graph = EnvGraph(core: core)
            let parent = try await graph.resolve(record.env, team: identity.team, includeDeleted: true)
            // The layer is leased from before it is written until an env names it.
            let stored = try await GarbageCollector(core: core).leasing(.layers) {
                // gVisor may hold written data in its own cache: flush it to the upper dir.
                _ = try await core.agent(record).run(ProcessSpec(cmd: ["sync"]))
                let frozen = try await core.layers.freeze(upper: core.settings.directory(id) + "/upper", excluding: SandboxLauncher.identityFiles)
                let parentName = try await core.catalog.envs.find(parent.id)?.name ?? parent.id
                let envName = name ?? parentName
                var hasher = SHA256()
                hasher.update(data: Data("\(parent.id)\n\(frozen.digest)".utf8))
                let env = EnvRecord(
                    id: "\(envName)-\(hexString(hasher.finalize()).prefix(8))", name: envName, parent: parent.id, team: identity.team,
                    base: parent.base, layers: JSONColumn.encodeList(parent.layers + [frozen.digest]), createdAt: now(),
                    ownBytes: frozen.addedBytes, published: true, publishedAt: now(),
                    totalBytes: try await graph.chainBytes(parent) + frozen.addedBytes)
                let stored = try await core.catalog.envs.insertIfAbsent(env)
                core.logger.withSandbox(id).info("snapshot", metadata: [
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
        _ = try? await core.catalog.sandboxes.modify(id) { record in
            guard record.state == .running, let expires = record.expiresAt, expires < now() + 60 else { return }
            record.expiresAt = now() + 60
        }
    }
}
