import Crypto
import Foundation
import SproutAPI
import SproutConfig
import SproutCore
import SproutRegistry
import SproutStore
import SproutSystem

/// Envs made from OCI images: pulled from a registry (`from = "python:3.12-slim"`)
/// or imported from an archive (`sprout env import`). An image's env is an
/// ordinary env on the `scratch` base, one layer per image layer, named
/// `image-…` after the image, its id fixed by the team and the image's
/// manifest digest: the same image is made into an env once. Its config
/// gives the env's process defaults (`Env`, `WorkingDir`, `User`) and, for
/// an image that says it listens on a port, its `start` (`Entrypoint` +
/// `Cmd`, ready once the first port answers).
struct ImageEnvs: Sendable {
    let lifecycle: SandboxLifecycle

    /// Runs `body` with a client of the server's registry settings, shut down after however `body` ends.
    func withClient<T: Sendable>(_ body: (RegistryClient) async throws -> T) async throws -> T {
        let settings = lifecycle.settings
        let credentials = try settings.registryAuthFile.map { try RegistryCredentials(file: $0) } ?? RegistryCredentials()
        let client = RegistryClient(insecure: settings.insecureRegistries, credentials: credentials)
        do {
            let result = try await body(client)
            await client.shutdown()
            return result
        } catch {
            await client.shutdown()
            throw error
        }
    }

    /// The env `image` makes for `team`: its record if made before, else
    /// what it will be once pulled (`pull` makes it).
    func planned(_ image: RegistryClient.Image, team: String) async throws -> (env: ResolvedEnv, pulled: Bool) {
        let id = Self.envID(name: Self.name(image.reference), digest: image.digest, team: team)
        if let existing = try await lifecycle.catalog.envs.find(id), existing.team == team, existing.deletedAt == nil {
            return (try await lifecycle.graph.resolve(id, team: team), true)
        }
        let start = Self.start(image.config).map { EnvStart(command: $0.command, ready: $0.ready) }
        return (ResolvedEnv(id: id, base: Self.base, layers: [], start: start, process: Self.defaults(image.config),
                            image: image.reference.description), false)
    }

    /// Pulls the layers the store lacks (a layer of any image pulled before
    /// is not fetched again) and records the image's env. The caller holds
    /// a layers lease.
    func pull(_ image: RegistryClient.Image, client: RegistryClient, team: String, diskLimitMB: Int,
              log: @escaping @Sendable (String) -> Void) async throws -> EnvRecord {
        try checkSpace(image, diskLimitMB: diskLimitMB)
        // Two layers at a time: one downloads while another unpacks.
        let results = try await withThrowingTaskGroup(of: (Int, String, Int64).self) { group in
            var next = 0
            func add() {
                guard next < image.layers.count else { return }
                let index = next
                next += 1
                group.addTask { try await self.pullLayer(image, index: index, client: client, log: log) }
            }
            add()
            add()
            var done: [(Int, String, Int64)] = []
            while let result = try await group.next() {
                done.append(result)
                add()
            }
            return done.sorted { $0.0 < $1.0 }
        }
        let digests = results.map(\.1)
        let added = results.reduce(Int64(0)) { $0 + $1.2 }
        // What this pull stored is sized already; layers stored before are measured.
        let sizes = Dictionary(results.filter { $0.2 > 0 }.map { ($0.1, $0.2) }, uniquingKeysWith: { first, _ in first })
        return try await record(name: Self.name(image.reference), image: image.reference.description, digest: image.digest,
                                config: image.config, layers: digests, sizes: sizes, added: added, team: team)
    }

    /// Layer `index` of `image` as a stored layer: known from an earlier
    /// pull, or downloaded and unpacked at once (checked against its digest
    /// as it arrives, stored only if it matched).
    private func pullLayer(_ image: RegistryClient.Image, index: Int, client: RegistryClient, log: @Sendable (String) -> Void)
        async throws -> (Int, String, Int64)
    {
        let layers = lifecycle.stores.layers
        let layer = image.layers[index]
        let name = "layer \(index + 1)/\(image.layers.count) \(layer.digest.prefix(19))"
        let key = Self.layerKey(layer.digest)
        if let known = try await lifecycle.catalog.envs.cachedLayer(key), layers.contains(known) {
            log("\(name): already here")
            return (index, known, 0)
        }
        let t0 = monotonicSeconds()
        let downloaded = Locked(0.0)
        // Unpacked as it arrives; checked against its digest before it is stored.
        let (digest, bytes) = try await layers.importLayer(blobDigest: layer.digest) { unpacker in
            try await client.download(image.reference, layer) { try await unpacker.write($0) }
            downloaded.withLock { $0 = monotonicSeconds() }
        }
        try await lifecycle.catalog.envs.rememberLayer(key, digest)
        let end = monotonicSeconds()
        let arrived = downloaded.current > 0 ? downloaded.current : end
        log(String(format: "%@: %lld KiB pulled in %.1f s, unpacked as it came and stored %.1f s after", name, (layer.size ?? 0) >> 10,
                   arrived - t0, end - arrived))
        return (index, digest, bytes)
    }

