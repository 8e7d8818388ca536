import Foundation
import Logging
import SproutCluster
import SproutCore

/// The server's durable state: API keys, sandboxes and their events, envs,
/// builds, blob ownership, volumes. In SQLite (WAL, `sprout.db` in the data
/// directory) by default, or in PostgreSQL (`--catalog postgres://…`): the
/// same repositories, the same SQL and the same migrations on both (see
/// `SQLDatabase`). Every write is a transaction, so a crash never leaves
/// half a record.
public final class Catalog: Sendable {
    let db: any SQLDatabase

    /// The catalog in SQLite at `path`.
    public convenience init(path: String) async throws {
        let db: SQLiteDatabase
        do {
            db = try SQLiteDatabase(path: path)
        } catch {
            throw SproutError(.internal, "cannot open the catalog at \(path): \(error)")
        }
        try await self.init(db)
    }

    /// The catalog in PostgreSQL at `url`.
    public convenience init(postgres url: String, logger: Logger) async throws {
        let db = try await PostgresSQLDatabase(url: url, logger: logger)
        do {
            try await self.init(db)
        } catch {
            await db.close()
            throw error
        }
    }

    /// The catalog in `db`, its tables brought up to date.
    init(_ db: any SQLDatabase) async throws {
        self.db = db
        do {
            try await CatalogMigrations.migrate(db)
        } catch {
            throw SproutError(.internal, "cannot bring the catalog at \(db.location) up to date: \(error)")
        }
    }

    public func close() async { await db.close() }

    public var sandboxes: SandboxRepository { SandboxRepository(db: db) }
    public var envs: EnvRepository { EnvRepository(db: db) }
    public var builds: BuildRepository { BuildRepository(db: db) }
    var volumes: VolumeRepository { VolumeRepository(db: db) }
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

func now() -> Double { Date().timeIntervalSince1970 }

extension Catalog {
    /// The blobs a team has uploaded itself (storage is shared, knowledge is not).
    func blobsOwned(by team: String) async throws -> Set<String> {
        try await db.read { db in Set(try await db.strings("SELECT digest FROM blobOwner WHERE team = ?", .text(team))) }
    }

    func recordBlob(team: String, digest: String, size: Int64) async throws {
        try await db.write { db in
            try await db.execute("INSERT INTO blobOwner (team, digest, size) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                                 .text(team), .text(digest), .integer(size))
        }
    }
}
