import Crypto
import Foundation
import Glibc
import SproutCore
import SproutSystem

/// Memory images (gVisor checkpoints), stored as content-defined chunks so
/// that images sharing content share storage.
///
/// An image is a manifest (`manifests/<id>.json`: the file's size and its
/// chunks in order) over chunks stored once by SHA-256 (`chunks/ab/<digest>`).
/// Chunk boundaries come from a gear rolling hash, so an insertion shifts
/// boundaries only locally and the chunks after it are found again.
/// Restoring needs the whole file: `materialize` reassembles it and checks
/// every chunk's digest on the way, so a damaged image is an error, never a
/// sandbox restored from wrong memory.
public struct ImageStore: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public struct Manifest: Codable, Sendable {
        public var size: Int64
        /// (digest, length) of each chunk, in file order.
        public var chunks: [Chunk]
        public struct Chunk: Codable, Sendable {
            public var digest: String
            public var length: Int
        }
    }

    public struct Stored: Sendable {
        public var id: String
        public var size: Int64
        /// Bytes of chunks this image added to the store.
        public var newBytes: Int64
    }

    var manifests: String { root + "/manifests" }
    var chunkRoot: String { root + "/chunks" }
    func manifestPath(_ id: String) -> String { "\(manifests)/\(id).json" }
    func chunkPath(_ digest: String) -> String { "\(chunkRoot)/\(digest.prefix(2))/\(digest)" }

    public func contains(_ id: String) -> Bool { FileSystem.exists(manifestPath(id)) }

    /// Chunks `file` into the store. The manifest is written last (and
    /// atomically), so an image either exists whole or not at all.
    public func store(file: String) throws -> Stored {
        try FileSystem.makeDirectories(manifests, mode: 0o700)
        try FileSystem.makeDirectories(chunkRoot, mode: 0o700)
        let data = try Descriptor.readFile(file, limit: 64 << 30)
        var chunks: [Manifest.Chunk] = []
        var newBytes: Int64 = 0
        try data.withUnsafeBytes { bytes in
            for range in Self.boundaries(bytes) {
                let slice = UnsafeRawBufferPointer(rebasing: bytes[range])
                let digest = hexString(SHA256.hash(data: slice))
                let path = chunkPath(digest)
                if !FileSystem.exists(path) {
                    try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent, mode: 0o700)
                    try FileSystem.writeAtomically(path, Array(slice), mode: 0o600)
                    newBytes += Int64(slice.count)
                }
                chunks.append(Manifest.Chunk(digest: digest, length: slice.count))
            }
        }
        let manifest = Manifest(size: Int64(data.count), chunks: chunks)
        let encoded = try JSONEncoder().encode(manifest)
        let id = "img_" + String(hexString(SHA256.hash(data: encoded)).prefix(32))
        try FileSystem.writeAtomically(manifestPath(id), Array(encoded), mode: 0o600)
        return Stored(id: id, size: manifest.size, newBytes: newBytes)
    }

    public func manifest(_ id: String) throws -> Manifest {
        guard Identifiers.isSafeName(id), let bytes = try? Descriptor.readFile(manifestPath(id), limit: 64 << 20) else {
            throw SproutError(.notFound, "memory image \(id) is missing")
        }
        do {
            return try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        } catch {
            throw SproutError(.io, "memory image \(id) is corrupted: its manifest cannot be read")
        }
    }

    /// Reassembles image `id` into `path`, checking every chunk. Throws (and
    /// leaves nothing at `path`) if a chunk is missing or damaged.
    public func materialize(_ id: String, to path: String) throws {
        let manifest = try manifest(id)
        let temp = path + ".part"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SproutError.system("create \(temp)") }
        do {
            defer { close(fd) }
            for (index, chunk) in manifest.chunks.enumerated() {
                guard let bytes = try? Descriptor.readFile(chunkPath(chunk.digest), limit: chunk.length + 1) else {
                    throw SproutError(.io, "memory image \(id) is corrupted: chunk \(index) (\(chunk.digest.prefix(12))) is missing")
                }
                guard bytes.count == chunk.length, hexString(SHA256.hash(data: bytes)) == chunk.digest else {
                    throw SproutError(.io, "memory image \(id) is corrupted: chunk \(index) (\(chunk.digest.prefix(12))) does not match its digest")
                }
                try Descriptor.writeAll(fd, bytes)
            }
        } catch {
            unlink(temp)
            throw error
        }
        guard rename(temp, path) == 0 else {
            unlink(temp)
            throw SproutError.system("rename \(temp)")
        }
    }

    /// Removes every manifest not in `keep`, then every chunk no kept
    /// manifest uses. Returns the bytes freed.
    @discardableResult
    public func collect(keep: Set<String>) -> Int64 {
        let names = (try? FileSystem.children(manifests)) ?? []
        var used: Set<String> = []
        for name in names where name.hasSuffix(".json") {
            let id = String(name.dropLast(5))
            if keep.contains(id), let manifest = try? manifest(id) {
                used.formUnion(manifest.chunks.map(\.digest))
            } else if !keep.contains(id) {
                unlink(manifestPath(id))
            }
        }
        var freed: Int64 = 0
        for prefix in (try? FileSystem.children(chunkRoot)) ?? [] {
            let dir = "\(chunkRoot)/\(prefix)"
            for digest in (try? FileSystem.children(dir)) ?? [] where !used.contains(digest) {
                var st = stat()
                if stat("\(dir)/\(digest)", &st) == 0 { freed += Int64(st.st_size) }
                unlink("\(dir)/\(digest)")
            }
        }
        return freed
    }

    /// Logical bytes (sum of image sizes) and stored bytes (unique chunks) of `ids`.
    public func usage(_ ids: [String]) -> (logical: Int64, stored: Int64) {
        var logical: Int64 = 0
        var unique: [String: Int] = [:]
        for id in ids {
            guard let manifest = try? manifest(id) else { continue }
            logical += manifest.size
            for chunk in manifest.chunks { unique[chunk.digest] = chunk.length }
        }
        return (logical, Int64(unique.values.reduce(0, +)))
    }

    // MARK: Chunking

    /// Average chunk ≈ 64 KiB, never below 16 KiB or above 256 KiB.
    static let minChunk = 16 << 10
    static let maxChunk = 256 << 10
    static let mask: UInt64 = (1 << 16) - 1

    /// A fixed table of 256 pseudo-random words (splitmix64 from a constant
    /// seed): boundaries must be the same on every host and every run.
    static let gear: [UInt64] = {
        var state: UInt64 = 0x5350_524F_5554_0001
        return (0..<256).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }()

    /// Content-defined chunk ranges of `bytes`.
    static func boundaries(_ bytes: UnsafeRawBufferPointer) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        let count = bytes.count
        var start = 0
        gear.withUnsafeBufferPointer { gear in
            while start < count {
                let end = min(start + maxChunk, count)
                var cut = end
                var hash: UInt64 = 0
                var i = start + min(minChunk, end - start)
                while i < end {
                    hash = (hash << 1) &+ gear[Int(bytes[i])]
                    i += 1
                    if hash >> 48 & mask == 0 {
                        cut = i
                        break
                    }
                }
                ranges.append(start..<cut)
                start = cut
            }
        }
        return ranges
    }
}
