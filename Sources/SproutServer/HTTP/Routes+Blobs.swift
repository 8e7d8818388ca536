import Foundation
import Hummingbird
import NIOCore
import SproutAPI
import SproutAgentClient
import SproutCore
import SproutStore
import SproutSystem

/// `/v1/blobs`: upload only what the server lacks. A team sees a blob as
/// present only once it uploaded it itself, so blob ids do not leak across
/// teams, while the bytes are stored once.
struct BlobRoutes {
    let catalog: Catalog
    let store: BlobStore
    let maxUploadBytes: Int64

    func register(on group: RouterGroup<SproutContext>) {
        group.post("blobs/missing") { request, context in
            let team = try context.caller().team
            let body = try await JSONBody.decode(API.BlobList.self, from: request)
            guard body.digests.count <= 100_000 else { throw SproutError(.tooLarge, "at most 100000 digests per request") }
            for digest in body.digests where !BlobStore.isDigest(digest) {
                throw SproutError(.invalidArgument, "not a sha256 hex digest: \(digest.prefix(80))")
            }
            let owned = try await catalog.blobsOwned(by: team)
            let missing = Array(Set(body.digests.filter { !owned.contains($0) || !store.contains($0) })).sorted()
            return try JSONBody.response(API.BlobList(digests: missing))
        }
        group.put("blobs/:digest") { request, context in
            let team = try context.caller().team
            let digest = try context.parameters.require("digest")
            if let length = request.headers[.contentLength].flatMap({ Int64($0) }), length > maxUploadBytes {
                throw SproutError(.tooLarge, "blob of \(length) bytes exceeds the limit of \(maxUploadBytes)")
            }
            let writer = try store.writer(for: digest)
            // Disk writes (and the final fsync) go through a thread of their own.
            let thread = WorkerThread()
            defer { thread.close() }
            do {
                for try await buffer in request.body {
                    let bytes = Array(buffer.readableBytesView)
                    try await thread.run { try bytes.withUnsafeBytes { try writer.write($0) } }
                    guard writer.size <= maxUploadBytes else {
                        throw SproutError(.tooLarge, "blob exceeds the limit of \(maxUploadBytes) bytes")
                    }
                }
                try await thread.run { try writer.commit() }
            } catch {
                writer.abort()
                throw error
            }
            let size = writer.size
            try await catalog.recordBlob(team: team, digest: digest, size: size)
            return try JSONBody.response(["size": size], status: .created)
        }
    }
}
