import Foundation
import Logging
import SproutAPI
import SproutCluster
import SproutCore
import SproutSystem
@testable import SproutServer
import Testing

/// Where a catalog under test lives: SQLite in a temporary directory, or a
/// real PostgreSQL (Debian's, initdb'd by the test; needs root, which
/// `make test` has).
enum CatalogBackend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// SQLite always; PostgreSQL where it can run.
    static var usable: [CatalogBackend] { LocalPostgres.isUsable ? [.sqlite, .postgres] : [.sqlite] }

    /// A fresh catalog for `body`; `open` opens the same database again (another server on it).
    func with(_ body: (Catalog, _ open: @escaping @Sendable () async throws -> Catalog) async throws -> Void) async throws {
        switch self {
        case .sqlite:
            let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-catalog")
            defer { try? FileSystem.removeTree(directory) }
            let path = directory + "/catalog.db"
            try await body(try await Catalog(path: path)) { try await Catalog(path: path) }
        case .postgres:
            try await LocalPostgres.withTemporary { postgres in
                let url = postgres.url()
                let open: @Sendable () async throws -> Catalog = { try await Catalog(postgres: url, logger: Logger(label: "test")) }
                let catalog = try await open()
                do {
                    try await body(catalog, open)
                } catch {
                    await catalog.close()
                    throw error
                }
                await catalog.close()
            }
        }
    }
}

/// The catalog's repositories, the same tests on SQLite and PostgreSQL: one
/// interface, one SQL, one list of migrations.
@Suite("Unit: catalog repositories on SQLite and PostgreSQL", .timeLimit(.minutes(5)))
struct CatalogTests {
    static func record(_ id: String, team: String = "t", env: String = "empty") -> SandboxRecord {
        SandboxRecord(
            id: id, team: team, env: env, runtime: "runc", createdAt: 1, expiresAt: 2, cpu: 1, memoryMB: 64, internet: false,
            metadata: ["b": "2", "a": "1"], envVars: ["HOME": "/root"], slot: nil, agentToken: "x", egress: ["10.0.0.0/8"], diskMB: nil)
    }

    static func env(_ id: String, name: String, team: String = "t", parent: String = "empty", createdAt: Double, published: Bool = true) -> EnvRecord {
        EnvRecord(id: id, name: name, parent: parent, team: team, base: "empty", layers: ["l-" + id], createdAt: createdAt, ownBytes: 5_000_000_000,
                  published: published, publishedAt: published ? createdAt : nil)
    }

    @Test("lists and maps are stored as JSON text (the format older catalogs hold) and read back as they were", arguments: CatalogBackend.usable)
    func roundTrip(_ backend: CatalogBackend) async throws {
        try await backend.with { catalog, _ in
            try await catalog.sandboxes.insert(Self.record("s1"))
            let stored = try #require(try await catalog.db.read { try await $0.rows("SELECT metadata, envVars, egress FROM sandbox WHERE id = 's1'") }.first)
            #expect(stored["metadata"] == .text(#"{"a":"1","b":"2"}"#))
            #expect(stored["egress"] == .text(#"["10.0.0.0/8"]"#))
            let read = try #require(try await catalog.sandboxes.find("s1"))
            #expect(read.metadata == ["a": "1", "b": "2"])
            #expect(read.envVars == ["HOME": "/root"])
            #expect(read.egressList == ["10.0.0.0/8"])
            #expect(read.imageList.isEmpty)
            #expect(read.state == .creating && read.expiresAt == 2 && read.slot == nil && read.internet == false)
        }
    }

    @Test("a column that is not the JSON it should be is an error, not an empty value", arguments: CatalogBackend.usable)
    func damagedColumn(_ backend: CatalogBackend) async throws {
        try await backend.with { catalog, _ in
            try await catalog.sandboxes.insert(Self.record("s2"))
            // Positive control: the row reads before it is damaged.
            #expect(try await catalog.sandboxes.find("s2")?.metadata == ["a": "1", "b": "2"])
            try await catalog.db.write { try await $0.execute("UPDATE sandbox SET metadata = 'not json' WHERE id = 's2'") }
            await #expect(throws: (any Error).self) { try await catalog.sandboxes.find("s2") }
        }
    }

