import Crypto
import Foundation
import NIOCore
import Glibc
import CSprout
import SproutCore
import SproutHost
import SproutSystem
import SproutBlocking

/// An OCI (or Docker) image layer turned into a Sprout layer: a tar stream,
/// plain or compressed, unpacked with its owners, modes and extended
/// attributes, its whiteouts made overlay ones (`.wh.NAME` becomes a 0/0
/// character device `NAME`; `.wh..wh..opq` makes its directory opaque), as
/// the image spec's "Representing Changes" describes.
public enum OCILayer {
    /// How a blob is compressed, from its first bytes (a media type may be
    /// missing or wrong: Docker's archives say nothing of their layers).
    public enum Compression: Equatable, Sendable {
        case none, gzip, zstd

        public init(magic: [UInt8]) {
            if magic.starts(with: [0x1F, 0x8B]) {
                self = .gzip
            } else if magic.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) {
                self = .zstd
            } else {
                self = .none
            }
        }

        /// The program that decompresses it from stdin to stdout: gzip by
        /// ISA-L's `igzip` where it is installed (about 2.4× zlib's speed;
        /// Debian's `isal`), else `unpigz` (zlib, with reading, writing and
        /// checking in threads of their own), else gzip itself. Nil for a plain tar.
        var decompressor: [String]? {
            let installed = { (name: String) in Spawn.resolveExecutable(name, searchPath: HostCommand.searchPath) != nil }
            switch self {
            case .none: return nil
            case .gzip: return installed("igzip") ? ["igzip", "-d", "-c"] : installed("unpigz") ? ["unpigz", "-c"] : ["gzip", "-d", "-c"]
            case .zstd: return ["zstd", "-d", "-c", "-q"]
            }
        }
    }

    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"

    /// Checks that `blob`'s SHA-256 is `digest` (`sha256:<hex>`): a blob that
    /// does not match is refused before anything is made of it.
    public static func verify(_ blob: String, digest: String) throws {
        try checkFormat(digest)
        let actual = "sha256:" + (try LayerDigest.fileDigest(blob))
        guard actual == digest.lowercased() else {
            throw SproutError(.malformed, "blob \(digest) does not match its digest (its content is \(actual))")
        }
    }

    /// `tar` unpacking its stdin into `directory`, keeping owners, modes
    /// and extended attributes.
    static func tarArguments(into directory: String) -> [String] {
        ["tar", "--extract", "--file", "-", "--directory", directory, "--numeric-owner", "--same-owner",
         "--same-permissions", "--xattrs", "--xattrs-include=*", "--no-overwrite-dir"]
    }

    static func checkInstalled(_ compression: Compression) throws {
        if compression == .zstd, Spawn.resolveExecutable("zstd", searchPath: HostCommand.searchPath) == nil {
            throw SproutError(.unavailable, "this layer is zstd-compressed and zstd is not installed on the server")
        }
    }

    static func notReadable(_ stderr: String) -> SproutError {
        SproutError(.malformed, "the layer is not a tar archive tar can read: \(stderr.trimmed)")
    }

    static func notDecompressible(_ compression: Compression, _ stderr: String) -> SproutError {
        SproutError(.malformed, "the layer is not a whole \(compression == .zstd ? "zstd" : "gzip") stream: \(stderr.trimmed)")
    }

    /// The name of the Sprout layer an image layer blob becomes: made from
    /// the blob's digest (which the pull checks as the blob arrives), so a
    /// blob stored before is known without fetching or unpacking it, and
    /// the unpacked tree need not be read again to name it. The same blob
    /// is stored once, from any image; the same content compressed another
    /// way is another blob, and another layer. The number is the conversion's version.
    public static func layerDigest(blob digest: String) throws -> String {
        try checkFormat(digest)
        return hexString(SHA256.hash(data: Data("oci-layer 1 \(digest.lowercased())".utf8)))
    }

    static func checkFormat(_ digest: String) throws {
        guard digest.hasPrefix("sha256:"), digest.count == 71, digest.dropFirst(7).allSatisfy(\.isHexDigit) else {
            throw SproutError(.invalidArgument, "unsupported digest '\(digest.prefix(80))': Sprout checks sha256 digests")
        }
    }

    /// The overlay form of the OCI whiteouts under `directory`. Returns
    /// the bytes the tree then takes on disk, counted as `du` counts them
    /// (blocks, a hard-linked file once), found by the same walk.
    static func convertWhiteouts(in directory: String) throws -> Int64 {
        var usage = DiskUsage()
        var st = stat()
        guard lstat(directory, &st) == 0 else { throw SproutError.system(directory) }
        usage.add(st)
        try convertWhiteouts(in: directory, usage: &usage)
        return usage.bytes
    }

    private static func convertWhiteouts(in directory: String, usage: inout DiskUsage) throws {
        let names = try FileSystem.children(directory)
        if names.contains(opaqueMarker) {
            try sysCall("remove \(opaqueMarker)") { unlink(directory + "/" + opaqueMarker) }
            try sysCall("mark \(directory) opaque") { csprout_set_overlay_opaque(directory) }
        }
        // Whiteouts first, so that what one replaces is not counted.
        for name in names where name.hasPrefix(whiteoutPrefix) && name != opaqueMarker {
            let path = directory + "/" + name
            let hidden = String(name.dropFirst(whiteoutPrefix.count))
            guard !hidden.isEmpty, hidden != ".", hidden != ".." else {
                throw SproutError(.malformed, "a whiteout with no name: \(path)")
            }
            try sysCall("remove \(name)") { unlink(path) }
            // The layer's own copy of the name, if it has one, goes: the whiteout is for the layers below.
            let target = directory + "/" + hidden
            if FileSystem.exists(target) { try FileSystem.removeTree(target) }  // lstat: a symlink too
            try sysCall("whiteout \(target)") { mknod(target, S_IFCHR | 0o000, 0) }
        }
        for name in names where !name.hasPrefix(whiteoutPrefix) {
            let path = directory + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0 else { throw SproutError.system(path) }
            usage.add(st)
            if st.st_mode & S_IFMT == S_IFDIR { try convertWhiteouts(in: path, usage: &usage) }
        }
    }

    /// Bytes on disk, as `du -s -B1` adds them up.
    struct DiskUsage {
        var bytes: Int64 = 0
        private var linked: Set<[UInt64]> = []

        mutating func add(_ st: stat) {
            if st.st_nlink > 1 && st.st_mode & S_IFMT != S_IFDIR {
                guard linked.insert([UInt64(st.st_dev), UInt64(st.st_ino)]).inserted else { return }
            }
            bytes += Int64(st.st_blocks) * 512
        }
    }

    static func readPrefix(_ path: String, count: Int) throws -> [UInt8] {
        let fd = try sysCall("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { try Descriptor.read(fd, into: $0.baseAddress!, count: count) }
        return Array(bytes.prefix(n))
    }
}

