import Foundation
import GRDB
import SproutAPI
import SproutCore

/// An env made by Sprout: a base root plus layers (bottom to top).
/// Built-in bases (`empty`, `debian`) are not stored; they are their own ids.
struct EnvRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "env"
    var id: String
    var name: String
    var parent: String
    var team: String
    var base: String
    /// Layer digests, bottom first.
    var layers: [String]
    var createdAt: Double
    var ownBytes: Int64
    var published: Bool = true
    /// When the name last moved to this env; the name points at the latest.
    var publishedAt: Double?
    /// The base's bytes plus the own bytes of every layer of the chain.
    var totalBytes: Int64 = 0
    /// Set for a warm env: sandboxes restore this memory image instead of booting.
    var memoryImage: String?
    var memoryToken: String?
    /// Its `start` (with `ready` and the seconds to wait for it): a sandbox
    /// that does not start from the memory image runs it, and is ready once
    /// `ready` passes.
    var start: String? = nil
    var ready: String? = nil
    var startTimeout: Int? = nil
    /// Volumes its sandboxes mount when a create names none (by name: each
    /// create finds the team's volume of that name).
    var volumes: [API.VolumeMount]? = nil
    /// Its processes' env vars, cwd and user unless a request says otherwise.
    var process: API.ProcessDefaults? = nil
    /// The image it was made from, for an env made from one.
    var image: String? = nil
    /// Deleted while sandboxes still ran from it: no longer found by name or
    /// id for anything new, kept (with its layers) until the last of them
    /// ends (`EnvRepository.purgeDeleted`).
    var deletedAt: Double? = nil
}

/// Envs in the catalog.
public struct EnvRepository: Sendable {
    let db: DatabasePool

    func find(_ id: String) async throws -> EnvRecord? {
        try await db.read { try EnvRecord.fetchOne($0, key: id) }
    }

    private static let notDeleted = Column("deletedAt") == nil

    /// An env id, or the newest published env with that name, as `team` sees
    /// it. A deleted env is found only by id and with `includeDeleted` (what
    /// a sandbox that runs from it needs).
    /// An env id or the newest published env of a name, as `team` sees it:
    /// its own first, then the built-in envs every team sees (`BuiltinEnvs.team`).
    func lookup(_ reference: String, team: String, includeDeleted: Bool = false) async throws -> EnvRecord? {
        try await db.read { db in
            for owner in [team, BuiltinEnvs.team] {
                if let byID = try EnvRecord.fetchOne(db, key: reference), byID.team == owner, includeDeleted || byID.deletedAt == nil { return byID }
                if let named = try EnvRecord.filter(Column("name") == reference && Column("team") == owner && Column("published") == true && Self.notDeleted)
                    .order(Column("publishedAt").desc).fetchOne(db) { return named }
            }
            return nil
        }
    }

    /// The env `name:tag` names for `team`, if tagged.
    func tagged(_ name: String, _ tag: String, team: String) async throws -> String? {
        try await db.read { db in
            try String.fetchOne(db, sql: "SELECT envID FROM envTag WHERE team = ? AND name = ? AND tag = ?", arguments: [team, name, tag])
        }
    }

    /// Points `tags` of `name` at `envID` (moving them if they pointed elsewhere).
    func tag(_ name: String, _ tags: [String], envID: String, team: String, at now: Double) async throws {
        try await db.write { db in
            for tag in tags {
                try db.execute(sql: "INSERT OR REPLACE INTO envTag (team, name, tag, envID, createdAt) VALUES (?, ?, ?, ?, ?)",
                               arguments: [team, name, tag, envID, now])
            }
        }
    }

    func untag(_ name: String, _ tags: [String], team: String) async throws -> Int {
        try await db.write { db in
            var removed = 0
            for tag in tags {
                try db.execute(sql: "DELETE FROM envTag WHERE team = ? AND name = ? AND tag = ?", arguments: [team, name, tag])
                removed += db.changesCount
            }
            return removed
        }
    }

    /// `name`'s tags: (tag, env id, when set), oldest first.
    func tags(of name: String, team: String) async throws -> [(tag: String, envID: String, createdAt: Double)] {
        try await db.read { db in
            try Row.fetchAll(db, sql: "SELECT tag, envID, createdAt FROM envTag WHERE team = ? AND name = ? ORDER BY createdAt, tag",
                             arguments: [team, name]).map { ($0["tag"], $0["envID"], $0["createdAt"]) }
        }
    }

