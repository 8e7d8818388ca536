import Foundation
import SproutCluster
import SproutAPI
import SproutCore

/// An env made by Sprout: a base root plus layers (bottom to top).
/// Built-in bases (`empty`, `debian`) are not stored; they are their own ids.
struct EnvRecord: StoredRecord {
    static let table = "env"
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
    let db: any SQLDatabase

    func find(_ id: String) async throws -> EnvRecord? {
        try await db.read { try await $0.find(EnvRecord.self, id: id) }
    }

    /// An env id or the newest published env of a name, as `team` sees it:
    /// its own first, then the built-in envs every team sees (`BuiltinEnvs.team`).
    /// A deleted env is found only by id and with `includeDeleted` (what
    /// a sandbox that runs from it needs).
    func lookup(_ reference: String, team: String, includeDeleted: Bool = false) async throws -> EnvRecord? {
        try await db.read { db in
            for owner in [team, BuiltinEnvs.team] {
                if let byID = try await db.find(EnvRecord.self, id: reference), byID.team == owner, includeDeleted || byID.deletedAt == nil {
                    return byID
                }
                if let named = try await db.fetchOne(EnvRecord.self, where: "name = ? AND team = ? AND published = TRUE AND deletedAt IS NULL",
                                                     [.text(reference), .text(owner)], orderBy: "publishedAt DESC NULLS LAST") {
                    return named
                }
            }
            return nil
        }
    }

    /// The env `name:tag` names for `team`, if tagged.
    func tagged(_ name: String, _ tag: String, team: String) async throws -> String? {
        try await db.read { db in
            try await db.strings("SELECT envID FROM envTag WHERE team = ? AND name = ? AND tag = ?", .text(team), .text(name), .text(tag)).first
        }
    }

    /// Points `tags` of `name` at `envID` (moving them if they pointed elsewhere).
    func tag(_ name: String, _ tags: [String], envID: String, team: String, at now: Double) async throws {
        try await db.write { db in
            for tag in tags {
                try await db.execute("""
                    INSERT INTO envTag (team, name, tag, envID, createdAt) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (team, name, tag) DO UPDATE SET envID = excluded.envID, createdAt = excluded.createdAt
                    """, .text(team), .text(name), .text(tag), .text(envID), .real(now))
            }
        }
    }

    func untag(_ name: String, _ tags: [String], team: String) async throws -> Int {
        try await db.write { db in
            var removed = 0
            for tag in tags {
                removed += try await db.rows("DELETE FROM envTag WHERE team = ? AND name = ? AND tag = ? RETURNING tag",
                                             .text(team), .text(name), .text(tag)).count
            }
            return removed
        }
    }

    /// `name`'s tags: (tag, env id, when set), oldest first.
    func tags(of name: String, team: String) async throws -> [(tag: String, envID: String, createdAt: Double)] {
        try await db.read { db in
            try await db.rows("SELECT tag, envID, createdAt FROM envTag WHERE team = ? AND name = ? ORDER BY createdAt, tag", .text(team), .text(name))
                .map { (tag: $0["tag"].string ?? "", envID: $0["envID"].string ?? "", createdAt: $0["createdAt"].double ?? 0) }
        }
    }

    func drafts(named name: String, team: String) async throws -> Int {
        try await db.read { db in try await db.count("env", where: "name = ? AND team = ? AND deletedAt IS NULL", [.text(name), .text(team)]) }
    }

    func list(team: String) async throws -> [EnvRecord] {
        try await db.read { db in try await db.fetchAll(EnvRecord.self, where: "team = ? AND deletedAt IS NULL", [.text(team)], orderBy: "createdAt") }
    }

    /// Every env, deleted ones too (what the object store's collector keeps).
    func all() async throws -> [EnvRecord] {
        try await db.read { db in try await db.fetchAll(EnvRecord.self) }
    }

