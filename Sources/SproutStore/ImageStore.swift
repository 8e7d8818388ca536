import CZlib
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
///
/// gVisor compresses its images (a header, then the state in 1 MiB blocks,
/// each raw deflate): compressed bytes share nothing from one image to the
/// next. So an image in that format is stored opened up: the header as is,
/// the state decompressed and chunked; reassembly compresses the blocks
/// again (level 0, stored blocks: restore is then fastest). A file that is
/// not in that format is chunked as it is.
public struct ImageStore: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    public struct Manifest: Codable, Sendable {
        public var size: Int64
        /// (digest, length) of each chunk, in file order; for a gVisor
        /// image, of its decompressed state.
        public var chunks: [Chunk]
        /// Set for a gVisor image: its header and the block size of its compressed stream.
        public var gvisor: GVisorLayout?
        public struct GVisorLayout: Codable, Sendable {
            public var header: [Chunk]
            public var blockSize: Int
        }

        /// Every chunk the image uses, header included.
        var allChunks: [Chunk] { chunks + (gvisor?.header ?? []) }
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
        var newBytes: Int64 = 0
        var manifest: Manifest
        if let opened = Self.openGVisorImage(data) {
            let header = try storeChunks(opened.header, newBytes: &newBytes)
            manifest = Manifest(size: Int64(data.count), chunks: try storeChunks(opened.state, newBytes: &newBytes),
                                gvisor: .init(header: header, blockSize: opened.blockSize))
        } else {
            manifest = Manifest(size: Int64(data.count), chunks: try storeChunks(data, newBytes: &newBytes), gvisor: nil)
        }
        let encoded = try JSONEncoder().encode(manifest)
        let id = "img_" + String(hexString(SHA256.hash(data: encoded)).prefix(32))
        try FileSystem.writeAtomically(manifestPath(id), Array(encoded), mode: 0o600)
        return Stored(id: id, size: manifest.size, newBytes: newBytes)
    }

    private func storeChunks(_ data: [UInt8], newBytes: inout Int64) throws -> [Manifest.Chunk] {
        var chunks: [Manifest.Chunk] = []
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
        return chunks
    }

    // MARK: gVisor's image format

    /// A gVisor (runsc 2022) state file: "gVisorSF", the metadata length
    /// (8 bytes, big-endian), the metadata, its HMAC (32 bytes), the block
    /// size (4 bytes), then blocks of [length (4 bytes)][raw deflate]. Returns
    /// the header (everything before the first block) and the decompressed
    /// state, or nil if `data` is not exactly that.
    static func openGVisorImage(_ data: [UInt8]) -> (header: [UInt8], state: [UInt8], blockSize: Int)? {
        guard data.count > 60, data.starts(with: Array("gVisorSF".utf8)) else { return nil }
        func bigEndian(_ at: Int, _ width: Int) -> Int {
            data[at..<(at + width)].reduce(0) { $0 << 8 | Int($1) }
        }
        let metadataLength = bigEndian(8, 8)
        let headerLength = 16 + metadataLength + 32 + 4
        guard metadataLength < 1 << 20, data.count >= headerLength else { return nil }
        let blockSize = bigEndian(headerLength - 4, 4)
        guard blockSize > 0 && blockSize <= 64 << 20 else { return nil }
        var state: [UInt8] = []
        state.reserveCapacity(data.count * 3)
        var block = [UInt8](repeating: 0, count: blockSize)
        var offset = headerLength
        while offset < data.count {
            guard offset + 4 <= data.count else { return nil }
            let length = bigEndian(offset, 4)
            offset += 4
            guard length > 0, offset + length <= data.count else { return nil }
            let produced = data.withUnsafeBufferPointer { input in
                block.withUnsafeMutableBufferPointer { out in
                    czlib_inflate_raw(input.baseAddress! + offset, length, out.baseAddress!, blockSize)
                }
            }
            // Every block but the last holds exactly blockSize bytes.
            guard produced > 0, produced == blockSize || offset + length == data.count else { return nil }
            state += block[0..<produced]
            offset += length
        }
        return (Array(data[0..<headerLength]), state, blockSize)
    }

    /// The state compressed again in the file's blocks (deflate level 0).
    static func closeGVisorImage(header: [UInt8], state: [UInt8], blockSize: Int) throws -> [UInt8] {
        var out = header
        out.reserveCapacity(header.count + state.count + state.count / blockSize * 16 + 64)
        var compressed = [UInt8](repeating: 0, count: czlib_deflate_bound(blockSize))
        var start = 0
        while start < state.count {
            let end = min(start + blockSize, state.count)
            let produced = state.withUnsafeBufferPointer { input in
                compressed.withUnsafeMutableBufferPointer { buffer in
                    czlib_deflate_raw(input.baseAddress! + start, end - start, buffer.baseAddress!, buffer.count, 0)
                }
            }
            guard produced > 0 else { throw SproutError(.internal, "cannot compress a memory image block") }
            let n = UInt32(produced)
            out += [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)]
            out += compressed[0..<produced]
            start = end
        }
        return out
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
        let bytes: [UInt8]
        if let layout = manifest.gvisor {
            let header = try read(id, layout.header, from: 0)
            let state = try read(id, manifest.chunks, from: layout.header.count)
            bytes = try Self.closeGVisorImage(header: header, state: state, blockSize: layout.blockSize)
        } else {
            bytes = try read(id, manifest.chunks, from: 0)
        }
        try FileSystem.writeAtomically(path, bytes, mode: 0o600)
    }

    /// The bytes of `chunks`, each checked against its digest (`first` numbers them in errors).
    private func read(_ id: String, _ chunks: [Manifest.Chunk], from first: Int) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunks.reduce(0) { $0 + $1.length })
        for (index, chunk) in chunks.enumerated() {
            guard let bytes = try? Descriptor.readFile(chunkPath(chunk.digest), limit: chunk.length + 1) else {
                throw SproutError(.io, "memory image \(id) is corrupted: chunk \(first + index) (\(chunk.digest.prefix(12))) is missing")
            }
            guard bytes.count == chunk.length, hexString(SHA256.hash(data: bytes)) == chunk.digest else {
                throw SproutError(.io, "memory image \(id) is corrupted: chunk \(first + index) (\(chunk.digest.prefix(12))) does not match its digest")
            }
            out += bytes
        }
        return out
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
                used.formUnion(manifest.allChunks.map(\.digest))
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

    /// Logical bytes (what the images hold in stored form: headers and
    /// decompressed state, before deduplication) and stored bytes (their
    /// distinct chunks) of `ids`.
    public func usage(_ ids: [String]) -> (logical: Int64, stored: Int64) {
        var logical: Int64 = 0
        var unique: [String: Int] = [:]
        for id in ids {
            guard let manifest = try? manifest(id) else { continue }
            for chunk in manifest.allChunks {
                logical += Int64(chunk.length)
                unique[chunk.digest] = chunk.length
            }
        }
        return (logical, Int64(unique.values.reduce(0, +)))
    }

    // MARK: Chunking

    /// Average chunk ≈ 16 KiB, never below 4 KiB or above 64 KiB. (Measured
    /// on 10 pauses of a busy sandbox: 64 KiB chunks stored 5.3× one image,
    /// 16 KiB 3.1×, 8 KiB 3.05× with twice the files.)
    static let minChunk = 4 << 10
    static let maxChunk = 64 << 10
    static let mask: UInt64 = (1 << 14) - 1

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