    func drafts(named name: String, team: String) async throws -> Int {
        try await db.read { db in try EnvRecord.filter(Column("name") == name && Column("team") == team && Self.notDeleted).fetchCount(db) }
    }

    func list(team: String) async throws -> [EnvRecord] {
        try await db.read { db in try EnvRecord.filter(Column("team") == team && Self.notDeleted).order(Column("createdAt")).fetchAll(db) }
    }

    /// The newest env of a name (published or not): the parent of the next push.
    func newest(named name: String, team: String) async throws -> EnvRecord? {
        try await db.read { db in
            try EnvRecord.filter(Column("name") == name && Column("team") == team && Self.notDeleted).order(Column("createdAt").desc).fetchOne(db)
        }
    }

    /// Inserts `env` unless one with its id exists; returns the stored one.
    /// The same content made again brings a deleted env back.
    func insertIfAbsent(_ env: EnvRecord) async throws -> EnvRecord {
        try await db.write { db in
            if var existing = try EnvRecord.fetchOne(db, key: env.id) {
                if existing.deletedAt != nil {
                    existing.deletedAt = nil
                    existing.published = env.published
                    existing.publishedAt = env.publishedAt
                    try existing.update(db)
                }
                return existing
            }
            try env.insert(db)
            return env
        }
    }

    /// Deleted while sandboxes run from them: hidden at once (see `purgeDeleted`).
    func markDeleted(_ ids: [String]) async throws {
        try await db.write { db in
            for id in ids {
                try db.execute(sql: "UPDATE env SET deletedAt = ?, published = 0, publishedAt = NULL WHERE id = ?", arguments: [now(), id])
            }
        }
    }

    /// Removes deleted envs that nothing holds any more: no sandbox that has
    /// not ended runs from them, and no env forks them. Returns how many.
    @discardableResult
    func purgeDeleted() async throws -> Int {
        try await db.write { db in
            var removed = 0
            while true {
                try db.execute(sql: """
                    DELETE FROM env WHERE deletedAt IS NOT NULL
                      AND id NOT IN (SELECT env FROM sandbox WHERE state != 'killed')
                      AND id NOT IN (SELECT parent FROM env)
                    """)
                guard db.changesCount > 0 else { return removed }
                removed += db.changesCount
            }
        }
    }

    func setPublished(_ id: String, _ published: Bool, team: String) async throws -> EnvRecord {
        try await db.write { db in
            guard var record = try EnvRecord.fetchOne(db, key: id), record.team == team else {
                throw SproutError(.notFound, "no env with id '\(id)'")
            }
            record.published = published
            record.publishedAt = published ? now() : nil
            try record.update(db)
            return record
        }
    }

    /// Every layer any env uses.
    func referencedLayers() async throws -> Set<String> {
        Set(try await db.read { db in try EnvRecord.fetchAll(db) }.flatMap(\.layers))
    }

    func referencedImages() async throws -> Set<String> {
        Set(try await db.read { db in try String.fetchAll(db, sql: "SELECT memoryImage FROM env WHERE memoryImage IS NOT NULL") })
    }

    /// Ids of envs whose name has a newer published env: sandboxes are no longer
    /// started from them by name, so they need no warm pool.
    func superseded(_ ids: [String]) async throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return try await db.read { db in
            var out: Set<String> = []
            for id in ids {
                guard let env = try EnvRecord.fetchOne(db, key: id) else { continue }
                if env.deletedAt != nil {
                    out.insert(id)
                    continue
                }
                let newest = try EnvRecord.filter(Column("name") == env.name && Column("team") == env.team && Column("published") == true)
                    .order(Column("publishedAt").desc).fetchOne(db)
                if let newest, newest.id != env.id { out.insert(id) }
            }
            return out
        }
    }

    // MARK: The build step cache

    func cachedLayer(_ key: String) async throws -> String? {
        try await db.read { db in try String.fetchOne(db, sql: "SELECT layer FROM stepCache WHERE key = ?", arguments: [key]) }
    }

    func rememberLayer(_ key: String, _ layer: String) async throws {
        try await db.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO stepCache (key, layer) VALUES (?, ?)", arguments: [key, layer])
        }
    }

    func forgetLayers(_ layers: [String]) async throws {
        try await db.write { db in
            for layer in layers { try db.execute(sql: "DELETE FROM stepCache WHERE layer = ?", arguments: [layer]) }
        }
    }
}
