import Foundation
import Glibc
import SproutAPI
import SproutCore
import SproutHost
import SproutS3
import SproutStore
import SproutSystem

/// What a pause keeps in the object store (`--store s3://…`), so that a
/// paused sandbox outlives the disk of the host that paused it: its memory
/// image and its writable layer. Everything is named by content:
///
/// - `packs/<sha256>`: chunks of memory images in their stored form,
///   concatenated; a pause packs only the chunks the store does not hold
///   yet (a 32 MiB pack at most), so a paused idle shell is a few requests.
/// - `images/<id>.json`: an image's manifest (its bytes as the local store
///   keeps them: their digest is the id) and where each of its chunks is.
/// - `uppers/<sha256>.tar`: a writable layer as a tar (owners, modes,
///   xattrs, whiteouts).
///
/// Which pack holds which chunk is remembered in `DATA/remote/chunks.log`
/// (one line per chunk); a lost log only means chunks are uploaded again.
/// The local stores stay the working copy: a resume fetches only what the
/// host lacks.
public final class RemoteStore: Sendable {
    let client: S3Client
    let images: ImageStore
    /// Temporary files and the chunk log.
    let directory: String
    static let packLimit = 32 << 20

    struct Location: Codable, Sendable {
        var pack: String
        var offset: Int64
        var size: Int
    }

    /// `images/<id>.json`.
    struct RemoteImage: Codable {
        /// The manifest's bytes, as text (JSON).
        var manifest: String
        var chunks: [String: Location]
    }

    private let known = Locked<[String: Location]?>(nil)
    /// Pack → when this host last wrote or renewed it (seconds since the epoch), from `packs.log`.
    private let renewedAt = Locked<[String: Double]?>(nil)
    /// Seconds an object must go unreferenced before `StoreCollector` deletes
    /// it. What a pause or an env reuses of the store is renewed when it was
    /// written more than half of this ago, so nothing in use is that old.
    let grace: Double

    init(client: S3Client, images: ImageStore, directory: String, grace: Double = StoreCollector.defaultGrace) {
        self.client = client
        self.images = images
        self.directory = directory
        self.grace = grace
    }

    /// Whether something the store last had written at `time` must be renewed before it is reused.
    private func isStale(_ time: Double?) -> Bool { (time ?? 0) < Date().timeIntervalSince1970 - grace / 2 }

    /// Whether `stored` may be reused: written recently enough, or renewed
    /// now (false if it went meanwhile: the caller writes it again).
    private func reusable(_ stored: S3Client.Listed) async throws -> Bool {
        if !isStale(stored.lastModified?.timeIntervalSince1970) { return true }
        return try await client.touch(stored.key)
    }

    public var description: String { client.location.description }

    func shutdown() async { await client.shutdown() }

    /// Throws a clear error unless the store answers and lets us in.
    func check() async throws {
        do {
            try await client.checkBucket()
        } catch {
            throw SproutError(.unavailable, "the object store \(client.location.description) is not usable: \(error.sentence)")
        }
    }

    // MARK: Memory images

    /// Puts image `id` (with every chunk the store lacks) in the store.
    /// Returns the requests it took.
    @discardableResult
    func pushImage(_ id: String) async throws -> Int {
        let before = client.requestCount
        let manifestBytes = try images.manifestBytes(id)
        let manifest = try JSONDecoder().decode(ImageStore.Manifest.self, from: Data(manifestBytes))
        var locations = try await reusableLocations(for: manifest)
        var added: [String: Location] = [:]
        var pack: [UInt8] = []
        var inPack: [(digest: String, offset: Int64, size: Int)] = []
        var queued: Set<String> = []
        func flush() async throws {
            guard !pack.isEmpty else { return }
            let key = "packs/" + SigV4.payloadHash(pack)
            try await client.put(key, bytes: pack)
            try renewed([key])
            for chunk in inPack { added[chunk.digest] = Location(pack: key, offset: chunk.offset, size: chunk.size) }
            pack = []
            inPack = []
        }
        for file in manifest.files {
            // Each chunk the store lacks goes into a pack once (an image repeats chunks: zero pages).
            for chunk in file.chunks where locations[chunk.digest] == nil && queued.insert(chunk.digest).inserted {
                let stored = try images.storedChunk(chunk.digest)
                inPack.append((chunk.digest, Int64(pack.count), stored.count))
                pack += stored
                if pack.count >= Self.packLimit { try await flush() }
            }
        }
        try await flush()
        locations.merge(added) { a, _ in a }
        var chunks: [String: Location] = [:]
        for file in manifest.files { for chunk in file.chunks { chunks[chunk.digest] = locations[chunk.digest] } }
        let document = RemoteImage(manifest: String(decoding: manifestBytes, as: UTF8.self), chunks: chunks)
        try await client.put("images/\(id).json", bytes: Array(try JSONEncoder.sorted.encode(document)))
        try remember(added)
        mark(.image, id, bytes: images.usage([id]).stored)
        return client.requestCount - before
    }

