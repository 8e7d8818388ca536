import Foundation
import GRDB
import SproutAPI
import SproutCore
@testable import SproutServer
import Testing

@Suite("Unit: catalog columns")
struct CatalogTests {
    static func withCatalog(_ body: (Catalog) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sprout-catalog-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await body(try Catalog(path: directory + "/catalog.db"))
    }

    static func record(_ id: String) -> SandboxRecord {
        SandboxRecord(
            id: id, team: "t", env: "empty", runtime: "runc", createdAt: 1, expiresAt: 2, cpu: 1, memoryMB: 64, internet: false,
            metadata: ["b": "2", "a": "1"], envVars: ["HOME": "/root"], slot: nil, agentToken: "x", egress: ["10.0.0.0/8"], diskMB: nil)
    }

    @Test("lists and maps are stored as JSON text (the format older catalogs hold) and read back as they were")
    func roundTrip() async throws {
        try await Self.withCatalog { catalog in
            try await catalog.sandboxes.insert(Self.record("s1"))
            let stored = try await catalog.db.read { db in
                try Row.fetchOne(db, sql: "SELECT metadata, envVars, egress FROM sandbox WHERE id = 's1'")
            }
            #expect(stored?["metadata"] as String? == #"{"a":"1","b":"2"}"#)
            #expect(stored?["egress"] as String? == #"["10.0.0.0\/8"]"# || stored?["egress"] as String? == #"["10.0.0.0/8"]"#)
            let read = try #require(try await catalog.sandboxes.find("s1"))
            #expect(read.metadata == ["a": "1", "b": "2"])
            #expect(read.envVars == ["HOME": "/root"])
            #expect(read.egressList == ["10.0.0.0/8"])
            #expect(read.imageList.isEmpty)
        }
    }

    @Test("a column that is not the JSON it should be is an error, not an empty value")
    func damagedColumn() async throws {
        try await Self.withCatalog { catalog in
            try await catalog.sandboxes.insert(Self.record("s2"))
            // Positive control: the row reads before it is damaged.
            #expect(try await catalog.sandboxes.find("s2")?.metadata == ["a": "1", "b": "2"])
            try await catalog.db.write { db in
                try db.execute(sql: "UPDATE sandbox SET metadata = 'not json' WHERE id = 's2'")
            }
            await #expect(throws: (any Error).self) { try await catalog.sandboxes.find("s2") }
        }
    }
}
