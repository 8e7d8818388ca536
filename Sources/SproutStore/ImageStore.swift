import CompressNIO
import NIOCore
import Crypto
import Foundation
import Glibc
import SproutCore
import SproutSystem

/// Memory images (gVisor checkpoints), stored as content-defined chunks so
/// that images sharing content share storage.
///
/// A checkpoint is a directory of files (runsc 20240729 with `--compression
/// none` writes `checkpoint.img`, the kernel's state, and `pages.img` with
/// `pages_meta.img`, the memory). An image is a manifest
/// (`manifests/<id>.json`: each file's name, size and chunks in order) over
/// chunks stored once by SHA-256 (`chunks/ab/<digest>`). Chunk boundaries
/// come from a gear rolling hash, so an insertion shifts boundaries only
/// locally and the chunks after it are found again: two pauses of one
/// sandbox share most of their memory pages. Restoring needs the whole
/// files: `materialize` writes them back and checks every chunk's digest on
/// the way, so a damaged image is an error, never a sandbox restored from
/// wrong memory. Each chunk is stored compressed where that pays
/// (`ChunkCoding`): gVisor serialises its kernel state anew at every save,
/// so that part shares little from one pause to the next, but it compresses
/// several times over.
public struct ImageStore: Sendable {
    public let root: String
    /// What `usage` learned of each image (shared by copies of this value).
    private let usageCache = UsageCache()

    public init(root: String) {
        self.root = root
    }

    public struct Manifest: Codable, Sendable {
        public var files: [File]
        public struct File: Codable, Sendable {
            public var name: String
            public var size: Int64
            /// (digest, length) of each chunk, in file order.
            public var chunks: [Chunk]
        }
        public struct Chunk: Codable, Sendable {
            public var digest: String
            public var length: Int
        }

        public var size: Int64 { files.reduce(0) { $0 + $1.size } }
        var allChunks: [Chunk] { files.flatMap(\.chunks) }
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

    /// Chunks every regular file of `directory` into the store. The
    /// manifest is written last (and atomically), so an image either exists
    /// whole or not at all.
    public func store(directory: String) throws -> Stored {
        try FileSystem.makeDirectories(manifests, mode: 0o700)
        try FileSystem.makeDirectories(chunkRoot, mode: 0o700)
        var newBytes: Int64 = 0
        var files: [Manifest.File] = []
        for name in try FileSystem.children(directory).sorted() where FileSystem.isRegularFile(directory + "/" + name) {
            var size: Int64 = 0
            var chunks: [Manifest.Chunk] = []
            try Self.forEachChunk(of: directory + "/" + name) { chunk in
                let digest = hexString(SHA256.hash(data: chunk))
                let path = chunkPath(digest)
                if !FileSystem.exists(path) {
                    try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent, mode: 0o700)
                    let stored = try ChunkCoding.encode(chunk)
                    try FileSystem.writeAtomically(path, stored, mode: 0o600)
                    newBytes += Int64(stored.count)
                }
                chunks.append(Manifest.Chunk(digest: digest, length: chunk.count))
                size += Int64(chunk.count)
            }
            files.append(Manifest.File(name: name, size: size, chunks: chunks))
        }
        guard !files.isEmpty else { throw SproutError(.internal, "no checkpoint files in \(directory)") }
        let manifest = Manifest(files: files)
        let encoded = try JSONEncoder().encode(manifest)
        let id = Self.imageID(Array(encoded))
        try FileSystem.writeAtomically(manifestPath(id), Array(encoded), mode: 0o600)
        return Stored(id: id, size: manifest.size, newBytes: newBytes)
    }

    /// The manifest's bytes as stored (its digest names the image).
    public func manifestBytes(_ id: String) throws -> [UInt8] {
        guard Identifiers.isSafeName(id), let bytes = try? Descriptor.readFile(manifestPath(id), limit: 64 << 20) else {
            throw SproutError(.notFound, "memory image \(id) is missing")
        }
        return bytes
    }

    /// Stores manifest `bytes` as image `id`, once they prove to be its
    /// manifest (the id is their digest); its chunks must be stored first.
    public func putManifest(_ id: String, bytes: [UInt8]) throws {
        guard id == Self.imageID(bytes), (try? JSONDecoder().decode(Manifest.self, from: Data(bytes))) != nil else {
            throw SproutError(.malformed, "the manifest offered as memory image \(id) is not that image's")
        }
        try FileSystem.makeDirectories(manifests, mode: 0o700)
        try FileSystem.writeAtomically(manifestPath(id), bytes, mode: 0o600)
    }

