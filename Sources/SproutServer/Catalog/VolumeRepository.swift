import Foundation
import GRDB
import SproutAPI
import SproutCore

/// A volume: a team's named file system that outlives sandboxes.
struct VolumeRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "volume"
    var id: String
    var team: String
    var name: String
    var sizeMB: Int
    var createdAt: Double
}

/// Where a sandbox has a volume (kept in its record, so a resume, a restore
/// after a restart and a fork mount the same).
struct VolumeMount: Codable, Sendable, Equatable {
    var volume: String
    var name: String
    var path: String
    var readOnly: Bool
}

/// Volumes in the catalog; a name is unique within its team.
struct VolumeRepository: Sendable {
    let db: DatabasePool

    func insert(_ volume: VolumeRecord) async throws {
        do {
            try await db.write { try volume.insert($0) }
        } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE {
            throw SproutError(.alreadyExists, "a volume named '\(volume.name)' already exists")
        }
    }

    /// By name or id, within the team.
    func find(_ nameOrID: String, team: String) async throws -> VolumeRecord? {
        try await db.read { db in
            try VolumeRecord.filter(Column("team") == team && (Column("name") == nameOrID || Column("id") == nameOrID)).fetchOne(db)
        }
    }

    func find(id: String) async throws -> VolumeRecord? {
        try await db.read { db in try VolumeRecord.fetchOne(db, key: id) }
    }

    func list(team: String) async throws -> [VolumeRecord] {
        try await db.read { db in try VolumeRecord.filter(Column("team") == team).order(Column("name")).fetchAll(db) }
    }

    func all() async throws -> [VolumeRecord] {
        try await db.read { db in try VolumeRecord.fetchAll(db) }
    }

    func delete(_ id: String) async throws {
        _ = try await db.write { db in try VolumeRecord.deleteOne(db, key: id) }
    }

    /// The sandboxes that have not ended and mount `id`.
    func users(_ id: String) async throws -> [String] {
        try await db.read { db in
            try String.fetchAll(db, sql: """
                SELECT sandbox.id FROM sandbox, json_each(sandbox.volumes)
                WHERE sandbox.state != 'killed' AND json_extract(json_each.value, '$.volume') = ?
                ORDER BY sandbox.createdAt
                """, arguments: [id])
        }
    }
}