extension LayerStore {
    /// Stores the image layer `blob` (checked against `digest` first, when
    /// given) as a Sprout layer. Returns its layer digest and the bytes it
    /// added (0 when the same blob was stored before, from this image or
    /// any other: then nothing is unpacked). Nothing is left behind when it fails.
    public func importLayer(_ blob: String, digest: String?) async throws -> (digest: String, addedBytes: Int64) {
        let blobDigest: String
        if let digest {
            try await onThread { try OCILayer.verify(blob, digest: digest) }
            blobDigest = digest
        } else {
            blobDigest = "sha256:" + (try await onThread { try LayerDigest.fileDigest(blob) })
        }
        return try await importLayer(blobDigest: blobDigest) { try await $0.write(file: blob) }
    }

    /// Stores the image layer whose blob is `blobDigest` as `feed` hands
    /// over its bytes (unpacked as they come; `feed` checks them against
    /// the digest and throws if they do not match). Returns its layer digest
    /// and the bytes it added; one stored before is not fed at all.
    /// Nothing is left behind when it fails. Members are taken as GNU tar
    /// takes an untrusted archive: no absolute names, no `..`, no writing
    /// through a link the archive made.
    public func importLayer(blobDigest: String, feed: (LayerUnpacker) async throws -> Void) async throws -> (digest: String, addedBytes: Int64) {
        let layer = try OCILayer.layerDigest(blob: blobDigest)
        if contains(layer) { return (layer, 0) }
        try FileSystem.makeDirectories(root, mode: 0o700)
        let temp = "\(root)/.import-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(temp) }
        let unpacker = try LayerUnpacker(into: temp)
        let bytes: Int64
        do {
            try await feed(unpacker)
            bytes = try await unpacker.finish()
        } catch {
            await unpacker.abandon()
            throw error
        }
        if rename(temp, path(layer)) != 0 {
            if errno == EEXIST || errno == ENOTEMPTY { return (layer, 0) }  // stored meanwhile
            throw SproutError.system("store layer \(layer)")
        }
        return (layer, bytes)
    }
}

