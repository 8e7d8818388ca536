import CSprout
import Crypto
import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutSystem
import SproutBlocking

/// Squashing: a run of layers merged into one layer that means the same on
/// top of any base. Whiteouts and opaque directories are kept (they may hide
/// files of the base), so the result is still in overlay "upper" form. Chains
/// are squashed in fixed blocks, so every env that shares a prefix shares its
/// squashed blocks, and forking stays unlimited without a full copy of the
/// base ever being made.
extension LayerStore {
    /// Layers per squashed block, and the most layers one overlay mount gets.
    public static let blockSize = 32

    /// The layers to mount for a chain (bottom first): whole blocks of
    /// `blockSize` are replaced by their squashed layer once the chain is
    /// deeper than one block. Squashes (and caches) what is missing.
    public func mountable(_ chain: [String]) async throws -> [String] {
        guard chain.count > Self.blockSize else { return chain }
        let blocks = chain.count / Self.blockSize
        var result: [String] = []
        for b in 0..<blocks {
            result.append(try await squash(Array(chain[(b * Self.blockSize)..<((b + 1) * Self.blockSize)])))
        }
        return result + chain[(blocks * Self.blockSize)...]
    }

    /// One layer equivalent to `layers` (bottom first), stored and cached.
    public func squash(_ layers: [String]) async throws -> String {
        var hasher = SHA256()
        hasher.update(data: Data(layers.joined(separator: "\n").utf8))
        let key = "\(root)/.squash-\(hexString(hasher.finalize()).prefix(32))"
        if let cached = try? Descriptor.readFile(key, limit: 256), FileSystem.exists(key + ".layers") {
            let digest = String(decoding: cached, as: UTF8.self)
            if contains(digest) { return digest }
        }
        let temp = "\(root)/.squashing-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(temp) }
        try FileSystem.makeDirectories(temp)
        for layer in layers {
            guard contains(layer) else { throw SproutError(.notFound, "layer \(layer.prefix(12)) is missing from the store") }
            try await Self.apply(path(layer), onto: temp)
        }
        try await HostCommand.run(["find", temp, "-exec", "touch", "-h", "-d", "@0", "{}", "+"], timeout: .seconds(600))
        let digest = try await onThread { try LayerDigest.of(directory: temp) }
        if !contains(digest) {
            if rename(temp, path(digest)) != 0 && errno != EEXIST && errno != ENOTEMPTY {
                throw SproutError.system("store squashed layer")
            }
        }
        try FileSystem.writeAtomically(key + ".layers", layers.joined(separator: "\n"))
        try FileSystem.writeAtomically(key, digest)
        return digest
    }

    /// Applies one upper-form layer onto an accumulated upper-form tree.
    static func apply(_ layer: String, onto target: String) async throws {
        for name in try FileSystem.children(layer) {
            let source = layer + "/" + name
            let destination = target + "/" + name
            var st = stat()
            guard lstat(source, &st) == 0 else { throw SproutError.system(source) }
            let type = st.st_mode & S_IFMT
            if type == S_IFDIR {
                var existing = stat()
                let exists = lstat(destination, &existing) == 0
                if LayerDigest.isOpaque(source) || (exists && (existing.st_mode & S_IFMT) != S_IFDIR) {
                    // An opaque directory replaces whatever was below; so does a
                    // directory where a file or whiteout was.
                    try FileSystem.removeTree(destination)
                }
                if !FileSystem.exists(destination) {
                    // The directory itself (mode, owner, opaque marker), not its children.
                    try sysCall("mkdir \(destination)") { mkdir(destination, 0o700) }
                    _ = chown(destination, st.st_uid, st.st_gid)
                    _ = chmod(destination, st.st_mode & 0o7777)
                    if LayerDigest.isOpaque(source) {
                        try sysCall("mark \(destination) opaque") { csprout_set_overlay_opaque(destination) }
                    }
                } else {
                    _ = chmod(destination, st.st_mode & 0o7777)
                }
                try await apply(source, onto: destination)
            } else {
                // Files, links and whiteouts replace what was below.
                try FileSystem.removeTree(destination)
                try await HostCommand.run(["cp", "-a", "--reflink=auto", source, destination], timeout: .seconds(600))
            }
        }
    }
}

extension LayerStore {
    /// Deletes layers not in `live` and not produced by squashing a run of
    /// live layers. Returns how many layers it removed.
    @discardableResult
    public func collect(keeping live: Set<String>) throws -> Int {
        guard FileSystem.isDirectory(root) else { return 0 }
        var keep = Set(live.map { path($0) })
        // A squashed block is kept while every layer it was made of is live.
        for name in try FileSystem.children(root) where name.hasPrefix(".squash-") {
            let key = "\(root)/\(name)"
            let sources = (try? Descriptor.readFile(key + ".layers", limit: 1 << 20)).map {
                String(decoding: $0, as: UTF8.self).split(separator: "\n").map(String.init)
            } ?? []
            if let digest = try? Descriptor.readFile(key, limit: 256), !sources.isEmpty, sources.allSatisfy(live.contains) {
                keep.insert(path(String(decoding: digest, as: UTF8.self)))
            } else {
                unlink(key)
                unlink(key + ".layers")
            }
        }
        var removed = 0
        for name in try FileSystem.children(root) where !name.hasPrefix(".") {
            let dir = "\(root)/\(name)"
            if !keep.contains(dir) {
                try FileSystem.removeTree(dir)
                removed += 1
            }
        }
        return removed
    }
}
