import Foundation
import SproutCore
import SproutHost
import SproutSystem

/// What an image's config says about running it (the image spec's
/// `config` object): what Sprout honours for an env made from it.
public struct OCIImageConfig: Sendable, Equatable {
    /// `NAME=value`, in the image's order.
    public var env: [String] = []
    public var workingDir: String?
    /// `user`, `uid`, `user:group` or `uid:gid`, as the image gives it.
    public var user: String?
    public var entrypoint: [String]?
    public var cmd: [String]?
    /// TCP ports the image says it listens on.
    public var exposedPorts: [UInt16] = []

    public init() {}

    /// What the image runs: its entrypoint followed by its command (a
    /// command alone runs as it is); nil when it names neither.
    public var command: [String]? {
        let all = (entrypoint ?? []) + (cmd ?? [])
        return all.isEmpty ? nil : all
    }
}

/// An image as `docker save` or an OCI image layout (`skopeo copy
/// oci-archive:`, `umoci`, BuildKit's `oci` exporter) writes it, unpacked in
/// a directory: its config and its layers, bottom first. Every blob reached
/// through a digest is checked against it before it is used.
public struct OCIImageArchive: Sendable {
    public struct Layer: Sendable, Equatable {
        /// The layer's file in the archive.
        public var path: String
        /// What its content must hash to (`sha256:…`), when the archive says.
        public var digest: String?

        public init(path: String, digest: String?) {
            self.path = path
            self.digest = digest
        }
    }

    public var config: OCIImageConfig
    public var layers: [Layer]
    /// The names the archive gives the image (`name:tag`), if any.
    public var references: [String]

    /// Reads the image in `directory`. An OCI layout (`index.json`) comes
    /// first, Docker's `manifest.json` otherwise. An archive of several
    /// images needs `reference`, one of their names.
    public static func read(directory: String, reference: String? = nil) throws -> OCIImageArchive {
        if FileSystem.exists(directory + "/index.json") {
            return try OCILayout(directory: directory).image(reference: reference)
        }
        if FileSystem.exists(directory + "/manifest.json") {
            return try dockerSave(directory: directory, reference: reference)
        }
        throw SproutError(.invalidArgument, "not an image archive: it has neither index.json (OCI) nor manifest.json (docker save)")
    }

    // MARK: docker save

    struct DockerManifestEntry: Decodable {
        var Config: String
        var RepoTags: [String]?
        var Layers: [String]
    }

    static func dockerSave(directory: String, reference: String?) throws -> OCIImageArchive {
        let entries = try decode([DockerManifestEntry].self, at: directory + "/manifest.json")
        let entry = try choose(entries, named: { $0.RepoTags ?? [] }, reference: reference)
        let config = try decode(ImageConfigFile.self, at: try inside(directory, entry.Config))
        let diffIDs = config.rootfs?.diff_ids ?? []
        guard diffIDs.isEmpty || diffIDs.count == entry.Layers.count else {
            throw SproutError(.malformed, "the image config lists \(diffIDs.count) layers and manifest.json \(entry.Layers.count)")
        }
        // Docker's layers are plain tars, so the config's diff ids are their digests.
        let layers = try entry.Layers.enumerated().map { index, path in
            let file = try inside(directory, path)
            let plain = OCILayer.Compression(magic: try OCILayer.readPrefix(file, count: 4)) == .none
            return Layer(path: file, digest: plain && index < diffIDs.count ? diffIDs[index] : nil)
        }
        return OCIImageArchive(config: config.imageConfig, layers: layers, references: entry.RepoTags ?? [])
    }

    // MARK: Pieces

    /// The one entry `reference` names, or the only entry.
    static func choose<T>(_ entries: [T], named: (T) -> [String], reference: String?) throws -> T {
        if let reference {
            let wanted = [reference, reference.contains(":") ? reference : reference + ":latest"]
            guard let match = entries.first(where: { !Set(named($0)).isDisjoint(with: wanted) }) else {
                let known = entries.flatMap(named)
                throw SproutError(.notFound, "the archive has no image '\(reference)'" + (known.isEmpty ? "" : "; it has \(known.joined(separator: ", "))"))
            }
            return match
        }
        guard entries.count == 1, let only = entries.first else {
            if entries.isEmpty { throw SproutError(.invalidArgument, "the archive holds no image") }
            throw SproutError(.invalidArgument,
                "the archive holds \(entries.count) images (\(entries.flatMap(named).joined(separator: ", "))); name the one to use")
        }
        return only
    }