/// A layer unpacked while its blob arrives: the bytes go through a pipe into
/// the decompressor and on through another into `tar`, so the download, the
/// decompression and the unpacking overlap and the blob is never written
/// whole. The pipes hold 1 MiB each: with the default 64 KiB, the processes
/// woke each other so often that a 206 MiB layer took 0.62–0.80 s instead of
/// 0.46 s. The blob's pipe is written on a thread of its own; each `write`
/// waits for the previous one, which holds the download back while `tar` is
/// behind. Used by one task at a time, in a process that ignores SIGPIPE (as
/// the server does), so that a child that has gone is an error and not the
/// end of the process.
public final class LayerUnpacker: @unchecked Sendable {
    let directory: String
    private let writer = WorkerThread()
    /// The first bytes, kept until there are enough to tell the compression.
    private var head: [UInt8] = []
    private var compression = OCILayer.Compression.none
    private var input: Int32 = -1
    private var broken = false
    /// The decompressor (if any) and `tar`, each with a memory file of what it said.
    private var children: [(pid: pid_t, stderr: Int32)] = []

    init(into directory: String) throws {
        self.directory = directory
        try FileSystem.makeDirectories(directory)
    }

    deinit {
        writer.close()
        if input >= 0 { close(input) }
        for child in children { close(child.stderr) }
    }

    /// Hands over the blob's next bytes.
    public func write(_ buffer: ByteBuffer) async throws {
        if children.isEmpty {
            head += buffer.readableBytesView
            if head.count < 4 { return }
            try start()
            let first = head
            head = []
            try await send { write in try first.withUnsafeBytes { try write($0) } }
        } else {
            try await send { write in try buffer.withUnsafeReadableBytes { try write($0) } }
        }
    }

    /// Hands over the whole of file `path`, in 1 MiB pieces.
    func write(file path: String) async throws {
        let fd = try sysCall("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        var buffer = ByteBuffer()
        while true {
            buffer.clear(minimumCapacity: 1 << 20)
            let n = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1 << 20) { try Descriptor.read(fd, into: $0.baseAddress!, count: $0.count) }
            if n == 0 { return }
            try await write(buffer)
        }
    }

    /// The blob has ended: waits for `tar`, then converts the whiteouts.
    /// Returns the bytes the layer takes on disk.
    func finish() async throws -> Int64 {
        if children.isEmpty { try start() }
        if !head.isEmpty {
            let rest = head
            head = []
            try await send { write in try rest.withUnsafeBytes { try write($0) } }
        }
        try await end()
        return try await onThread { [directory] in try OCILayer.convertWhiteouts(in: directory) }
    }

    /// The blob will not end (the download failed): the children are stopped.
    func abandon() async {
        for child in children { kill(-child.pid, SIGKILL) }
        try? await end()
    }

