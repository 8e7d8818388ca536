import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutSystem
import SproutBlocking

/// Content-addressed, immutable layers on local disk. A layer is a directory
/// in overlayfs "upper" form (whiteouts and opaque directories included), so
/// it can be used as a `lowerdir` as it is. Identical content is stored once.
public struct LayerStore: Sendable {
    public let root: String

    public init(root: String) {
        self.root = root
    }

    /// Layer paths are short on purpose: an overlay mount takes at most one
    /// page of options, so shorter paths mean deeper chains per mount.
    public func path(_ digest: String) -> String { "\(root)/\(digest.prefix(20))" }

    public func contains(_ digest: String) -> Bool { FileSystem.isDirectory(path(digest)) }

    /// Freezes `upper` (a sandbox's writable layer) into the store, leaving
    /// out `excluding` (paths relative to the root, e.g. per-sandbox identity
    /// files). Returns the layer's digest and the bytes it added (0 if an
    /// identical layer was already stored). Timestamps, which are build
    /// noise, are set to 0 unless `keepTimes` (a layer a memory image was
    /// taken on: the restored processes expect their files as they were).
    public func freeze(upper: String, excluding: [String], keepTimes: Bool = false) async throws -> (digest: String, addedBytes: Int64) {
        try FileSystem.makeDirectories(root, mode: 0o700)
        let temp = "\(root)/.freeze-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(temp) }
        // cp -a keeps modes, owners, links, device nodes (whiteouts) and xattrs (opaque dirs).
        try FileSystem.makeDirectories(temp)
        try await HostCommand.run(["cp", "-a", "--reflink=auto", upper + "/.", temp + "/"], timeout: .seconds(1800))
        try await onThread { Self.dropExcluded(excluding, in: temp) }
        if !keepTimes {
            try await HostCommand.run(["find", temp, "-exec", "touch", "-h", "-d", "@0", "{}", "+"], timeout: .seconds(600))
        }
        // The digest ignores timestamps; a layer with kept times is its own layer.
        let salt = keepTimes ? "times \(Identifiers.random(length: 16))" : nil
        return try await store(directory: temp, salt: salt)
    }

    /// A layer holding only the empty directories `paths` (relative, made
    /// with their parents), root's and mode 0755, as a build step's
    /// `mkdir -p` as root leaves them.
    public func directoriesLayer(_ paths: [String]) async throws -> (digest: String, addedBytes: Int64) {
        try FileSystem.makeDirectories(root, mode: 0o700)
        let temp = "\(root)/.dirs-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(temp) }
        try FileSystem.makeDirectories(temp)
        for path in paths {
            var made = temp
            for part in path.split(separator: "/") {
                made += "/\(part)"
                if mkdir(made, 0o755) != 0 && errno != EEXIST { throw SproutError.system("make \(made)") }
                try sysCall("chmod \(made)") { chmod(made, 0o755) }
            }
        }
        return try await store(directory: temp)
    }

    /// Moves the finished layer `directory` (a folder inside `root`) into
    /// the store under its digest, or leaves it if that content is stored
    /// already. Returns the digest and the bytes it added.
    func store(directory: String, salt: String? = nil) async throws -> (digest: String, addedBytes: Int64) {
        let digest = try await onThread { try LayerDigest.of(directory: directory, salt: salt) }
        let target = path(digest)
        if contains(digest) { return (digest, 0) }
        let bytes = await Self.diskUsage(directory)
        if rename(directory, target) != 0 {
            if errno == EEXIST || errno == ENOTEMPTY { return (digest, 0) }  // stored meanwhile
            throw SproutError.system("store layer \(digest)")
        }
        return (digest, bytes)
    }

    /// Moves the finished directory `directory` (inside `root`) into the
    /// store as layer `digest`, which the caller has checked it is (a layer
    /// fetched from the object store, by its tar's digest). One already
    /// stored is kept.
    public func adopt(directory: String, as digest: String) throws {
        guard BlobStore.isDigest(digest) else { throw SproutError(.malformed, "\(digest.prefix(80)) is not a layer digest") }
        if contains(digest) { return }
        if rename(directory, path(digest)) != 0 {
            if errno == EEXIST || errno == ENOTEMPTY { return }
            throw SproutError.system("store layer \(digest)")
        }
    }

    /// Removes `excluding` (paths relative to `temp`) and directories that only held them.
    static func dropExcluded(_ excluding: [String], in temp: String) {
        for rel in excluding { unlink("\(temp)/\(rel)") }
        for rel in excluding {
            // Drop directories that only held excluded files (e.g. etc/).
            var dir = (rel as NSString).deletingLastPathComponent
            while !dir.isEmpty && dir != "/" && dir != "." {
                let full = "\(temp)/\(dir)"
                guard let children = try? FileSystem.children(full), children.isEmpty, !LayerDigest.isOpaque(full) else { break }
                rmdir(full)
                dir = (dir as NSString).deletingLastPathComponent
            }
        }
    }

    /// Bytes a directory tree occupies on disk.
    public static func diskUsage(_ path: String) async -> Int64 {
        guard let out = try? await HostCommand.run(["du", "-s", "-B1", path], timeout: .seconds(600)),
            let first = out.split(separator: "\t").first, let bytes = Int64(first)
        else { return 0 }
        return bytes
    }
}