    /// Makes image `id` local, fetching its manifest and the chunks the host
    /// lacks (one ranged read per pack). Returns the requests it took (0: it was local).
    @discardableResult
    func fetchImage(_ id: String) async throws -> Int {
        if images.contains(id) {
            used(.image, id)
            return 0
        }
        let before = client.requestCount
        guard Identifiers.isSafeName(id), let bytes = try await client.get("images/\(id).json") else {
            throw SproutError(.notFound, "memory image \(id) is neither on this host nor in the store \(client.location.description)")
        }
        let document: RemoteImage
        do { document = try JSONDecoder().decode(RemoteImage.self, from: Data(bytes)) } catch {
            throw SproutError(.malformed, "images/\(id).json in the store is damaged: \(error)")
        }
        let manifestBytes = Array(document.manifest.utf8)
        let manifest = try JSONDecoder().decode(ImageStore.Manifest.self, from: Data(manifestBytes))
        var lengths: [String: Int] = [:]
        for file in manifest.files { for chunk in file.chunks { lengths[chunk.digest] = chunk.length } }
        var byPack: [String: [(digest: String, location: Location)]] = [:]
        for (digest, _) in lengths where !images.containsChunk(digest) {
            guard let location = document.chunks[digest] else {
                throw SproutError(.malformed, "images/\(id).json in the store does not say where chunk \(digest) is")
            }
            byPack[location.pack, default: []].append((digest, location))
        }
        for (pack, chunks) in byPack {
            let start = chunks.map(\.location.offset).min()!
            let end = chunks.map { $0.location.offset + Int64($0.location.size) }.max()!
            guard let span = try await client.get(pack, range: start..<end, limit: Self.packLimit + (1 << 20)) else {
                throw SproutError(.notFound, "\(pack) of memory image \(id) is missing from the store \(client.location.description)")
            }
            for chunk in chunks {
                let from = Int(chunk.location.offset - start)
                try images.putChunk(chunk.digest, stored: Array(span[from..<from + chunk.location.size]), length: lengths[chunk.digest]!)
            }
        }
        try images.putManifest(id, bytes: manifestBytes)
        try remember(document.chunks)
        mark(.image, id, bytes: images.usage([id]).stored)
        return client.requestCount - before
    }

    /// Where the store has the chunks of `manifest` that this host knows of,
    /// for a push to reuse: each pack among them written or renewed more
    /// than half the grace ago is renewed first (`touch`), and one the store
    /// no longer has is forgotten (its chunks are packed again).
    private func reusableLocations(for manifest: ImageStore.Manifest) async throws -> [String: Location] {
        var locations = try knownLocations()
        let packs = Set(manifest.files.flatMap(\.chunks).compactMap { locations[$0.digest]?.pack })
        let times = try renewalTimes()
        var renewed: [String] = []
        var lost: Set<String> = []
        for pack in packs where isStale(times[pack]) {
            if try await client.touch(pack) { renewed.append(pack) } else { lost.insert(pack) }
        }
        try self.renewed(renewed)
        if !lost.isEmpty {
            try forget(packs: lost)
            locations = locations.filter { !lost.contains($0.value.pack) }
        }
        return locations
    }

