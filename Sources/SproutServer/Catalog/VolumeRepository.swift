import Foundation
import SproutCluster
import SproutAPI
import SproutCore

/// A volume: a team's named file system that outlives sandboxes.
struct VolumeRecord: StoredRecord {
    static let table = "volume"
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
    let db: any SQLDatabase

    func insert(_ volume: VolumeRecord) async throws {
        do {
            try await db.write { try await $0.insert(volume) }
        } catch is SQLUniqueViolation {
            throw SproutError(.alreadyExists, "a volume named '\(volume.name)' already exists")
        }
    }

    /// By name or id, within the team.
    func find(_ nameOrID: String, team: String) async throws -> VolumeRecord? {
        try await db.read { db in
            try await db.fetchOne(VolumeRecord.self, where: "team = ? AND (name = ? OR id = ?)", [.text(team), .text(nameOrID), .text(nameOrID)])
        }
    }

    func find(id: String) async throws -> VolumeRecord? {
        try await db.read { try await $0.find(VolumeRecord.self, id: id) }
    }

    func list(team: String) async throws -> [VolumeRecord] {
        try await db.read { db in try await db.fetchAll(VolumeRecord.self, where: "team = ?", [.text(team)], orderBy: "name") }
    }

    func all() async throws -> [VolumeRecord] {
        try await db.read { db in try await db.fetchAll(VolumeRecord.self) }
    }

    func delete(_ id: String) async throws {
        try await db.write { db in try await db.execute("DELETE FROM volume WHERE id = ?", .text(id)) }
    }

    /// The sandboxes that have not ended and mount `id`.
    func users(_ id: String) async throws -> [String] {
        try await db.read { db in
            try await db.rows("SELECT id, volumes FROM sandbox WHERE state != 'killed' AND volumes IS NOT NULL ORDER BY createdAt")
                .filter { row in
                    let mounts = try JSONDecoder().decode([VolumeMount].self, from: Data((row["volumes"].string ?? "[]").utf8))
                    return mounts.contains { $0.volume == id }
                }
                .compactMap { $0["id"].string }
        }
    }
}