    /// `relative` inside `directory`: a path in an archive's index may not climb out of it.
    static func inside(_ directory: String, _ relative: String) throws -> String {
        let parts = relative.split(separator: "/")
        guard !relative.hasPrefix("/"), !parts.contains(".."), !parts.isEmpty else {
            throw SproutError(.malformed, "the archive names a file outside itself: \(relative)")
        }
        let path = directory + "/" + relative
        guard FileSystem.isRegularFile(path) else { throw SproutError(.malformed, "the archive lacks \(relative)") }
        return path
    }

    static func decode<T: Decodable>(_ type: T.Type, at path: String) throws -> T {
        let bytes = try Descriptor.readFile(path, limit: 16 << 20)
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw SproutError(.malformed, "\((path as NSString).lastPathComponent) is not a valid image document: \(error)")
        }
    }
}

/// An image config file (`application/vnd.oci.image.config.v1+json`).
struct ImageConfigFile: Decodable {
    struct Config: Decodable {
        var Env: [String]?
        var WorkingDir: String?
        var User: String?
        var Entrypoint: [String]?
        var Cmd: [String]?
        var ExposedPorts: [String: EmptyObject]?
    }
    struct EmptyObject: Decodable {}
    struct RootFS: Decodable { var diff_ids: [String]? }
    var config: Config?
    var rootfs: RootFS?

    var imageConfig: OCIImageConfig {
        var out = OCIImageConfig()
        guard let config else { return out }
        out.env = config.Env ?? []
        out.workingDir = config.WorkingDir.flatMap { $0.isEmpty ? nil : $0 }
        out.user = config.User.flatMap { $0.isEmpty ? nil : $0 }
        out.entrypoint = config.Entrypoint
        out.cmd = config.Cmd
        out.exposedPorts = (config.ExposedPorts ?? [:]).keys.compactMap { key in
            let parts = key.split(separator: "/")
            guard parts.count == 1 || parts[1] == "tcp" else { return nil }
            return UInt16(parts[0])
        }.sorted()
        return out
    }
}

/// A reference to a blob in an image's documents (the image spec's descriptor).
public struct OCIDescriptor: Decodable, Sendable, Equatable {
    public struct Platform: Decodable, Sendable, Equatable {
        public var architecture: String?
        public var os: String?
    }
    public var mediaType: String?
    public var digest: String
    public var size: Int64?
    public var annotations: [String: String]?
    public var platform: Platform?

    /// Whether it is for the platform sandboxes run (linux/amd64).
    public var isHostPlatform: Bool { platform?.os == "linux" && platform?.architecture == "amd64" }
}

/// An image index (or Docker manifest list): one manifest per platform.
public struct OCIIndex: Decodable, Sendable {
    public var mediaType: String?
    public var manifests: [OCIDescriptor]

    public static let mediaTypes: Set<String> = [
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    ]

    /// linux/amd64's manifest, or an error naming the platforms there are.
    public func hostManifest() throws -> OCIDescriptor {
        guard let match = manifests.first(where: \.isHostPlatform) else {
            let platforms = manifests.compactMap { $0.platform.map { "\($0.os ?? "?")/\($0.architecture ?? "?")" } }
            throw SproutError(.invalidArgument, "the image has no linux/amd64 variant (it has \(platforms.joined(separator: ", ")))")
        }
        return match
    }
}

/// An image manifest: its config and its layers, bottom first.
public struct OCIManifest: Decodable, Sendable {
    public var mediaType: String?
    public var config: OCIDescriptor
    public var layers: [OCIDescriptor]

    public static let mediaTypes: Set<String> = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ]
}

extension OCIImageConfig {
    /// The config blob's settings Sprout honours, and its layers' diff ids.
    public static func decode(_ data: Data) throws -> (config: OCIImageConfig, diffIDs: [String]) {
        do {
            let file = try JSONDecoder().decode(ImageConfigFile.self, from: data)
            return (file.imageConfig, file.rootfs?.diff_ids ?? [])
        } catch {
            throw SproutError(.malformed, "the image config is not a valid image document: \(error)")
        }
    }
}