    @Test("sandboxes: transitions by the machine with compare-and-set, refusals change nothing, events, the supervisor's queries, the pool's claim",
          arguments: CatalogBackend.usable)
    func sandboxes(_ backend: CatalogBackend) async throws {
        try await backend.with { catalog, _ in
            let repo = catalog.sandboxes
            try await repo.insert(Self.record("s1"))
            try await repo.insert(Self.record("s2", team: "u"))
            await #expect(throws: SQLUniqueViolation.self) { try await repo.insert(Self.record("s1")) }
            await #expect(throws: SproutError.self) { try await repo.owned("s2", team: "t") }
            #expect(try await repo.owned("s1", team: "t").id == "s1")

            let (running, action) = try await repo.transition("s1", .started(pooled: false)) { $0.slot = 7 }
            #expect(running.state == .running && running.slot == 7 && running.version == 1 && action == .none)
            // A stale version is a conflict and changes nothing.
            await #expect(throws: SproutError.self) { try await repo.transition("s1", .pause(memory: true), expecting: 0) }
            // An event the machine refuses is a conflict and changes nothing.
            await #expect(throws: SproutError.self) { try await repo.transition("s1", .claimed) }
            #expect(try await repo.find("s1")?.version == 1)
            let (pausing, checkpoint) = try await repo.transition("s1", .pause(memory: false), expecting: 1, note: "asked")
            #expect(pausing.state == .pausing && checkpoint == .stopContainer)
            try await repo.transition("s1", .checkpointed) { $0.images = ["img-1"] }
            #expect(try await repo.find("s1")?.lastPauseFilesOnly == true)
            #expect(try await repo.events("s1").map(\.kind) == ["creating", "running", "pausing", "paused"])
            #expect(try await repo.events("s1")[2].message == "running -> pausing: asked")

            #expect(try await repo.pausedCount(team: "t") == 1)
            #expect(try await repo.referencedImages() == ["img-1"])
            #expect(try await repo.mountedEnvs() == ["empty"], "s2 is creating: mounted; s1 is paused: not")
            #expect(try await repo.countsByState() == ["paused": 1, "creating": 1])
            #expect(try await repo.all(in: [.paused, .creating]).map(\.id).sorted() == ["s1", "s2"])
            #expect(try await repo.list(team: "u", includeEnded: true).map(\.id) == ["s2"])

            // The supervisor's questions: expired running ones, idle-pausing ones.
            try await repo.transition("s2", .started(pooled: false)) { $0.expiresAt = 10; $0.idlePauseSeconds = 30 }
            #expect(try await repo.expired(before: 11).map(\.id) == ["s2"])
            #expect(try await repo.expired(before: 10).isEmpty)
            #expect(try await repo.idlePausing().map(\.id) == ["s2"])
            try await repo.modify("s2") { $0.idlePauseSeconds = nil; $0.expiresAt = nil }
            #expect(try await repo.idlePausing().isEmpty, "nil clears the column")
            #expect(try await repo.expired(before: 1e12).isEmpty, "nil clears the column")
            // A throwing edit leaves the record as it was.
            await #expect(throws: SproutError.self) { try await repo.modify("s2") { _ in throw SproutError(.conflict, "no") } }
            #expect(try await repo.find("s2")?.version == 2)

            try await repo.transition("s2", .kill)
            try await repo.transition("s2", .tornDown)
            #expect(try await repo.list(team: "u", includeEnded: false).isEmpty)
            #expect(try await repo.list(team: "u", includeEnded: true).map(\.state) == [.killed])

            // The warm pool: the oldest pooled sandbox of the env and runtime is claimed, once.
            for (id, created) in [("p2", 20.0), ("p1", 10.0)] {
                var pooled = Self.record(id, env: "warm")
                pooled.createdAt = created
                try await repo.insert(pooled)
                try await repo.transition(id, .started(pooled: true))
            }
            #expect(try await repo.claim(env: "warm", runtime: "runsc") { _ in } == nil, "another runtime's pool")
            #expect(try await repo.claim(env: "warm", runtime: "runc") { $0.team = "claimer" }?.id == "p1")
            #expect(try await repo.find("p1")?.team == "claimer")
            #expect(try await repo.claim(env: "warm", runtime: "runc") { _ in }?.id == "p2")
            #expect(try await repo.claim(env: "warm", runtime: "runc") { _ in } == nil)

            try await repo.delete("p1")
            #expect(try await repo.find("p1") == nil)
            #expect(try await repo.events("p1").isEmpty)
        }
    }

