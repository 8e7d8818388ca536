import SproutCluster

/// The catalog's schema, one list of migrations for SQLite and PostgreSQL
/// alike: SQL both understand (`BIGINT`, `DOUBLE PRECISION`, `BOOLEAN`,
/// `TEXT`; `{serial}` is each one's auto-numbered key). Applied names are
/// kept in `grdb_migrations` in SQLite (where catalogs made before these
/// were SQL kept them) and `catalog_migration` in PostgreSQL. A migration is
/// never edited once released: a change is a new one at the end.
enum CatalogMigrations {
    static let all: [(name: String, sql: [String])] = [
        ("v1", [
            """
            CREATE TABLE apiKey (id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, team TEXT NOT NULL, prefix TEXT NOT NULL,
              hash TEXT NOT NULL UNIQUE, admin BOOLEAN NOT NULL, createdAt DOUBLE PRECISION NOT NULL, revokedAt DOUBLE PRECISION)
            """,
            """
            CREATE TABLE sandbox (id TEXT NOT NULL PRIMARY KEY, team TEXT NOT NULL, env TEXT NOT NULL, runtime TEXT NOT NULL, state TEXT NOT NULL,
              createdAt DOUBLE PRECISION NOT NULL, expiresAt DOUBLE PRECISION, endedAt DOUBLE PRECISION, cpu DOUBLE PRECISION NOT NULL,
              memoryMB BIGINT NOT NULL, internet BOOLEAN NOT NULL, metadata TEXT NOT NULL, envVars TEXT NOT NULL, slot BIGINT,
              agentToken TEXT NOT NULL, error TEXT)
            """,
            "CREATE INDEX sandbox_on_team ON sandbox (team)",
            "CREATE INDEX sandbox_on_state ON sandbox (state)",
        ]),
        ("v2-envs", [
            """
            CREATE TABLE env (id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL, parent TEXT NOT NULL, team TEXT NOT NULL, base TEXT NOT NULL,
              layers TEXT NOT NULL, createdAt DOUBLE PRECISION NOT NULL, ownBytes BIGINT NOT NULL)
            """,
            "CREATE INDEX env_on_name ON env (name)",
            "CREATE INDEX env_on_team ON env (team)",
        ]),
        // Which team proved it holds which blob: storage is shared, knowledge is not.
        ("v3-blobs", ["CREATE TABLE blobOwner (team TEXT NOT NULL, digest TEXT NOT NULL, size BIGINT NOT NULL, PRIMARY KEY (team, digest))"]),
        ("v4-builds", [
            """
            CREATE TABLE build (id TEXT NOT NULL PRIMARY KEY, team TEXT NOT NULL, envID TEXT NOT NULL, status TEXT NOT NULL, failedStep TEXT,
              exitCode BIGINT, error TEXT, createdAt DOUBLE PRECISION NOT NULL, finishedAt DOUBLE PRECISION, steps BIGINT NOT NULL,
              cachedSteps BIGINT NOT NULL)
            """,
            "CREATE INDEX build_on_team ON build (team)",
            // A build step's result: its cache key (the layer below it and what the step does) and the layer it made.
            "CREATE TABLE stepCache (key TEXT NOT NULL PRIMARY KEY, layer TEXT NOT NULL)",
        ]),
        // A name points at its newest published env, like a branch.
        ("v5-published", [
            "ALTER TABLE env ADD COLUMN published BOOLEAN NOT NULL DEFAULT TRUE",
            "ALTER TABLE env ADD COLUMN publishedAt DOUBLE PRECISION",
            "UPDATE env SET publishedAt = createdAt",
        ]),
        ("v6-build-warnings", ["ALTER TABLE build ADD COLUMN warnings TEXT"]),
        // Bytes of the whole chain: the base plus every layer's own bytes.
        ("v7-env-total", ["ALTER TABLE env ADD COLUMN totalBytes BIGINT NOT NULL DEFAULT 0"]),
        ("v8-memory-snapshots", [
            // JSON array of memory image ids, oldest first; the last is the one resume restores.
            "ALTER TABLE sandbox ADD COLUMN images TEXT",
            "ALTER TABLE sandbox ADD COLUMN remainingSeconds DOUBLE PRECISION",
            "ALTER TABLE sandbox ADD COLUMN autoResume BOOLEAN NOT NULL DEFAULT FALSE",
            // A warm env: the memory image taken once `start` was ready, and the agent token inside it.
            "ALTER TABLE env ADD COLUMN memoryImage TEXT",
            "ALTER TABLE env ADD COLUMN memoryToken TEXT",
        ]),
        // JSON array of IPv4 CIDRs: the only outside traffic a sandbox may send.
        ("v9-egress", ["ALTER TABLE sandbox ADD COLUMN egress TEXT"]),
        // MiB the sandbox may write; beyond it the sandbox is stopped (NULL: the default).
        ("v10-disk", ["ALTER TABLE sandbox ADD COLUMN diskMB BIGINT"]),
        ("v11-state-machines", [
            // Bumped by every write: compare-and-set, so a stale copy never overwrites a newer state.
            "ALTER TABLE sandbox ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE sandbox ADD COLUMN pausedAt DOUBLE PRECISION",
            // What happened to a sandbox: every state change, and what the server did on its own.
            "CREATE TABLE sandboxEvent (id {serial}, sandbox TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, message TEXT NOT NULL)",
            "CREATE INDEX sandboxEvent_on_sandbox ON sandboxEvent (sandbox)",
            "CREATE INDEX sandbox_team_state ON sandbox (team, state)",
            "ALTER TABLE build ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
        ]),
        ("v12-lifecycle", [
            // What its timeout does: kill (NULL) or pause.
            "ALTER TABLE sandbox ADD COLUMN onTimeout TEXT",
            // The timeout it was given last, renewed when a timeout pause wakes.
            "ALTER TABLE sandbox ADD COLUMN lifetimeSeconds DOUBLE PRECISION",
            // A timeout pause resumes on the next request that needs it running.
            "ALTER TABLE sandbox ADD COLUMN resumeOnRequest BOOLEAN NOT NULL DEFAULT FALSE",
        ]),
        // Pause after this many seconds without a request or an open stream.
        ("v13-idle-pause", ["ALTER TABLE sandbox ADD COLUMN idlePauseSeconds DOUBLE PRECISION"]),
        ("v14-files-only-pause", [
            // Its last pause kept only its files: it boots again on resume.
            "ALTER TABLE sandbox ADD COLUMN lastPauseFilesOnly BOOLEAN NOT NULL DEFAULT FALSE",
            // Its timeout and idle pauses keep only its files.
            "ALTER TABLE sandbox ADD COLUMN pauseFilesOnly BOOLEAN NOT NULL DEFAULT FALSE",
        ]),
        // The supervisor's once-a-second timeout question reads only what expired.
        ("v15-state-expiry-index", ["CREATE INDEX sandbox_state_expires ON sandbox (state, expiresAt)"]),
        // Deleted while sandboxes still ran from it: hidden, kept until the last of them ends.
        ("v16-env-tombstones", ["ALTER TABLE env ADD COLUMN deletedAt DOUBLE PRECISION"]),
        ("v17-volumes", [
            """
            CREATE TABLE volume (id TEXT NOT NULL PRIMARY KEY, team TEXT NOT NULL, name TEXT NOT NULL, sizeMB BIGINT NOT NULL,
              createdAt DOUBLE PRECISION NOT NULL, UNIQUE (team, name))
            """,
            // The volumes a sandbox mounts (JSON: volume id, name, path, readOnly).
            "ALTER TABLE sandbox ADD COLUMN volumes TEXT",
        ]),
        ("v18-env-sandbox-defaults", [
            // Its start command, readiness check and wait (seconds): run in sandboxes that boot.
            "ALTER TABLE env ADD COLUMN start TEXT",
            "ALTER TABLE env ADD COLUMN ready TEXT",
            "ALTER TABLE env ADD COLUMN startTimeout BIGINT",
            // JSON array of {volume, path, readOnly}: mounted when a create names no volumes.
            "ALTER TABLE env ADD COLUMN volumes TEXT",
        ]),
        ("v19-env-process-defaults", [
            // JSON {env, workdir, user}: what its processes get unless a request says otherwise.
            "ALTER TABLE env ADD COLUMN process TEXT",
            // The image it was made from (`registry/repo:tag@sha256:…`).
            "ALTER TABLE env ADD COLUMN image TEXT",
        ]),
        // `name:tag` → an env of the team (E2B's template tags).
        ("v20-env-tags", [
            """
            CREATE TABLE envTag (team TEXT NOT NULL, name TEXT NOT NULL, tag TEXT NOT NULL, envID TEXT NOT NULL,
              createdAt DOUBLE PRECISION NOT NULL, PRIMARY KEY (team, name, tag))
            """,
        ]),
        ("v21-stored-upper", ["ALTER TABLE sandbox ADD COLUMN storedUpper TEXT"]),
    ]

