import Crypto
import Foundation
import GRDB
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// Envs and snapshots: a sandbox's writable layer, frozen, becomes a new env
/// whose parent is the sandbox's env. Envs are never edited in place.
extension SandboxManager {
    /// What a sandbox starts from.
    struct ResolvedEnv: Sendable {
        var id: String
        var base: String
        /// Layer digests above the base, bottom first.
        var layers: [String]
        /// A warm env's memory image and the agent token inside it.
        var memoryImage: String? = nil
        var memoryToken: String? = nil
    }

    /// Files every sandbox gets of its own; never part of a layer.
    static let identityFiles = ["etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/ld.so.preload"]

    /// A built-in base, an env id, or the newest env with that name, as
    /// visible to `identity` (another team's env is "not found").
    func resolveEnv(_ reference: String, for identity: Identity) throws -> ResolvedEnv {
        if BaseImages.names.contains(reference) { return ResolvedEnv(id: reference, base: reference, layers: []) }
        let record = try catalog.db.read { db -> EnvRecord? in
            if let byID = try EnvRecord.fetchOne(db, key: reference), byID.team == identity.team { return byID }
            return try EnvRecord.filter(Column("name") == reference && Column("team") == identity.team && Column("published") == true)
                .order(Column("publishedAt").desc).fetchOne(db)
        }
        guard let record else {
            let drafts = try catalog.db.read { db in
                try EnvRecord.filter(Column("name") == reference && Column("team") == identity.team).fetchCount(db)
            }
            if drafts > 0 {
                throw SproutError(.notFound, "no published env named '\(reference)' (it has \(drafts) unpublished; publish one or use its id)")
            }
            throw SproutError(.notFound, "no env named '\(reference)'")
        }
        return ResolvedEnv(id: record.id, base: record.base, layers: record.layerList, memoryImage: record.memoryImage,
                           memoryToken: record.memoryToken)
    }

    /// `resolveEnv` for a sandbox's own env id, as its team sees it.
    func resolveEnv(_ reference: String, team: String) throws -> ResolvedEnv {
        try resolveEnv(reference, for: Identity(keyID: "", team: team, admin: false))
    }

    public func envs(for identity: Identity) throws -> [API.Env] {
        let builtins = BaseImages.names.map {
            API.Env(id: $0, name: $0, parent: nil, base: $0, layers: [], builtin: true, createdAt: nil, ownBytes: 0, published: true,
                    totalBytes: baseBytes[$0])
        }
        let own = try catalog.db.read { db in
            try EnvRecord.filter(Column("team") == identity.team).order(Column("createdAt")).fetchAll(db)
        }
        return builtins + own.map(\.api)
    }

    public func env(_ reference: String, for identity: Identity) throws -> API.Env {
        let resolved = try resolveEnv(reference, for: identity)
        if BaseImages.names.contains(resolved.id) { return try envs(for: identity).first { $0.id == resolved.id }! }
        guard let record = try catalog.db.read({ try EnvRecord.fetchOne($0, key: resolved.id) }) else {
            throw SproutError(.notFound, "no env named '\(reference)'")
        }
        return record.api
    }