    @Test("writes are serialized: 24 concurrent read-modify-writes of one record lose no update", arguments: CatalogBackend.usable)
    func noLostUpdates(_ backend: CatalogBackend) async throws {
        try await backend.with { catalog, open in
            try await catalog.sandboxes.insert(Self.record("s1"))
            // Two catalogs on one database (two servers on one PostgreSQL, or two pools on one SQLite file).
            let other = try await open()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<24 {
                    let repo = (i % 2 == 0 ? catalog : other).sandboxes
                    group.addTask {
                        try await repo.modify("s1") { record in
                            record.metadata["n"] = String(Int(record.metadata["n"] ?? "0")! + 1)
                        }
                    }
                }
                try await group.waitForAll()
            }
            await other.close()
            let record = try #require(try await catalog.sandboxes.find("s1"))
            #expect(record.metadata["n"] == "24" && record.version == 24)
        }
    }

    @Test("envs: lookup by id and newest published name, built-ins, tags, tombstones and their purge, the step cache; builds; volumes; keys; blobs",
          arguments: CatalogBackend.usable)
    func envsAndTheRest(_ backend: CatalogBackend) async throws {
        try await backend.with { catalog, _ in
            let envs = catalog.envs
            let first = try await envs.insertIfAbsent(Self.env("app-1", name: "app", createdAt: 1))
            #expect(try await envs.insertIfAbsent(Self.env("app-1", name: "changed", createdAt: 9)).name == first.name, "the stored one wins")
            _ = try await envs.insertIfAbsent(Self.env("app-2", name: "app", parent: "app-1", createdAt: 2))
            _ = try await envs.insertIfAbsent(Self.env("app-3", name: "app", parent: "app-2", createdAt: 3, published: false))
            _ = try await envs.insertIfAbsent(Self.env("base-x", name: "base", team: BuiltinEnvs.team, createdAt: 1))
            #expect(try await envs.find("app-1")?.ownBytes == 5_000_000_000, "a 64-bit column")
            #expect(try await envs.lookup("app", team: "t")?.id == "app-2", "the newest published")
            #expect(try await envs.newest(named: "app", team: "t")?.id == "app-3", "published or not")
            #expect(try await envs.lookup("app", team: "other") == nil)
            #expect(try await envs.lookup("base", team: "other")?.id == "base-x", "built-ins for every team")
            #expect(try await envs.superseded(["app-1", "app-2"]) == ["app-1"])
            #expect(try await envs.setPublished("app-3", true, team: "t").published)
            #expect(try await envs.lookup("app", team: "t")?.id == "app-3")
            #expect(try await envs.drafts(named: "app", team: "t") == 3)
            #expect(try await envs.referencedLayers() == ["l-app-1", "l-app-2", "l-app-3", "l-base-x"])

            try await envs.tag("app", ["v1", "prod"], envID: "app-1", team: "t", at: 5)
            try await envs.tag("app", ["prod"], envID: "app-2", team: "t", at: 6)
            #expect(try await envs.tagged("app", "prod", team: "t") == "app-2", "a tag moves")
            #expect(try await envs.tags(of: "app", team: "t").map(\.tag) == ["v1", "prod"])
            #expect(try await envs.untag("app", ["prod", "missing"], team: "t") == 1)

            // Deleted while a sandbox runs from it: hidden, kept, purged once nothing holds it.
            try await catalog.sandboxes.insert(Self.record("s1", env: "app-3"))
            try await catalog.sandboxes.transition("s1", .started(pooled: false))
            try await envs.markDeleted(["app-3"])
            #expect(try await envs.lookup("app-3", team: "t") == nil)
            #expect(try await envs.lookup("app-3", team: "t", includeDeleted: true)?.id == "app-3")
            #expect(try await envs.lookup("app", team: "t")?.id == "app-2")
            #expect(try await envs.purgeDeleted() == 0, "a sandbox runs from it")
            try await catalog.sandboxes.transition("s1", .kill)
            try await catalog.sandboxes.transition("s1", .tornDown)
            try await envs.markDeleted(["app-2"])
            #expect(try await envs.purgeDeleted() == 2, "app-3, then app-2 which only app-3 forked")
            #expect(try await envs.find("app-1") != nil)

            try await envs.rememberLayer("k1", "layer-a")
            try await envs.rememberLayer("k1", "layer-b")
            #expect(try await envs.cachedLayer("k1") == "layer-b")
            try await envs.forgetLayers(["layer-b"])
            #expect(try await envs.cachedLayer("k1") == nil)

            // Builds: the running one of a name (`_` in a name is not a wildcard), transitions, a restart's interruption.
            let builds = catalog.builds
            try await builds.insert(BuildRecord(id: "b1", team: "t", envID: "a_b-123", steps: 2))
            try await builds.insert(BuildRecord(id: "b2", team: "t", envID: "axb-123", steps: 2))
            #expect(try await builds.running(named: "a_b", team: "t")?.id == "b1")
            #expect(try await builds.running(named: "a%", team: "t") == nil)
            let (done, _) = try await builds.transition("b1", .succeeded) { $0.cachedSteps = 1; $0.warnings = ["w"] }
            #expect(done.status == .succeeded && done.finishedAt != nil && done.version == 1)
            await #expect(throws: SproutError.self) { try await builds.transition("b1", .failed) }
            #expect(try await builds.interruptAll() == ["b2"])
            #expect(try await builds.find("b2")?.status == .failed)
            #expect(try await builds.list(team: "t", env: "a_b-123", limit: 5).map(\.warnings) == [["w"]])

            // Volumes: a name is unique in its team; the sandboxes that mount one.
            let volumes = catalog.volumes
            try await volumes.insert(VolumeRecord(id: "v1", team: "t", name: "data", sizeMB: 10, createdAt: 1))
            await #expect(throws: SproutError.self) { try await volumes.insert(VolumeRecord(id: "v2", team: "t", name: "data", sizeMB: 1, createdAt: 1)) }
            try await volumes.insert(VolumeRecord(id: "v3", team: "u", name: "data", sizeMB: 1, createdAt: 1))
            #expect(try await volumes.find("data", team: "u")?.id == "v3")
            var mounting = Self.record("s9")
            mounting.volumes = [VolumeMount(volume: "v1", name: "data", path: "/data", readOnly: false)]
            try await catalog.sandboxes.insert(mounting)
            #expect(try await volumes.users("v1") == ["s9"])
            #expect(try await volumes.users("v3").isEmpty)
            try await volumes.delete("v3")
            #expect(try await volumes.all().map(\.id) == ["v1"])

            // Keys and blobs.
            let keys = KeyStore(catalog: catalog)
            let key = try await keys.create(name: "k", team: "t", admin: true)
            #expect(try await keys.authenticate(key.secret)?.admin == true)
            _ = try await keys.revoke(id: key.key.id)
            #expect(try await keys.authenticate(key.secret) == nil)
            #expect(try await keys.count() == 1)
            #expect(try await keys.list().first?.revokedAt != nil)
            try await catalog.recordBlob(team: "t", digest: "d1", size: 1)
            try await catalog.recordBlob(team: "t", digest: "d1", size: 1)
            #expect(try await catalog.blobsOwned(by: "t") == ["d1"])
            #expect(try await catalog.blobsOwned(by: "u").isEmpty)
        }
    }

    @Test("the same migrations on both: a new catalog runs them all, one opened again runs none", arguments: CatalogBackend.usable)
    func migrations(_ backend: CatalogBackend) async throws {
        try await backend.with { catalog, open in
            #expect(try await CatalogMigrations.migrate(catalog.db).isEmpty)
            let table = CatalogMigrations.table(catalog.db.dialect)
            #expect(try await catalog.db.read { try await $0.strings("SELECT identifier FROM \(table)") }.sorted()
                == CatalogMigrations.all.map(\.name).sorted())
            try await catalog.sandboxes.insert(Self.record("kept"))
            let again = try await open()
            #expect(try await again.sandboxes.find("kept") != nil)
            await again.close()
        }
    }
}