/// An OCI image layout: `index.json`, `oci-layout` and `blobs/<alg>/<hex>`.
struct OCILayout {
    let directory: String

    static let refName = "org.opencontainers.image.ref.name"

    func image(reference: String?) throws -> OCIImageArchive {
        let index = try OCIImageArchive.decode(OCIIndex.self, at: directory + "/index.json")
        let entry = try OCIImageArchive.choose(index.manifests, named: Self.names, reference: reference)
        let manifestDescriptor = try platformManifest(entry)
        let manifest = try OCIImageArchive.decode(OCIManifest.self, at: try blob(manifestDescriptor.digest, verify: true))
        let config = try OCIImageArchive.decode(ImageConfigFile.self, at: try blob(manifest.config.digest, verify: true))
        let layers = try manifest.layers.map { OCIImageArchive.Layer(path: try blob($0.digest, verify: false), digest: $0.digest) }
        return OCIImageArchive(config: config.imageConfig, layers: layers, references: index.manifests.flatMap(Self.names))
    }

    /// An index entry's name (`name:tag`, or a tag alone, as the tool that wrote it chose).
    static func names(_ descriptor: OCIDescriptor) -> [String] {
        guard let name = descriptor.annotations?[refName] else { return [] }
        return [name]
    }

    /// A manifest, or from an index of several platforms, linux/amd64's.
    func platformManifest(_ descriptor: OCIDescriptor) throws -> OCIDescriptor {
        guard let type = descriptor.mediaType, OCIIndex.mediaTypes.contains(type) else { return descriptor }
        let nested = try OCIImageArchive.decode(OCIIndex.self, at: try blob(descriptor.digest, verify: true))
        return try platformManifest(try nested.hostManifest())
    }

    /// The file of blob `digest`; small documents are checked here, layers when they are imported.
    func blob(_ digest: String, verify: Bool) throws -> String {
        let parts = digest.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, parts[0] == "sha256", parts[1].count == 64, parts[1].allSatisfy(\.isHexDigit) else {
            throw SproutError(.malformed, "unsupported digest '\(digest)'")
        }
        let path = try OCIImageArchive.inside(directory, "blobs/sha256/\(parts[1])")
        if verify { try OCILayer.verify(path, digest: digest) }
        return path
    }
}

/// An image imported into the layer store: its layers' digests, bottom
/// first, and its config.
public struct ImportedImage: Sendable {
    public var layers: [String]
    /// Bytes the import added to the store (0 when every layer was there).
    public var addedBytes: Int64
    public var config: OCIImageConfig
    /// The names the archive gives the image (`name:tag`), if any.
    public var references: [String]
}

extension LayerStore {
    /// Imports the image in the archive file `archive` (`docker save`, or an
    /// OCI layout in a tar): every layer checked and stored by content, so
    /// layers another image or env already brought add nothing. The archive
    /// is unpacked in a scratch folder of the store, removed after. A
    /// failure leaves the layers imported before it, used by no env, for
    /// the store's garbage collection (a caller in the server holds a layers
    /// lease while it imports, as builds do).
    public func importImage(archive: String, reference: String? = nil) async throws -> ImportedImage {
        try FileSystem.makeDirectories(root, mode: 0o700)
        let scratch = "\(root)/.archive-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(scratch) }
        try FileSystem.makeDirectories(scratch, mode: 0o700)
        let out = try await HostCommand.capture(
            ["tar", "--extract", "--file", archive, "--directory", scratch, "--no-same-owner", "--no-same-permissions"],
            timeout: .seconds(1800))
        guard out.status == 0 else {
            throw SproutError(.invalidArgument, "not an image archive tar can read: \(out.stderr.trimmed)")
        }
        let image = try OCIImageArchive.read(directory: scratch, reference: reference)
        var layers: [String] = []
        var added: Int64 = 0
        for layer in image.layers {
            let (digest, bytes) = try await importLayer(layer.path, digest: layer.digest)
            layers.append(digest)
            added += bytes
        }
        return ImportedImage(layers: layers, addedBytes: added, config: image.config, references: image.references)
    }
}