    /// Refuses, before any download, an image whose layers (as the manifest
    /// sizes them, compressed) are over the build's disk limit, or more than
    /// the store's file system has free above the server's reserve.
    func checkSpace(_ image: RegistryClient.Image, diskLimitMB: Int) throws {
        let total = image.layers.reduce(Int64(0)) { $0 + ($1.size ?? 0) }
        let mib = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
        guard total <= Int64(diskLimitMB) << 20 else {
            throw SproutError(.tooLarge, "the image's layers are \(mib(total)) compressed, more than the build's disk limit of \(diskLimitMB) MiB"
                + " (build.disk_mb in sprout.toml)")
        }
        var fs = statvfs()
        let root = lifecycle.stores.layers.root
        try FileSystem.makeDirectories(root, mode: 0o700)
        if statvfs(root, &fs) == 0 {
            let free = Int64(fs.f_bavail) * Int64(fs.f_frsize) - lifecycle.settings.minimumFreeBytes
            guard total <= free else {
                throw SproutError(.tooLarge, "the image's layers are \(mib(total)) compressed; the store has \(mib(max(0, free))) free above its reserve")
            }
        }
    }

    /// `sprout env import`: the image in archive blob `blob` (`docker save`,
    /// or an OCI layout in a tar), named `name` or after the image.
    func importArchive(blob: String, reference: String?, name: String?, for identity: Identity) async throws -> API.Env {
        if let name { try EnvGraph.validateName(name) }
        guard BlobStore.isDigest(blob), try await EnvBuilder.notUploaded([blob], team: identity.team, lifecycle: lifecycle) == nil else { throw SproutError(.invalidArgument, "blob \(blob.prefix(80)) has not been uploaded (PUT /v1/blobs/{sha256} first)") }
        let archive = lifecycle.stores.blobs.path(blob)
        let layers = lifecycle.stores.layers
        return try await lifecycle.collector.leasing(.layers) {
            let imported = try await layers.importImage(archive: archive, reference: reference)
            // Named as the archive names it (an OCI layout may give only a tag);
            // identified by its layers and config.
            let known = reference ?? imported.references.first
            let parsed = known.flatMap { ImageReference.looksLikeImage($0) ? try? ImageReference(parsing: $0) : nil }
            let envName = name ?? parsed.map(Self.name) ?? known.map { Self.name(ImageReference(registry: "", repository: "image", tag: $0, digest: nil)) }
                ?? "image"
            let digest = "sha256:" + hexString(SHA256.hash(data: Data((imported.layers + ["\(imported.config)"]).joined(separator: "\n").utf8)))
            return try await record(name: envName, image: known ?? "archive", digest: digest, config: imported.config,
                                    layers: imported.layers, added: imported.addedBytes, team: identity.team).api
        }
    }

    /// Records the env of an image whose layers are in the store (`sizes`:
    /// the bytes of those whose size is known).
    private func record(name: String, image: String, digest: String, config: OCIImageConfig, layers: [String], sizes: [String: Int64] = [:],
                        added: Int64, team: String) async throws -> EnvRecord {
        let store = lifecycle.stores.layers
        var total = await LayerStore.diskUsage(lifecycle.host.bases.path(Self.base))
        for layer in layers {
            if let size = sizes[layer] { total += size } else { total += await LayerStore.diskUsage(store.path(layer)) }
        }
        let now = lifecycle.clock.now
        let start = Self.start(config)
        let env = EnvRecord(
            id: Self.envID(name: name, digest: digest, team: team), name: name, parent: Self.base, team: team, base: Self.base,
            layers: layers, createdAt: now, ownBytes: added, published: true, publishedAt: now, totalBytes: total,
            start: start?.command, ready: start?.ready, process: Self.defaults(config), image: image)
        return try await lifecycle.recordEnv(env)
    }

    static let base = "scratch"

    /// `image-<repository's last part>-<tag>`, as an env name allows.
    static func name(_ reference: ImageReference) -> String {
        let last = reference.repository.split(separator: "/").last.map(String.init) ?? "image"
        let raw = "image-\(last)" + (reference.tag.map { "-\($0)" } ?? "")
        return String(EnvConfig.nameCharacters(raw).prefix(64))
    }

    static func envID(name: String, digest: String, team: String) -> String {
        let hash = hexString(SHA256.hash(data: Data("image \(team) \(digest)".utf8)))
        return "\(name.prefix(55))-\(hash.prefix(8))"
    }

    /// What the step cache remembers an image layer (by its blob digest) as.
    static func layerKey(_ blobDigest: String) -> String { "oci-layer \(blobDigest)" }

    /// An image config's `Env`, `WorkingDir` and `User` (its user part:
    /// processes run with the user's own groups).
    static func defaults(_ config: OCIImageConfig) -> API.ProcessDefaults {
        var env: [String: String] = [:]
        for entry in config.env {
            guard let equals = entry.firstIndex(of: "="), equals != entry.startIndex else { continue }
            env[String(entry[..<equals])] = String(entry[entry.index(after: equals)...])
        }
        let user = config.user.flatMap { $0.split(separator: ":").first.map(String.init) }
        return API.ProcessDefaults(env: env.isEmpty ? nil : env, workdir: config.workingDir, user: user.flatMap(API.ProcessDefaults.nonRoot))
    }

    /// An image that says it listens on a port runs its command as the env's
    /// `start`, ready once the first port answers; a tool image (a shell or
    /// an interpreter as its command) starts nothing.
    static func start(_ config: OCIImageConfig) -> (command: String, ready: String)? {
        guard let command = config.command, let port = config.exposedPorts.first else { return nil }
        return (command.map(shellQuote).joined(separator: " "), "port:\(port)")
    }
}