    private func start() throws {
        compression = OCILayer.Compression(magic: head)
        try OCILayer.checkInstalled(compression)
        let blob = try Self.pipe()
        input = blob.write
        var tarInput = blob.read
        defer { close(tarInput) }
        if let argv = compression.decompressor {
            let toTar = try Self.pipe()
            defer { close(toTar.write) }
            tarInput = toTar.read
            defer { close(blob.read) }
            try spawn(argv, stdin: blob.read, stdout: toTar.write)
        }
        try spawn(OCILayer.tarArguments(into: directory), stdin: tarInput, stdout: nil)
    }

    private func spawn(_ argv: [String], stdin: Int32, stdout: Int32?) throws {
        guard let path = Spawn.resolveExecutable(argv[0], searchPath: HostCommand.searchPath) else {
            throw SproutError(.unavailable, "\(argv[0]) is not installed")
        }
        let stderr = try Descriptor.memoryFile("sprout-\(argv[0])-stderr", containing: [])
        var options = Spawn.Options()
        options.stdin = stdin
        options.stdout = stdout
        options.stderr = stderr
        do {
            children.append((try Spawn.spawn(path: path, argv: argv, env: HostCommand.environment, options: options), stderr))
        } catch {
            close(stderr)
            throw error
        }
    }

    /// A close-on-exec pipe of 1 MiB (or what the system allows).
    private static func pipe() throws -> (read: Int32, write: Int32) {
        let pipe = try Spawn.pipe()
        _ = fcntl(pipe.write, 1031 /* F_SETPIPE_SZ */, Int32(1 << 20))
        return pipe
    }

    /// Writes on the writer thread. Once the reader has gone (the pipe
    /// broke), the rest is dropped: the download goes on to its digest
    /// check, whose complaint names the cause better than `tar`'s, and
    /// `finish` reports `tar`'s if the blob was the right one.
    private func send(_ bytes: @escaping @Sendable (_ write: (UnsafeRawBufferPointer) throws -> Bool) throws -> Bool) async throws {
        guard !broken else { return }
        let fd = input
        let open = try await writer.run { try bytes { try Self.write(fd, $0) } }
        if !open { broken = true }
    }

    /// Writes all of `buffer` to the pipe: false if its reader has gone.
    private static func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws -> Bool {
        var offset = 0
        while offset < buffer.count {
            let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            if n >= 0 {
                offset += n
            } else if errno == EPIPE {
                return false
            } else if errno != EINTR {
                throw SproutError.system("write to tar")
            }
        }
        return true
    }

    /// Closes the pipe and reaps the children; throws with the first one's
    /// complaint (the decompressor's before `tar`'s) if one failed.
    private func end() async throws {
        if input >= 0 {
            close(input)
            input = -1
        }
        let ended = children
        children = []
        defer { for child in ended { close(child.stderr) } }
        let statuses = try await onThread { () -> [Int32?] in
            ended.map { child in
                if let status = Spawn.waitForExit(child.pid, timeout: 1800) { return status }
                kill(-child.pid, SIGKILL)
                return Spawn.waitForExit(child.pid, timeout: 60)
            }
        }
        guard statuses.allSatisfy({ $0 != nil }) else { throw SproutError(.internal, "unpacking the layer did not end within 30 minutes") }
        // A decompressor that `tar` left (SIGPIPE: `tar` had read a whole
        // archive, or failed) did not fail of itself; `tar` says which.
        for (index, status) in statuses.enumerated() where status != 0 && !(index + 1 < ended.count && status == SIGPIPE) {
            let said = Self.said(ended[index].stderr)
            throw index + 1 < ended.count ? OCILayer.notDecompressible(compression, said) : OCILayer.notReadable(said)
        }
    }

    /// The start of what a child said.
    private static func said(_ stderr: Int32) -> String {
        var bytes = [UInt8](repeating: 0, count: 8192)
        let n = bytes.withUnsafeMutableBytes { pread(stderr, $0.baseAddress, $0.count, 0) }
        return String(decoding: bytes.prefix(max(0, n)), as: UTF8.self)
    }
}