    static func imageID(_ manifestBytes: [UInt8]) -> String { "img_" + String(hexString(SHA256.hash(data: manifestBytes)).prefix(32)) }

    public func containsChunk(_ digest: String) -> Bool { FileSystem.exists(chunkPath(digest)) }

    /// A chunk as stored (encoded: see `ChunkCoding`).
    public func storedChunk(_ digest: String) throws -> [UInt8] {
        try Descriptor.readFile(chunkPath(digest), limit: 2 * Self.maxChunk + 64)
    }

    /// Stores a chunk given in its stored form, once it decodes to `length`
    /// bytes whose SHA-256 is `digest`.
    public func putChunk(_ digest: String, stored: [UInt8], length: Int) throws {
        let decoded = try ChunkCoding.decode(stored, length: length)
        guard decoded.count == length, hexString(SHA256.hash(data: decoded)) == digest else {
            throw SproutError(.malformed, "a memory image chunk does not match its digest \(digest)")
        }
        let path = chunkPath(digest)
        if FileSystem.exists(path) { return }
        try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent, mode: 0o700)
        try FileSystem.writeAtomically(path, stored, mode: 0o600)
    }

    public func manifest(_ id: String) throws -> Manifest {
        let bytes = try manifestBytes(id)
        do {
            return try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        } catch {
            throw SproutError(.io, "memory image \(id) cannot be read: it is damaged or from an older Sprout (its runsc cannot restore it)")
        }
    }

    /// Writes image `id`'s files into `directory` (made if missing),
    /// checking every chunk. Throws (and leaves no file of it behind) if a
    /// chunk is missing or damaged.
    public func materialize(_ id: String, to directory: String) throws {
        let manifest = try manifest(id)
        try FileSystem.makeDirectories(directory, mode: 0o700)
        var written: [String] = []
        do {
            for file in manifest.files {
                guard !file.name.isEmpty, file.name.count <= 255, !file.name.contains("/"), !file.name.hasPrefix(".") else { throw SproutError(.io, "memory image \(id) names a file '\(file.name.prefix(64))'") }
                let path = directory + "/" + file.name
                try write(id, file, to: path)
                written.append(path)
            }
        } catch {
            for path in written { unlink(path) }
            throw error
        }
    }

    /// One file of an image, chunk by chunk, each checked against its digest.
    private func write(_ id: String, _ file: Manifest.File, to path: String) throws {
        // Not synced: a restore reads it at once, and a lost one is written again from the chunks.
        try FileSystem.writeAtomically(path, mode: 0o600, sync: false) { fd in
            for (index, chunk) in file.chunks.enumerated() {
                guard let stored = try? Descriptor.readFile(chunkPath(chunk.digest), limit: chunk.length + 1) else {
                    throw SproutError(.io, "memory image \(id) is corrupted: chunk \(index) of \(file.name) (\(chunk.digest.prefix(12))) is missing")
                }
                let bytes = (try? ChunkCoding.decode(stored, length: chunk.length)) ?? []
                guard bytes.count == chunk.length, hexString(SHA256.hash(data: bytes)) == chunk.digest else {
                    throw SproutError(.io, "memory image \(id) is corrupted: chunk \(index) of \(file.name) (\(chunk.digest.prefix(12))) does not match its digest")
                }
                try Descriptor.writeAll(fd, bytes)
            }
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

    /// Logical bytes (what the images hold, before deduplication and
    /// compression) and stored bytes (their distinct chunks, as stored) of `ids`.
    public func usage(_ ids: [String]) -> (logical: Int64, stored: Int64) {
        var logical: Int64 = 0
        var sizes: [String: Int64] = [:]
        for id in ids {
            guard let image = imageUsage(id) else { continue }
            logical += image.logical
            sizes.merge(image.chunks) { first, _ in first }
        }
        return (logical, sizes.values.reduce(0, +))
    }

    /// One image's bytes and the stored size of each of its chunks. An
    /// image never changes (its id is its content), nor does a chunk while
    /// an image holds it, so what was read once is kept: every API answer
    /// about a paused sandbox shows this, and reading up to ten manifests
    /// and a thousand chunk sizes each time cost a resume 10–30 ms.
    func imageUsage(_ id: String) -> UsageCache.Image? {
        if let known = usageCache.image(id) { return known }
        guard let manifest = try? manifest(id) else { return nil }
        var image = UsageCache.Image(logical: 0, chunks: [:])
        var complete = true
        for chunk in manifest.allChunks {
            image.logical += Int64(chunk.length)
            if image.chunks[chunk.digest] != nil { continue }
            var st = stat()
            if stat(chunkPath(chunk.digest), &st) == 0 { image.chunks[chunk.digest] = Int64(st.st_size) } else { complete = false }
        }
        // An image with a chunk missing (being fetched, or damaged) is read again next time.
        if complete { usageCache.keep(id, image) }
        return image
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

    /// Calls `body` with each content-defined chunk of the file at `path`, in
    /// order, reading it a few MiB at a time (a memory image can be large).
    static func forEachChunk(of path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system("open \(path)") }
        defer { close(fd) }
        let block = 4 << 20
        var buffer = [UInt8](repeating: 0, count: block + maxChunk)
        var filled = 0
        var atEnd = false
        while true {
            while !atEnd && filled < buffer.count {
                let room = buffer.count - filled
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, room) }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw SproutError.system("read \(path)") }
                if n == 0 { atEnd = true } else { filled += n }
            }
            if filled == 0 { return }
            var consumed = 0
            try buffer.withUnsafeBytes { all in
                let window = UnsafeRawBufferPointer(rebasing: all[0..<filled])
                let ranges = boundaries(window)
                // A chunk that runs to the window's end may go on in the next read: keep it for then.
                let complete = atEnd ? ranges : Array(ranges.dropLast())
                for range in complete { try body(UnsafeRawBufferPointer(rebasing: window[range])) }
                consumed = complete.last?.upperBound ?? 0
            }
            guard consumed > 0 || atEnd else { throw SproutError(.internal, "chunking \(path) made no progress") }
            buffer.withUnsafeMutableBytes { raw in
                raw.baseAddress!.copyMemory(from: raw.baseAddress! + consumed, byteCount: filled - consumed)
            }
            filled -= consumed
            if atEnd && filled == 0 { return }
        }
    }

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