    /// Freezes a running sandbox's writable layer into a new env; the sandbox
    /// keeps running. Snapshotting the same content twice gives the same env.
    public func snapshot(_ id: String, name: String?, for identity: Identity) async throws -> API.Env {
        let record = try record(id, for: identity)
        guard record.state == .running else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue), not running")
        }
        if let name { try Self.validateEnvName(name) }
        let parent = try resolveEnv(record.env, for: identity)
        snapshotsInFlight += 1
        busy.insert(id)
        defer {
            snapshotsInFlight -= 1
            busy.remove(id)
        }
        // gVisor may hold written data in its own cache: flush it to the upper dir.
        let agent = try await agent(id, for: identity)
        _ = try await agent.run(ProcessSpec(cmd: ["sync"]))
        let layers = self.layers
        let upper = directory(id) + "/upper"
        let frozen = try await onThread { try layers.freeze(upper: upper, excluding: Self.identityFiles) }
        let parentName = try await catalog.db.read { try EnvRecord.fetchOne($0, key: parent.id)?.name } ?? parent.id
        let envName = name ?? parentName
        var hasher = SHA256()
        hasher.update(data: Data("\(parent.id)\n\(frozen.digest)".utf8))
        let envID = "\(envName)-\(hexString(hasher.finalize()).prefix(8))"
        let env = EnvRecord(
            id: envID, name: envName, parent: parent.id, team: identity.team, base: parent.base,
            layers: SandboxRecord.encodeList(parent.layers + [frozen.digest]), createdAt: now(), ownBytes: frozen.addedBytes,
            published: true, publishedAt: now(), totalBytes: try await chainBytes(parent) + frozen.addedBytes)
        let stored = try await catalog.db.write { db -> EnvRecord in
            if let existing = try EnvRecord.fetchOne(db, key: envID) { return existing }
            try env.insert(db)
            return env
        }
        await refreshAfterSnapshot(id)
        logger.withSandbox(id).info("snapshot", metadata: ["env": "\(stored.id)", "layer": "\(frozen.digest.prefix(12))", "bytes": "\(frozen.addedBytes)"])
        return stored.api
    }

    /// A sandbox whose timeout passed while it was being snapshotted gets a
    /// minute more: the user was working with it (the seeds' "refresh edit
    /// sessions that are being snapshotted").
    func refreshAfterSnapshot(_ id: String) async {
        _ = try? await catalog.db.write { db in
            guard var record = try SandboxRecord.fetchOne(db, key: id), record.state == .running,
                let expires = record.expiresAt, expires < now() + 60 else { return }
            record.expiresAt = now() + 60
            try record.update(db)
        }
    }

    /// Moves (or, with `false`, takes away) the name's pointer to this env.
    public func setPublished(_ reference: String, _ published: Bool, for identity: Identity) async throws -> API.Env {
        guard !BaseImages.names.contains(reference) else {
            throw SproutError(.invalidArgument, "the built-in env '\(reference)' is always published")
        }
        let record = try await catalog.db.write { db -> EnvRecord in
            guard var record = try EnvRecord.fetchOne(db, key: reference), record.team == identity.team else {
                throw SproutError(.notFound, "no env with id '\(reference)'")
            }
            record.published = published
            record.publishedAt = published ? now() : nil
            try record.update(db)
            return record
        }
        return record.api
    }

    /// The bytes of an env's whole chain (for the totals `env list` shows).
    func chainBytes(_ env: ResolvedEnv) async throws -> Int64 {
        if let record = try await catalog.db.read({ try EnvRecord.fetchOne($0, key: env.id) }) { return record.totalBytes }
        if let known = baseBytes[env.base] { return known }
        let path = bases.path(env.base)
        let bytes = await (try? onThread { LayerStore.diskUsage(path) }) ?? 0
        baseBytes[env.base] = bytes
        return bytes
    }

    static func validateEnvName(_ name: String) throws {
        guard !name.isEmpty, name.count <= 64, !BaseImages.names.contains(name),
            name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") })
        else {
            throw SproutError(.invalidArgument, "env name must be 1-64 characters of a-z, 0-9, '-' and '_', and not a built-in name")
        }
    }

}

extension EnvRecord {
    var api: API.Env {
        API.Env(id: id, name: name, parent: parent, base: base, layers: layerList, builtin: false, createdAt: createdAt,
                ownBytes: ownBytes, published: published, totalBytes: totalBytes, warm: memoryImage != nil)
    }
}

extension SandboxRecord {
    static func decodeList(_ text: String) -> [String] {
        (try? JSONDecoder().decode([String].self, from: Data(text.utf8))) ?? []
    }

    static func encodeList(_ list: [String]) -> String {
        String(decoding: (try? JSONEncoder().encode(list)) ?? Data("[]".utf8), as: UTF8.self)
    }
}
