import Foundation
import GRDB
import SproutCore

/// The server's durable state in SQLite (WAL): API keys and sandboxes.
/// Every write is a transaction, so a crash never leaves half a record.
public final class Catalog: Sendable {
    let db: DatabaseQueue

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.prepareDatabase { try $0.execute(sql: "PRAGMA synchronous = NORMAL") }
        do {
            db = try DatabaseQueue(path: path, configuration: config)
            // WAL with synchronous=NORMAL: a commit survives a crash of the
            // server (SIGKILL included); only a power cut can lose the last ones.
            try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA journal_mode = WAL") }
            try Self.migrator.migrate(db)
        } catch {
            throw SproutError(.internal, "cannot open the catalog at \(path): \(error)")
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "apiKey") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull()
                t.column("team", .text).notNull()
                t.column("prefix", .text).notNull()
                t.column("hash", .text).notNull().unique()
                t.column("admin", .boolean).notNull()
                t.column("createdAt", .double).notNull()
                t.column("revokedAt", .double)
            }
            try db.create(table: "sandbox") { t in
                t.primaryKey("id", .text)
                t.column("team", .text).notNull().indexed()
                t.column("env", .text).notNull()
                t.column("runtime", .text).notNull()
                t.column("state", .text).notNull().indexed()
                t.column("createdAt", .double).notNull()
                t.column("expiresAt", .double)
                t.column("endedAt", .double)
                t.column("cpu", .double).notNull()
                t.column("memoryMB", .integer).notNull()
                t.column("internet", .boolean).notNull()
                t.column("metadata", .text).notNull()
                t.column("envVars", .text).notNull()
                t.column("slot", .integer)
                t.column("agentToken", .text).notNull()
                t.column("error", .text)
            }
        }
        m.registerMigration("v2-envs") { db in
            try db.create(table: "env") { t in
                t.primaryKey("id", .text)
                t.column("name", .text).notNull().indexed()
                t.column("parent", .text).notNull()
                t.column("team", .text).notNull().indexed()
                t.column("base", .text).notNull()
                t.column("layers", .text).notNull()
                t.column("createdAt", .double).notNull()
                t.column("ownBytes", .integer).notNull()
            }
        }
        m.registerMigration("v3-blobs") { db in
            // Which team proved it holds which blob: storage is shared, knowledge is not.
            try db.create(table: "blobOwner") { t in
                t.column("team", .text).notNull()
                t.column("digest", .text).notNull()
                t.column("size", .integer).notNull()
                t.primaryKey(["team", "digest"])
            }
        }
        m.registerMigration("v4-builds") { db in
            try db.create(table: "build") { t in
                t.primaryKey("id", .text)
                t.column("team", .text).notNull().indexed()
                t.column("envID", .text).notNull()
                t.column("status", .text).notNull()
                t.column("failedStep", .text)
                t.column("exitCode", .integer)
                t.column("error", .text)
                t.column("createdAt", .double).notNull()
                t.column("finishedAt", .double)
                t.column("steps", .integer).notNull()
                t.column("cachedSteps", .integer).notNull()
            }
            // A build step's result: its cache key (the layer below it and what
            // the step does) and the layer it made.
            try db.create(table: "stepCache") { t in
                t.primaryKey("key", .text)
                t.column("layer", .text).notNull()
            }
        }
        m.registerMigration("v5-published") { db in
            // A name points at its newest published env, like a branch.
            try db.alter(table: "env") { t in
                t.add(column: "published", .boolean).notNull().defaults(to: true)
                t.add(column: "publishedAt", .double)
            }
            try db.execute(sql: "UPDATE env SET publishedAt = createdAt")
        }
        m.registerMigration("v6-build-warnings") { db in
            try db.alter(table: "build") { t in t.add(column: "warnings", .text) }
        }
        m.registerMigration("v7-env-total") { db in
            // Bytes of the whole chain: the base plus every layer's own bytes.
            try db.alter(table: "env") { t in t.add(column: "totalBytes", .integer).notNull().defaults(to: 0) }
        }
        m.registerMigration("v8-memory-snapshots") { db in
            try db.alter(table: "sandbox") { t in
                // JSON array of memory image ids, oldest first; the last is the one resume restores.
                t.add(column: "images", .text)
                t.add(column: "remainingSeconds", .double)
                t.add(column: "autoResume", .boolean).notNull().defaults(to: false)
            }
            try db.alter(table: "env") { t in
                // A warm env: the memory image taken once `start` was ready, and the
                // agent token inside it.
                t.add(column: "memoryImage", .text)
                t.add(column: "memoryToken", .text)
            }
        }
        m.registerMigration("v9-egress") { db in
            // JSON array of IPv4 CIDRs: the only outside traffic a sandbox may send.
            try db.alter(table: "sandbox") { t in t.add(column: "egress", .text) }
        }
        m.registerMigration("v10-disk") { db in
            // MiB the sandbox may write; beyond it the sandbox is stopped (NULL: the default).
            try db.alter(table: "sandbox") { t in t.add(column: "diskMB", .integer) }
        }
        return m
    }
}

