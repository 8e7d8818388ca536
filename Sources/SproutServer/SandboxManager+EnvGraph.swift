import Foundation
import GRDB
import SproutClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// The env graph: ancestry, descendants, and deletion with garbage collection.
extension SandboxManager {
    /// `reference` and its ancestors (root last) and descendants.
    public func tree(_ reference: String, for identity: Identity) throws -> API.EnvTree {
        let env = try resolveEnv(reference, for: identity)
        let all = try catalog.db.read { db in try EnvRecord.filter(Column("team") == identity.team).fetchAll(db) }
        let byID = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
        var ancestors: [String] = []
        var cursor = byID[env.id]?.parent
        while let id = cursor {
            ancestors.append(id)
            cursor = byID[id]?.parent
        }
        var descendants: [API.EnvTree.Node] = []
        func children(of id: String, depth: Int) {
            for child in all.filter({ $0.parent == id }).sorted(by: { $0.createdAt < $1.createdAt }) {
                descendants.append(API.EnvTree.Node(id: child.id, parent: id, depth: depth))
                children(of: child.id, depth: depth + 1)
            }
        }
        children(of: env.id, depth: 1)
        return API.EnvTree(id: env.id, ancestors: ancestors, descendants: descendants)
    }

    /// Deletes an env and every layer only it referenced. Refused while a
    /// sandbox runs from it or another env forks it, unless `force` (which
    /// deletes its descendants too and kills those sandboxes).
    public func deleteEnv(_ reference: String, force: Bool, for identity: Identity) async throws -> [String] {
        guard !BaseImages.names.contains(reference) else {
            throw SproutError(.invalidArgument, "the built-in env '\(reference)' cannot be deleted")
        }
        let env = try resolveEnv(reference, for: identity)
        let doomed = [env.id] + (try tree(env.id, for: identity)).descendants.map(\.id)
        let users = try await catalog.db.read { db in
            try SandboxRecord.filter(doomed.contains(Column("env")) && Column("state") != SandboxState.killed.rawValue).fetchAll(db)
        }
        if !force {
            if doomed.count > 1 {
                throw SproutError(.conflict, "env \(env.id) has \(doomed.count - 1) descendant env(s); delete them first or use --force")
            }
            if let user = users.first(where: { $0.state != .pooled }) {
                throw SproutError(.conflict, "sandbox \(user.id) runs from env \(env.id); kill it first or use --force")
            }
        }
        for id in doomed { pooledEnvs[id] = nil }  // stop keeping sandboxes of it ready
        for sandbox in users where sandbox.state != .killing && sandbox.state != .creating {
            _ = try? await kill(sandbox, reason: "env deleted")
        }
        try await catalog.db.write { db in
            for id in doomed { _ = try EnvRecord.deleteOne(db, key: id) }
        }
        await collectGarbage()
        logger.info("env deleted", metadata: ["env": "\(env.id)", "with": "\(doomed.count - 1) descendants"])
        return doomed
    }

    /// Removes every layer (and squashed block) no env references any more.
    func collectGarbage() async {
        guard snapshotsInFlight == 0 else { return }  // a fresh layer may not be referenced yet
        let live: Set<String> = Set((try? await catalog.db.read { db in try EnvRecord.fetchAll(db) })?.flatMap(\.layerList) ?? [])
        let store = self.layers
        let removed = (try? await onThread { try store.collect(keeping: live) }) ?? 0
        if removed > 0 { logger.info("garbage collected", metadata: ["layers": "\(removed)"]) }
        await collectImages()
    }
}