    /// Chunk → where the store has it, as this host learnt it. `chunks.log`
    /// has a line per chunk (`DIGEST PACK OFFSET SIZE`) and `- PACK` for a
    /// pack the store no longer has.
    private func knownLocations() throws -> [String: Location] {
        if let current = known.current { return current }
        var loaded: [String: Location] = [:]
        for parts in try logLines("chunks.log") {
            if parts.count == 2, parts[0] == "-" {
                loaded = loaded.filter { $0.value.pack != parts[1] }
                continue
            }
            guard parts.count == 4, let offset = Int64(parts[2]), let size = Int(parts[3]) else { continue }
            loaded[String(parts[0])] = Location(pack: String(parts[1]), offset: offset, size: size)
        }
        known.withLock { $0 = $0 ?? loaded }
        return known.current ?? loaded
    }

    private func remember(_ locations: [String: Location]) throws {
        guard !locations.isEmpty else { return }
        _ = try knownLocations()
        try known.withLock { current in
            try appendLog("chunks.log", locations.map { "\($0.key) \($0.value.pack) \($0.value.offset) \($0.value.size)\n" }.joined())
            current?.merge(locations) { _, new in new }
        }
    }

    /// Packs the store lost (or the collector deleted): their chunks are packed again at the next push.
    func forget(packs: Set<String>) throws {
        guard !packs.isEmpty else { return }
        _ = try knownLocations()
        try known.withLock { current in
            try appendLog("chunks.log", packs.map { "- \($0)\n" }.joined())
            current = current?.filter { !packs.contains($0.value.pack) }
        }
    }

    /// Pack → when this host last wrote or renewed it (`packs.log`: `PACK SECONDS`).
    private func renewalTimes() throws -> [String: Double] {
        if let current = renewedAt.current { return current }
        var loaded: [String: Double] = [:]
        for parts in try logLines("packs.log") where parts.count == 2 {
            if let time = Double(parts[1]) { loaded[String(parts[0])] = time }
        }
        renewedAt.withLock { $0 = $0 ?? loaded }
        return renewedAt.current ?? loaded
    }

    private func renewed(_ packs: [String]) throws {
        guard !packs.isEmpty else { return }
        _ = try renewalTimes()
        let now = Date().timeIntervalSince1970
        try renewedAt.withLock { current in
            try appendLog("packs.log", packs.map { "\($0) \(now)\n" }.joined())
            for pack in packs { current?[pack] = now }
        }
    }