    /// The newest env of a name (published or not): the parent of the next push.
    func newest(named name: String, team: String) async throws -> EnvRecord? {
        try await db.read { db in
            try await db.fetchOne(EnvRecord.self, where: "name = ? AND team = ? AND deletedAt IS NULL", [.text(name), .text(team)],
                                  orderBy: "createdAt DESC")
        }
    }

    /// Inserts `env` unless one with its id exists; returns the stored one.
    /// The same content made again brings a deleted env back.
    func insertIfAbsent(_ env: EnvRecord) async throws -> EnvRecord {
        try await db.write { db in
            if var existing = try await db.find(EnvRecord.self, id: env.id) {
                if existing.deletedAt != nil {
                    existing.deletedAt = nil
                    existing.published = env.published
                    existing.publishedAt = env.publishedAt
                    try await db.update(existing)
                }
                return existing
            }
            try await db.insert(env)
            return env
        }
    }

    /// Deleted while sandboxes run from them: hidden at once (see `purgeDeleted`).
    func markDeleted(_ ids: [String]) async throws {
        try await db.write { db in
            for id in ids {
                try await db.execute("UPDATE env SET deletedAt = ?, published = FALSE, publishedAt = NULL WHERE id = ?", .real(now()), .text(id))
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
                let gone = try await db.rows("""
                    DELETE FROM env WHERE deletedAt IS NOT NULL
                      AND id NOT IN (SELECT env FROM sandbox WHERE state != 'killed')
                      AND id NOT IN (SELECT parent FROM env)
                    RETURNING id
                    """).count
                guard gone > 0 else { return removed }
                removed += gone
            }
        }
    }

    func setPublished(_ id: String, _ published: Bool, team: String) async throws -> EnvRecord {
        try await db.write { db in
            guard var record = try await db.find(EnvRecord.self, id: id), record.team == team else {
                throw SproutError(.notFound, "no env with id '\(id)'")
            }
            record.published = published
            record.publishedAt = published ? now() : nil
            try await db.update(record)
            return record
        }
    }

    /// Every layer any env uses.
    func referencedLayers() async throws -> Set<String> {
        try await db.read { db in
            var layers: Set<String> = []
            for text in try await db.strings("SELECT layers FROM env") {
                layers.formUnion(try JSONDecoder().decode([String].self, from: Data(text.utf8)))
            }
            return layers
        }
    }

    func referencedImages() async throws -> Set<String> {
        Set(try await db.read { db in try await db.strings("SELECT memoryImage FROM env WHERE memoryImage IS NOT NULL") })
    }

    /// Ids of envs whose name has a newer published env: sandboxes are no longer
    /// started from them by name, so they need no warm pool.
    func superseded(_ ids: [String]) async throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return try await db.read { db in
            var out: Set<String> = []
            for id in ids {
                guard let env = try await db.find(EnvRecord.self, id: id) else { continue }
                if env.deletedAt != nil {
                    out.insert(id)
                    continue
                }
                let newest = try await db.fetchOne(EnvRecord.self, where: "name = ? AND team = ? AND published = TRUE",
                                                   [.text(env.name), .text(env.team)], orderBy: "publishedAt DESC NULLS LAST")
                if let newest, newest.id != env.id { out.insert(id) }
            }
            return out
        }
    }

    // MARK: The build step cache

    func cachedLayer(_ key: String) async throws -> String? {
        try await db.read { db in try await db.strings("SELECT layer FROM stepCache WHERE key = ?", .text(key)).first }
    }

    func rememberLayer(_ key: String, _ layer: String) async throws {
        try await db.write { db in
            try await db.execute("INSERT INTO stepCache (key, layer) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET layer = excluded.layer",
                                 .text(key), .text(layer))
        }
    }

    func forgetLayers(_ layers: [String]) async throws {
        try await db.write { db in
            for layer in layers { try await db.execute("DELETE FROM stepCache WHERE layer = ?", .text(layer)) }
        }
    }
}
