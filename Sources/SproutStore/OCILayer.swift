import Foundation
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

        /// `tar`'s option for it: gzip through `unpigz` where it is
        /// installed (it decompresses in one thread and reads, writes and
        /// checks in others: about twice gzip's speed).
        var tarOption: [String] {
            switch self {
            case .none: []
            case .gzip: Spawn.resolveExecutable("unpigz", searchPath: HostCommand.searchPath) == nil ? ["--gzip"] : ["--use-compress-program=unpigz"]
            case .zstd: ["--zstd"]
            }
        }
    }

    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"

    /// Checks that `blob`'s SHA-256 is `digest` (`sha256:<hex>`): a blob that
    /// does not match is refused before anything is made of it.
    public static func verify(_ blob: String, digest: String) throws {
        guard digest.hasPrefix("sha256:"), digest.count == 71 else {
            throw SproutError(.invalidArgument, "unsupported digest '\(digest)': Sprout checks sha256 digests")
        }
        let actual = "sha256:" + (try LayerDigest.fileDigest(blob))
        guard actual == digest.lowercased() else {
            throw SproutError(.malformed, "blob \(digest) does not match its digest (its content is \(actual))")
        }
    }

    /// Unpacks the layer tar `blob` into the empty directory `directory`
    /// and converts its whiteouts. Members are taken as GNU tar takes an
    /// untrusted archive: no absolute names, no `..`, no writing through a
    /// link the archive made.
    public static func unpack(_ blob: String, into directory: String) async throws {
        let magic = try readPrefix(blob, count: 4)
        let compression = Compression(magic: magic)
        if compression == .zstd, Spawn.resolveExecutable("zstd", searchPath: HostCommand.searchPath) == nil {
            throw SproutError(.unavailable, "this layer is zstd-compressed and zstd is not installed on the server")
        }
        try FileSystem.makeDirectories(directory)
        let out = try await HostCommand.capture(
            ["tar", "--extract", "--file", blob, "--directory", directory, "--numeric-owner", "--same-owner",
             "--same-permissions", "--xattrs", "--xattrs-include=*", "--no-overwrite-dir"] + compression.tarOption,
            timeout: .seconds(1800))
        guard out.status == 0 else {
            throw SproutError(.malformed, "the layer is not a tar archive tar can read: \(out.stderr.trimmed)")
        }
        try await onThread { try convertWhiteouts(in: directory) }
    }

    /// The overlay form of the OCI whiteouts under `directory`.
    static func convertWhiteouts(in directory: String) throws {
        let names = try FileSystem.children(directory)
        if names.contains(opaqueMarker) {
            try sysCall("remove \(opaqueMarker)") { unlink(directory + "/" + opaqueMarker) }
            try sysCall("mark \(directory) opaque") { csprout_set_overlay_opaque(directory) }
        }
        for name in names where name != opaqueMarker {
            let path = directory + "/" + name
            if name.hasPrefix(whiteoutPrefix) {
                let hidden = String(name.dropFirst(whiteoutPrefix.count))
                guard !hidden.isEmpty, hidden != ".", hidden != ".." else {
                    throw SproutError(.malformed, "a whiteout with no name: \(path)")
                }
                try sysCall("remove \(name)") { unlink(path) }
                // The layer's own copy of the name, if it has one, goes: the whiteout is for the layers below.
                let target = directory + "/" + hidden
                if FileSystem.exists(target) { try FileSystem.removeTree(target) }  // lstat: a symlink too
                try sysCall("whiteout \(target)") { mknod(target, S_IFCHR | 0o000, 0) }
                continue
            }
            var st = stat()
            guard lstat(path, &st) == 0 else { throw SproutError.system(path) }
            if st.st_mode & S_IFMT == S_IFDIR { try convertWhiteouts(in: path) }
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
    /// added (0 when the same content was stored before, from this image or
    /// any other). Nothing is left behind when it fails.
    public func importLayer(_ blob: String, digest: String?) async throws -> (digest: String, addedBytes: Int64) {
        if let digest { try await onThread { try OCILayer.verify(blob, digest: digest) } }
        try FileSystem.makeDirectories(root, mode: 0o700)
        let temp = "\(root)/.import-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(temp) }
        try await OCILayer.unpack(blob, into: temp)
        return try await store(directory: temp)
    }
}