    private func logLines(_ name: String) throws -> [[Substring]] {
        let text = (try? Descriptor.readFile(directory + "/" + name, limit: 1 << 30)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        return text.split(separator: "\n").map { $0.split(separator: " ") }
    }

    private func appendLog(_ name: String, _ text: String) throws {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let fd = open(directory + "/" + name, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SproutError.system("open \(name)") }
        defer { close(fd) }
        try Descriptor.writeAll(fd, Array(text.utf8))
    }

    // MARK: Paused sandboxes

    /// `sandboxes/<id>/pause.json`: the last pause of a sandbox, for a node that takes it in.
    func putHandoff(_ handoff: PauseHandoff, for id: String) async throws {
        try await client.put("sandboxes/\(id)/pause.json", bytes: Array(try JSONEncoder.sorted.encode(handoff)))
    }

    /// Takes the sandbox's pause out of the store as it resumes (what is
    /// read back if the resume fails): once it runs again, a node that took
    /// that pause in would bring back an older state than the one it lost.
    func takeHandoff(for id: String) async throws -> PauseHandoff? {
        guard let handoff = try await storedHandoff(for: id) else { return nil }
        try await client.delete("sandboxes/\(id)/pause.json")
        return handoff
    }

    func handoff(for id: String) async throws -> PauseHandoff {
        guard let handoff = try await storedHandoff(for: id) else {
            throw SproutError(.notFound, "sandbox \(id) has no pause in the store \(client.location.description) (it was not paused there, or it has resumed since)")
        }
        return handoff
    }

    private func storedHandoff(for id: String) async throws -> PauseHandoff? {
        guard Identifiers.isSafeName(id), let bytes = try await client.get("sandboxes/\(id)/pause.json") else { return nil }
        do { return try JSONDecoder().decode(PauseHandoff.self, from: Data(bytes)) } catch {
            throw SproutError(.malformed, "sandboxes/\(id)/pause.json in the store is damaged: \(error)")
        }
    }

    // MARK: Collection

    /// Deletes what nothing holds: the collector's sweep (see `StoreCollector`).
    /// Roots are the env records (`envs/` but for deleted ones, whose
    /// records go a grace after the delete; and `localEnvs`) and the pauses
    /// (`sandboxes/<id>/pause.json`) `isLive` keeps; they hold layers,
    /// memory images (and through those, packs) and writable layers. An
    /// object is deleted only when no root holds it and it was written more
    /// than `grace` before the mark, and only while the sweep is within a
    /// quarter of the grace of its mark: whatever a pause or a build reuses
    /// was written or renewed less than half the grace before, so one that
    /// began before the mark has made its root by the time anything it uses
    /// could go. Names, tags and anything else are never touched. A root
    /// that cannot be read stops the collection before it deletes anything.
    /// Returns the report and the envs the store records as deleted.
    func collect(
        grace: Double, localEnvs: [EnvRecord], isLive: @Sendable (String, PauseHandoff) async throws -> Bool
    ) async throws -> (report: API.StoreCollection, deletedEnvs: [String]) {
        let mark = Date().timeIntervalSince1970
        let objects = try await client.list(prefix: "")
        func old(_ object: S3Client.Listed) -> Bool { (object.lastModified?.timeIntervalSince1970 ?? .infinity) < mark - grace }
        var images: Set<String> = [], uppers: Set<String> = [], layers: Set<String> = []
        var roots = 0
        func hold(_ env: EnvRecord?) {
            guard let env else { return }
            layers.formUnion(env.layers)
            if let image = env.memoryImage { images.insert(image) }
        }
        var dead: [S3Client.Listed] = []
        var deleted: [String] = []
        for object in objects {
            let parts = object.key.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 3, parts[0] == "sandboxes", parts[2] == "pause.json" {
                // Gone since the listing: a resume took it (having fetched what it holds first).
                guard let handoff = try await storedHandoff(for: String(parts[1])) else { continue }
                var live = !old(object)
                if !live { live = try await isLive(String(parts[1]), handoff) }
                if live {
                    roots += 1
                    hold(handoff.env)
                    if let image = handoff.image { images.insert(image) }
                    if let upper = handoff.record.storedUpper { uppers.insert(upper) }
                } else {
                    dead.append(object)
                }
            } else if parts.count == 2, parts[0] == "envs", parts[1].hasSuffix(".json") {
                guard let env = try await storedEnv(String(parts[1].dropLast(".json".count))) else { continue }
                if env.deletedAt != nil {
                    // Deleted: it holds nothing; its record goes a grace after the delete wrote it.
                    deleted.append(env.id)
                    if old(object) { dead.append(object) }
                    continue
                }
                roots += 1
                hold(env)
            }
        }
        localEnvs.forEach(hold)
        var packs: Set<String> = []
        for image in images {
            guard let bytes = try await client.get("images/\(image).json") else { continue }
            do {
                packs.formUnion(try JSONDecoder().decode(RemoteImage.self, from: Data(bytes)).chunks.values.map(\.pack))
            } catch {
                throw SproutError(.malformed, "images/\(image).json in the store is damaged (nothing was collected): \(error)")
            }
        }
        let deadKeys = Set(dead.map(\.key))
        func kind(_ object: S3Client.Listed) -> String? {
            let key = object.key
            if deadKeys.contains(key) { return key.hasPrefix("envs/") ? "envs" : "handoffs" }
            if key.hasPrefix("images/"), key.hasSuffix(".json"), !images.contains(String(key.dropFirst("images/".count).dropLast(".json".count))) { return "images" }
            if key.hasPrefix("packs/"), !packs.contains(key) { return "packs" }
            if key.hasPrefix("uppers/"), !uppers.contains(key) { return "uppers" }
            let parts = key.split(separator: "/")
            if parts.count == 3, parts[0] == "layers", !layers.contains(String(parts[1])) { return "layers" }
            return nil
        }
        var report = API.StoreCollection(roots: roots, kept: 0, deleted: [:], deletedBytes: 0, stoppedEarly: false, graceSeconds: grace)
        var gone: Set<String> = []
        // Handoffs first: what only they held goes in the same sweep.
        for object in dead + objects.filter({ !deadKeys.contains($0.key) }) {
            guard let kind = kind(object), old(object) else {
                report.kept += 1
                continue
            }
            guard Date().timeIntervalSince1970 - mark <= max(grace / 4, 60) else {
                report.stoppedEarly = true
                break
            }
            try await client.delete(object.key)
            report.deleted[kind, default: 0] += 1
            report.deletedBytes += object.size
            if kind == "packs" { gone.insert(object.key) }
        }
        try forget(packs: gone)
        return (report, deleted)
    }

    // MARK: Envs

    /// `envs/<id>.json`: an env as recorded, for another node that is asked
    /// for it (its layers and image are stored before it).
    func putEnv(_ env: EnvRecord) async throws {
        try await client.put("envs/\(env.id).json", bytes: Array(try JSONEncoder.sorted.encode(env)))
    }

    func storedEnv(_ id: String) async throws -> EnvRecord? {
        guard Identifiers.isSafeName(id), let bytes = try await client.get("envs/\(id).json") else { return nil }
        do { return try JSONDecoder().decode(EnvRecord.self, from: Data(bytes)) } catch {
            throw SproutError(.malformed, "envs/\(id).json in the store is damaged: \(error)")
        }
    }

    /// Every env the store records as a fork of `id`, or of a fork of it,
    /// deleted ones too: what a fleet-wide delete of `id` takes with it,
    /// wherever those were made. One listing and a read per recorded env.
    func storedDescendants(of id: String) async throws -> [String] {
        var children: [String: [String]] = [:]
        for object in try await client.list(prefix: "envs/") where object.key.hasSuffix(".json") {
            guard let env = try await storedEnv(String(object.key.dropFirst("envs/".count).dropLast(".json".count))) else { continue }
            children[env.parent, default: []].append(env.id)
        }
        var found: [String] = []
        var next = [id]
        while let parent = next.popLast() {
            for child in children[parent] ?? [] where !found.contains(child) {
                found.append(child)
                next.append(child)
            }
        }
        return found
    }

    /// Marks envs deleted in the store (`envs/<id>.json` keeps the record,
    /// with `deletedAt`): no node finds them by name or id any more, a node
    /// that missed the delete forgets them at its next collection
    /// (`StoreCollector`), and the collection removes the records a grace
    /// later (their layers, once nothing else holds them). `known` are the
    /// records of envs the store may lack (made before the store was set).
    func tombstone(_ ids: [String], known: [EnvRecord], at time: Double) async throws {
        for id in ids {
            guard var env = try await storedEnv(id) ?? known.first(where: { $0.id == id }) else { continue }
            guard env.deletedAt == nil else { continue }
            (env.deletedAt, env.published, env.publishedAt) = (time, false, nil)
            try await client.put("envs/\(id).json", bytes: Array(try JSONEncoder.sorted.encode(env)))
        }
    }

    struct NamePointer: Codable { var env: String }

    /// `names/<team>/<name>.json`: the env the name was last published as, fleet-wide.
    func putName(_ name: String, team: String, env: String) async throws {
        try await client.put("names/\(team)/\(name).json", bytes: Array(try JSONEncoder.sorted.encode(NamePointer(env: env))))
    }

    func storedName(_ name: String, team: String) async throws -> String? {
        guard Identifiers.isSafeName(name), Identifiers.isSafeName(team), let bytes = try await client.get("names/\(team)/\(name).json") else { return nil }
        return (try? JSONDecoder().decode(NamePointer.self, from: Data(bytes)))?.env
    }

    /// `tags/<team>/<name>/<tag>.json`: the env `name:tag` names, fleet-wide.
    private func tagKey(_ name: String, _ tag: String, team: String) -> String? {
        guard Identifiers.isSafeName(name), Identifiers.isSafeName(team), !tag.isEmpty, tag.utf8.count <= 128 else { return nil }
        // Tags may hold dots; keys stay plain.
        let safe = Identifiers.isSafeName(tag) ? tag : "x-" + tag.utf8.map { String(format: "%02x", $0) }.joined()
        return "tags/\(team)/\(name)/\(safe).json"
    }

    func putTag(_ name: String, _ tag: String, team: String, env: String) async throws {
        guard let key = tagKey(name, tag, team: team) else { throw SproutError(.invalidArgument, "cannot keep tag \(name):\(tag) in the store") }
        try await client.put(key, bytes: Array(try JSONEncoder.sorted.encode(NamePointer(env: env))))
    }

    func deleteTag(_ name: String, _ tag: String, team: String) async throws {
        guard let key = tagKey(name, tag, team: team) else { return }
        try await client.delete(key)
    }

    func storedTag(_ name: String, _ tag: String, team: String) async throws -> String? {
        guard let key = tagKey(name, tag, team: team), let bytes = try await client.get(key) else { return nil }
        return (try? JSONDecoder().decode(NamePointer.self, from: Data(bytes)))?.env
    }

    // MARK: Layers

    /// Puts layer `digest` (the directory `path`) in the store unless it is
    /// there: `layers/<digest>/<sha256 of its tar>.tar`, so the fetch can
    /// check what it got. Returns whether it uploaded.
    @discardableResult
    func pushLayer(_ digest: String, path: String) async throws -> Bool {
        // One the store has is reused, renewed first if it was written long ago (see `grace`).
        if let stored = try await client.list(prefix: "layers/\(digest)/").first(where: { $0.key.hasSuffix(".tar") }),
           try await reusable(stored) {
            if marked(.layer, digest) == nil { mark(.layer, digest, bytes: await LayerStore.diskUsage(path)) }
            return false
        }
        let (tar, sha) = try await pack(path)
        defer { unlink(tar) }
        try await client.put("layers/\(digest)/\(sha).tar", file: tar)
        mark(.layer, digest, bytes: await LayerStore.diskUsage(path))
        return true
    }

    /// Fetches layer `digest` into `layers` (a layer the host has is left
    /// alone, its use noted). Whether it fetched.
    @discardableResult
    func fetchLayer(_ digest: String, into layers: LayerStore) async throws -> Bool {
        if layers.contains(digest) {
            used(.layer, digest)
            return false
        }
        guard let key = try await client.list(prefix: "layers/\(digest)/").first(where: { $0.key.hasSuffix(".tar") })?.key else {
            throw SproutError(.notFound, "layer \(digest.prefix(20)) is neither on this host nor in the store \(client.location.description)")
        }
        let sha = String(key.split(separator: "/").last!.dropLast(".tar".count))
        try FileSystem.makeDirectories(layers.root, mode: 0o700)
        let temp = layers.root + "/.fetch-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(temp) }
        try await unpack(key, sha256: sha, into: temp)
        try layers.adopt(directory: temp, as: digest)
        mark(.layer, digest, bytes: await LayerStore.diskUsage(layers.path(digest)))
        return true
    }

    // MARK: What the host holds of the store

    /// A memory image or an env layer the store has and this host holds a
    /// copy of (`--cache-gb` bounds those copies).
    enum Cached: String, Sendable, CaseIterable {
        case image = "images", layer = "layers"
    }

    struct CachedEntry: Sendable, Equatable {
        var id: String
        /// What the copy takes on disk (an image's chunks counted whole, though images share some).
        var bytes: Int64
        /// When the host last used it (seconds since the epoch).
        var lastUse: Double
    }

    private func markerPath(_ kind: Cached, _ id: String) -> String { "\(directory)/cached/\(kind.rawValue)/\(id)" }

    /// `id` is in the store, and used now; its copy takes `bytes`.
    func mark(_ kind: Cached, _ id: String, bytes: Int64) {
        guard Identifiers.isSafeName(id) else { return }
        try? FileSystem.makeDirectories("\(directory)/cached/\(kind.rawValue)", mode: 0o700)
        try? FileSystem.writeAtomically(markerPath(kind, id), "\(bytes)\n")
    }

    /// The copy of `id` was used now (the least recently used copies go first).
    func used(_ kind: Cached, _ id: String) {
        guard Identifiers.isSafeName(id) else { return }
        _ = utimensat(AT_FDCWD, markerPath(kind, id), nil, 0)
    }

    func marked(_ kind: Cached, _ id: String) -> CachedEntry? {
        let path = markerPath(kind, id)
        var info = stat()
        guard stat(path, &info) == 0, let bytes = try? Descriptor.readFile(path, limit: 64) else { return nil }
        let size = Int64(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        return CachedEntry(id: id, bytes: size, lastUse: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
    }

    /// Everything of `kind` the store has and this host has held, least recently used first.
    func cached(_ kind: Cached) -> [CachedEntry] {
        let names = (try? FileSystem.children("\(directory)/cached/\(kind.rawValue)")) ?? []
        return names.compactMap { marked(kind, $0) }.sorted { ($0.lastUse, $0.id) < ($1.lastUse, $1.id) }
    }

    // MARK: Writable layers

    /// Puts the directory `upper` in the store as a tar; returns its key.
    func pushDirectory(_ upper: String) async throws -> String {
        let (tar, sha) = try await pack(upper)
        defer { unlink(tar) }
        let key = "uppers/\(sha).tar"
        // The same content stored before is reused, renewed first if it was written long ago (see `grace`).
        if let stored = try await client.info(key), try await reusable(stored) { return key }
        try await client.put(key, file: tar)
        return key
    }

    /// Replaces the directory `upper` with the layer stored as `key`.
    func fetchDirectory(_ key: String, into upper: String) async throws {
        guard key.hasPrefix("uppers/"), key.hasSuffix(".tar") else { throw SproutError(.malformed, "\(key) is not a stored writable layer") }
        let temp = upper + ".fetch"
        try? FileSystem.removeTree(temp)
        do {
            try await unpack(key, sha256: String(key.dropFirst("uppers/".count).dropLast(".tar".count)), into: temp)
        } catch {
            try? FileSystem.removeTree(temp)
            throw error
        }
        try? FileSystem.removeTree(upper)
        try sysCall("rename \(temp)") { rename(temp, upper) }
    }

    // MARK: Tars

    /// The directory as a tar in `directory` (owners, modes, xattrs, overlay
    /// whiteouts and opaque markers, sparse files); the caller removes it.
    private func pack(_ path: String) async throws -> (tar: String, sha256: String) {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let tar = directory + "/.pack-\(Identifiers.random(length: 8)).tar"
        let out = try await HostCommand.capture(
            ["tar", "--create", "--file", tar, "--directory", path, "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sparse", "."],
            timeout: .seconds(1800))
        guard out.status == 0 else {
            unlink(tar)
            throw SproutError(.io, "cannot pack \(path): \(out.stderr.trimmed)")
        }
        return (tar, try LocalFiles.sha256(tar))
    }

    /// Downloads the tar `key` (checked against `sha256`) and unpacks it into the new directory `target`.
    private func unpack(_ key: String, sha256: String, into target: String) async throws {
        try FileSystem.makeDirectories(directory, mode: 0o700)
        let tar = directory + "/.fetch-\(Identifiers.random(length: 8)).tar"
        defer { unlink(tar) }
        _ = try await client.download(key, to: tar, sha256: sha256)
        try FileSystem.makeDirectories(target)
        let out = try await HostCommand.capture(
            ["tar", "--extract", "--file", tar, "--directory", target, "--numeric-owner", "--same-owner", "--same-permissions",
             "--xattrs", "--xattrs-include=*"], timeout: .seconds(1800))
        guard out.status == 0 else { throw SproutError(.io, "cannot unpack \(key) from the store: \(out.stderr.trimmed)") }
    }
}

/// A paused sandbox as its node left it: its record, its env (nil for a
/// base), and whether the pause kept its memory.
struct PauseHandoff: Codable, Sendable {
    var record: SandboxRecord
    var env: EnvRecord?
    var memory: Bool
    /// The instance (server data directory) that wrote it: the one whose
    /// collector may find it dead (nil in handoffs written before this was kept).
    var writer: String? = nil

    /// The memory image it holds in the store (nil for a pause that kept only files).
    var image: String? { memory ? record.imageList.last : nil }
}