/// One run of `env push`'s build.
struct BuildRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "build"
    var id: String
    var team: String
    var envID: String
    var status: String
    var failedStep: String?
    var exitCode: Int?
    var error: String?
    var createdAt: Double
    var finishedAt: Double?
    var steps: Int
    var cachedSteps: Int
    /// JSON array of warnings (files left alone).
    var warnings: String?
}

/// An env made by Sprout: a base root plus layers (bottom to top).
/// Built-in bases (`empty`, `debian`) are not stored; they are their own ids.
struct EnvRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "env"
    var id: String
    var name: String
    var parent: String
    var team: String
    var base: String
    /// JSON array of layer digests, bottom first.
    var layers: String
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

    var layerList: [String] { (try? JSONDecoder().decode([String].self, from: Data(layers.utf8))) ?? [] }
}

/// A stored API key. The secret itself is never stored, only its SHA-256.
struct KeyRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "apiKey"
    var id: String
    var name: String
    var team: String
    var prefix: String
    var hash: String
    var admin: Bool
    var createdAt: Double
    var revokedAt: Double?
}

/// A sandbox as the catalog remembers it.
struct SandboxRecord: Codable, FetchableRecord, PersistableRecord, Sendable {
    static let databaseTableName = "sandbox"
    var id: String
    var team: String
    var env: String
    var runtime: String
    var state: SandboxState
    var createdAt: Double
    var expiresAt: Double?
    var endedAt: Double?
    var cpu: Double
    var memoryMB: Int
    var internet: Bool
    var metadata: String
    var envVars: String
    var slot: Int?
    var agentToken: String
    var error: String?
    /// Memory images of this sandbox's pauses, oldest first (at most `SandboxManager.imageHistory`).
    var images: String?
    /// Timeout left when the sandbox was paused; the clock stops while paused.
    var remainingSeconds: Double?
    /// Resume on the next request that needs the sandbox running.
    var autoResume: Bool = false
    /// JSON array of CIDRs, if outbound traffic is limited to them.
    var egress: String? = nil
    /// MiB the sandbox may write (nil: the server's default).
    var diskMB: Int? = nil

    var egressList: [String] { egress.map { SandboxRecord.decodeList($0) } ?? [] }

    var imageList: [String] { images.map(SandboxRecord.decodeList) ?? [] }

    var metadataDictionary: [String: String] { Self.decode(metadata) }
    var envVarsDictionary: [String: String] { Self.decode(envVars) }

    static func encode(_ dict: [String: String]) -> String {
        let data = (try? JSONEncoder.sorted.encode(dict)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    static func decode(_ text: String) -> [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(text.utf8))) ?? [:]
    }
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
        try await db.read { db in
            try Set(String.fetchAll(db, sql: "SELECT digest FROM blobOwner WHERE team = ?", arguments: [team]))
        }
    }
}