    /// The table that remembers which migrations ran.
    static func table(_ dialect: SQLDialect) -> String { dialect == .sqlite ? "grdb_migrations" : "catalog_migration" }

    static func statement(_ sql: String, _ dialect: SQLDialect) -> String {
        sql.replacingOccurrences(
            of: "{serial}",
            with: dialect == .sqlite ? "INTEGER PRIMARY KEY AUTOINCREMENT" : "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
    }

    /// Runs the migrations `db` lacks, in order, in one transaction (a
    /// second server starting on the same PostgreSQL waits, then finds
    /// nothing to do). Returns the names it ran.
    @discardableResult
    static func migrate(_ db: any SQLDatabase) async throws -> [String] {
        let dialect = db.dialect
        let table = table(dialect)
        return try await db.write { session in
            try await session.execute("CREATE TABLE IF NOT EXISTS \(table) (identifier TEXT NOT NULL PRIMARY KEY)")
            let applied = Set(try await session.strings("SELECT identifier FROM \(table)"))
            var ran: [String] = []
            for migration in all where !applied.contains(migration.name) {
                for sql in migration.sql { try await session.execute(statement(sql, dialect)) }
                try await session.execute("INSERT INTO \(table) (identifier) VALUES (?)", .text(migration.name))
                ran.append(migration.name)
            }
            return ran
        }
    }
}
