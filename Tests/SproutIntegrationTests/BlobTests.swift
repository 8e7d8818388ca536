import Crypto
import Foundation
import SproutClient
import SproutCore
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("blobs")
    struct BlobTests {
        func sha256(_ bytes: [UInt8]) -> String { hexString(SHA256.hash(data: Data(bytes))) }

        @Test("upload only what is missing; a blob whose content does not match its hash is rejected and stores nothing")
        func missingAndVerified() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let a = Array("hello blob".utf8)
                let b = Identifiers.randomBytes(200_000)
                let (da, db) = (sha256(a), sha256(b))
                #expect(Set(try await api.missingBlobs([da, db])) == [da, db])
                try await api.uploadBlob(da, bytes: a)
                #expect(try await api.missingBlobs([da, db]) == [db])

                // Wrong content under b's name: refused, nothing stored.
                await #expect(throws: SproutError.self) { try await api.uploadBlob(db, bytes: a) }
                #expect(try await api.missingBlobs([db]) == [db])
                let stored = try FileManager.default.subpathsOfDirectory(atPath: server.data + "/blobs").filter { $0.contains(db) || $0.contains(".upload-") }
                #expect(stored.isEmpty, "\(stored)")
                try await api.uploadBlob(db, bytes: b)
                #expect(try await api.missingBlobs([da, db]).isEmpty)

                // Another team does not learn which blobs exist: it must upload them itself.
                let other = server.client(key: try await api.createKey(API.CreateKey(team: "other")).secret)
                #expect(try await other.missingBlobs([da]) == [da])
                await #expect(throws: SproutError(.invalidArgument, "not a sha256 hex digest: ../../etc/passwd")) {
                    try await api.missingBlobs(["../../etc/passwd"])
                }
            }
        }
    }
}
