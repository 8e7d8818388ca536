import Foundation
import GRDB
import SproutCore

/// The server's durable state in SQLite (WAL): API keys, sandboxes and their
/// events, envs, builds, blob ownership. Every write is a transaction, so a
/// crash never leaves half a record; reads and writes run on GRDB's own
/// threads, never on Swift's cooperative pool (only the async calls are used).
public final class Catalog: Sendable {
    let db: DatabasePool

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(5)
        // WAL with synchronous=NORMAL: a commit survives a crash of the
        // server (SIGKILL included); only a power cut can lose the last ones.
        config.prepareDatabase { try $0.execute(sql: "PRAGMA synchronous = NORMAL") }
        do {
            db = try DatabasePool(path: path, configuration: config)
            try Self.migrator.migrate(db)
        } catch {
            throw SproutError(.internal, "cannot open the catalog at \(path): \(error)")
        }
    }

    public var sandboxes: SandboxRepository { SandboxRepository(db: db) }
    public var envs: EnvRepository { EnvRepository(db: db) }
    public var builds: BuildRepository { BuildRepository(db: db) }
    var volumes: VolumeRepository { VolumeRepository(db: db) }

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
        m.registerMigration("v11-state-machines") { db in
            try db.alter(table: "sandbox") { t in
                // Bumped by every write: compare-and-set, so a stale copy never overwrites a newer state.
                t.add(column: "version", .integer).notNull().defaults(to: 0)
                t.add(column: "pausedAt", .double)
            }
            // What happened to a sandbox: every state change, and what the server did on its own.
            try db.create(table: "sandboxEvent") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("sandbox", .text).notNull().indexed()
                t.column("at", .double).notNull()
                t.column("kind", .text).notNull()
                t.column("message", .text).notNull()
            }
            try db.create(index: "sandbox_team_state", on: "sandbox", columns: ["team", "state"])
            try db.alter(table: "build") { t in t.add(column: "version", .integer).notNull().defaults(to: 0) }
        }
        m.registerMigration("v12-lifecycle") { db in
            try db.alter(table: "sandbox") { t in
                // What its timeout does: kill (nil) or pause.
                t.add(column: "onTimeout", .text)
                // The timeout it was given last, renewed when a timeout pause wakes.
                t.add(column: "lifetimeSeconds", .double)
                // A timeout pause resumes on the next request that needs it running.
                t.add(column: "resumeOnRequest", .boolean).notNull().defaults(to: false)
            }
        }
        m.registerMigration("v13-idle-pause") { db in
            // Pause after this many seconds without a request or an open stream.
            try db.alter(table: "sandbox") { t in t.add(column: "idlePauseSeconds", .double) }
        }
        m.registerMigration("v14-files-only-pause") { db in
            try db.alter(table: "sandbox") { t in
                // Its last pause kept only its files: it boots again on resume.
                t.add(column: "lastPauseFilesOnly", .boolean).notNull().defaults(to: false)
                // Its timeout and idle pauses keep only its files.
                t.add(column: "pauseFilesOnly", .boolean).notNull().defaults(to: false)
            }
        }
        m.registerMigration("v15-state-expiry-index") { db in
            // The supervisor's once-a-second timeout question reads only what expired.
            try db.create(index: "sandbox_state_expires", on: "sandbox", columns: ["state", "expiresAt"])
        }
        m.registerMigration("v16-env-tombstones") { db in
            try db.alter(table: "env") { t in
                // Deleted while sandboxes still ran from it: hidden, kept until the last of them ends.
                t.add(column: "deletedAt", .double)
            }
        }
        m.registerMigration("v17-volumes") { db in
            try db.create(table: "volume") { t in
                t.primaryKey("id", .text)
                t.column("team", .text).notNull()
                t.column("name", .text).notNull()
                t.column("sizeMB", .integer).notNull()
                t.column("createdAt", .double).notNull()
                t.uniqueKey(["team", "name"])
            }
            // The volumes a sandbox mounts (JSON: volume id, name, path, readOnly).
            try db.alter(table: "sandbox") { t in t.add(column: "volumes", .text) }
        }
        m.registerMigration("v18-env-sandbox-defaults") { db in
            try db.alter(table: "env") { t in
                // Its start command, readiness check and wait (seconds): run in sandboxes that boot.
                t.add(column: "start", .text)
                t.add(column: "ready", .text)
                t.add(column: "startTimeout", .integer)
                // JSON array of {volume, path, readOnly}: mounted when a create names no volumes.
                t.add(column: "volumes", .text)
            }
        }
        m.registerMigration("v19-env-process-defaults") { db in
            try db.alter(table: "env") { t in
                // JSON {env, workdir, user}: what its processes get unless a request says otherwise.
                t.add(column: "process", .text)
                // The image it was made from (`registry/repo:tag@sha256:…`).
                t.add(column: "image", .text)
            }
        }
        m.registerMigration("v20-env-tags") { db in
            // `name:tag` → an env of the team (E2B's template tags).
            try db.create(table: "envTag") { t in
                t.column("team", .text).notNull()
                t.column("name", .text).notNull()
                t.column("tag", .text).notNull()
                t.column("envID", .text).notNull()
                t.column("createdAt", .double).notNull()
                t.primaryKey(["team", "name", "tag"])
            }
        }
        m.registerMigration("v21-stored-upper") { db in
            try db.alter(table: "sandbox") { t in t.add(column: "storedUpper", .text) }
        }
        return m
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

/// JSON text columns holding a list of strings or a string dictionary.
extension Catalog {
    /// The blobs a team has uploaded itself (storage is shared, knowledge is not).
    func blobsOwned(by team: String) async throws -> Set<String> {
        try await db.read { db in
            try Set(String.fetchAll(db, sql: "SELECT digest FROM blobOwner WHERE team = ?", arguments: [team]))
        }
    }

    func recordBlob(team: String, digest: String, size: Int64) async throws {
        try await db.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO blobOwner (team, digest, size) VALUES (?, ?, ?)", arguments: [team, digest, size])
        }
    }
}