/// How a chunk is kept on disk: one byte saying how, then the bytes.
/// 1: zlib (level 1), used when it saves at least a tenth; 0: as it is. A
/// file of exactly the chunk's length has no such byte (an older store).
enum ChunkCoding {
    static func encode(_ chunk: UnsafeRawBufferPointer) throws -> [UInt8] {
        var input = ByteBuffer(bytes: chunk)
        if let compressed = try? input.compress(with: .zlib(configuration: .init(compressionLevel: .fastestCompression))),
           compressed.readableBytes < chunk.count - chunk.count / 10 {
            return [1] + Array(compressed.readableBytesView)
        }
        return [0] + Array(chunk)
    }

    static func decode(_ stored: [UInt8], length: Int) throws -> [UInt8] {
        guard stored.count != length, let how = stored.first else { return stored }
        switch how {
        case 0:
            return Array(stored.dropFirst())
        case 1:
            var input = ByteBuffer(bytes: stored.dropFirst())
            var output = ByteBufferAllocator().buffer(capacity: length)
            try input.decompress(to: &output, with: .zlib())
            return Array(output.readableBytesView)
        default:
            throw SproutError(.io, "a memory image chunk is stored in an unknown way (\(how))")
        }
    }
}

/// `ImageStore.usage`'s memory of images it has read.
final class UsageCache: @unchecked Sendable {
    struct Image: Sendable {
        var logical: Int64
        /// Stored bytes of each distinct chunk.
        var chunks: [String: Int64]
    }

    private let lock = Lock()
    private var images: [String: Image] = [:]
    /// A sandbox holds at most ten images; this is room for hundreds of sandboxes.
    private let limit = 2048

    func image(_ id: String) -> Image? { lock.withLock { images[id] } }

    func keep(_ id: String, _ image: Image) {
        lock.withLock {
            if images.count >= limit { images.removeAll(keepingCapacity: true) }
            images[id] = image
        }
    }
}
