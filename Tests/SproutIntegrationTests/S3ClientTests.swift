import Foundation
import Glibc
import SproutCore
import SproutS3
import SproutSystem
import Testing

/// Sprout's S3 client against a real S3 server (OpenStack Swift with its
/// s3api, from Debian), started by the test in a temporary directory. No
/// sandboxes: it runs beside the lanes.
@Suite("S3 client against OpenStack Swift's s3api", .timeLimit(.minutes(5)))
struct S3ClientTests {
    /// Runs `body` with a fresh server and a client of its bucket, made (twice: the second finds it is ours already).
    static func withServer(_ body: (LocalS3, S3Client) async throws -> Void) async throws {
        try await withTestS3(bucket: "sprout-test", prefix: "envs", partSize: 5 << 20) { server, client in
            try await client.createBucket()
            try await client.createBucket()
            try await body(server, client)
        }
    }

    @Test("put, get, head, list, delete; a file in parts comes back whole and checked; keys with spaces and UTF-8")
    func objects() async throws {
        try await Self.withServer { server, client in
            try await client.put("a/one.txt", bytes: Array("one".utf8))
            try await client.put("a/été x+y.txt", bytes: Array("two".utf8))
            try await client.put("b/three", bytes: [])
            #expect(try await client.get("a/one.txt") == Array("one".utf8))
            #expect(try await client.get("a/été x+y.txt") == Array("two".utf8))
            #expect(try await client.get("missing") == nil)
            #expect(try await client.head("a/one.txt") == 3)
            #expect(try await client.head("b/three") == 0)
            #expect(try await client.head("missing") == nil)
            #expect(try await client.list(prefix: "a/").map(\.key) == ["a/one.txt", "a/été x+y.txt"])
            #expect(try await client.list().map(\.size) == [3, 3, 0])

            // 12 MiB of varied bytes: three parts of a multipart upload.
            let path = server.directory + "/big.bin"
            var bytes = [UInt8](repeating: 0, count: 12 << 20)
            for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2654435761 >> 13) }
            try FileSystem.writeAtomically(path, bytes)
            let sha = SigV4.payloadHash(bytes)
            let before = client.requestCount
            try await client.put("big.bin", file: path)
            #expect(client.requestCount - before == 5, "begin, three parts, complete")
            #expect(try await client.head("big.bin") == Int64(bytes.count))
            let back = server.directory + "/back.bin"
            #expect(try await client.download("big.bin", to: back, sha256: sha) == Int64(bytes.count))
            #expect(try Descriptor.readFile(back, limit: 16 << 20) == bytes)
            // A digest the bytes do not have is refused.
            await #expect(throws: SproutError.self) { _ = try await client.download("big.bin", to: back, sha256: String(repeating: "0", count: 64)) }

            try await client.delete("a/one.txt")
            try await client.delete("a/one.txt")  // gone already: fine
            #expect(try await client.get("a/one.txt") == nil)
            #expect(try await client.list(prefix: "a/").map(\.key) == ["a/été x+y.txt"])
        }
    }

    @Test("times of last writing from a listing and a HEAD agree; a touch (copy onto itself) keeps the bytes and does not move the time back; a missing key's touch is false")
    func touch() async throws {
        try await Self.withServer { _, client in
            let started = Date()
            try await client.put("t/é x.bin", bytes: Array("kept".utf8))
            let listed = try #require(try await client.list(prefix: "t/").first)
            let headed = try #require(try await client.info("t/é x.bin"))
            let written = try #require(listed.lastModified)
            #expect(abs(written.timeIntervalSince(started)) < 600, "the store's time of writing: \(written), the test's: \(started)")
            #expect(headed.size == 4)
            #expect(abs(try #require(headed.lastModified).timeIntervalSince(written)) < 1, "HEAD's Last-Modified is the listing's (to the second)")
            #expect(try await client.touch("t/é x.bin"))
            #expect(try await client.get("t/é x.bin") == Array("kept".utf8))
            let renewed = try #require(try await client.info("t/é x.bin")?.lastModified)
            #expect(renewed >= written.addingTimeInterval(-1))
            #expect(try await client.list(prefix: "t/").count == 1)
            #expect(try await client.touch("t/missing") == false)
            #expect(try await client.info("t/missing") == nil)
        }
    }

    @Test("a wrong secret is refused as unauthorized (the right one, same request, succeeds); a stopped server is unavailable")
    func refusals() async throws {
        try await Self.withServer { server, client in
            try await client.put("k", bytes: [1, 2, 3])
            #expect(try await client.get("k") == [1, 2, 3])  // the control: the right key works
            let wrong = S3Client(location: client.location, credentials: S3Credentials(accessKey: server.credentials.accessKey, secretKey: "wrong"))
            let refused: Result<[UInt8]?, Error>
            do { refused = .success(try await wrong.get("k")) } catch { refused = .failure(error) }
            await wrong.shutdown()
            #expect(throws: SproutError.self) { try refused.get() }
            if case .failure(let error as SproutError) = refused {
                #expect(error.code == .unauthorized && error.message.contains("SignatureDoesNotMatch"), "\(error)")
            }
            server.stop()
            do {
                try await client.put("k2", bytes: [1])
                Issue.record("a put to a stopped server succeeded")
            } catch let error as SproutError {
                #expect(error.code == .unavailable, "\(error)")
            }
        }
    }
}
