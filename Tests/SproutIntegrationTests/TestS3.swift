import Foundation
import Glibc
import SproutCore
import SproutS3
import SproutSystem

/// A real S3 server of a test's own (OpenStack Swift's s3api: `LocalS3`) in
/// a temporary directory, with a client of `bucket`; both ended and the
/// directory removed after `body`, also when it throws.
func withTestS3(bucket: String, prefix: String = "", partSize: Int = 16 << 20, _ body: (LocalS3, S3Client) async throws -> Void) async throws {
    let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-s3")
    defer { try? FileSystem.removeTree(directory) }
    let server = try await LocalS3(directory: directory)
    defer { server.stop() }
    let client = S3Client(location: server.location(bucket: bucket, prefix: prefix), credentials: server.credentials, partSize: partSize)
    do {
        try await body(server, client)
    } catch {
        await client.shutdown()
        throw error
    }
    await client.shutdown()
}
