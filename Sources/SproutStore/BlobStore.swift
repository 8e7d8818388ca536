import Crypto
import Foundation
import Glibc
import SproutCore
import SproutSystem

/// Content-addressed file blobs (what `sprout env push` uploads), stored
/// once each under their SHA-256. A blob is written to a temporary file while
/// its hash is computed and only renamed into place if the hash matches the
/// one it was announced under: a bad upload stores nothing.
public struct BlobStore: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public func path(_ digest: String) -> String { "\(root)/\(digest.prefix(2))/\(digest)" }

    public func contains(_ digest: String) -> Bool { FileSystem.exists(path(digest)) }

    public static func isDigest(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// An upload in progress.
    public final class Writer: @unchecked Sendable {
        let store: BlobStore
        let digest: String
        let temp: String
        let file: HashingFile
        public var size: Int64 { file.size }
        var done = false

        init(store: BlobStore, digest: String) throws {
            self.store = store
            self.digest = digest
            try FileSystem.makeDirectories(store.root + "/" + String(digest.prefix(2)))
            temp = "\(store.root)/.upload-\(Identifiers.random(length: 10))"
            file = try HashingFile(creating: temp, exclusive: true)
        }

        deinit { abort() }

        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            try file.write(bytes)
        }

        /// Checks the hash and stores the blob; throws (and stores nothing) on a mismatch.
        public func commit() throws {
            guard !done else { return }
            done = true
            defer { unlink(temp) }
            let actual = file.digest()
            guard actual == digest else {
                throw SproutError(.invalidArgument, "content does not match sha256 \(digest) (it hashes to \(actual)); nothing stored")
            }
            try file.sync()
            if !store.contains(digest) {
                try sysCall("store blob \(digest)") { rename(temp, store.path(digest)) }
            }
        }

        public func abort() {
            guard !done else { return }
            done = true
            unlink(temp)
        }
    }

    /// Stores the file at `path` (its SHA-256 `digest`) unless the store has it.
    public func importFile(_ path: String, digest: String) throws {
        guard !contains(digest) else { return }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system("open \(path)") }
        defer { close(fd) }
        let writer = try writer(for: digest)
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = try Descriptor.read(fd, into: chunk.baseAddress!, count: chunk.count)
            if n == 0 { break }
            try writer.write(UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
        }
        try writer.commit()
    }

    public func writer(for digest: String) throws -> Writer {
        guard Self.isDigest(digest) else { throw SproutError(.invalidArgument, "not a sha256 hex digest: \(digest.prefix(80))") }
        return try Writer(store: self, digest: digest)
    }
}
