import Foundation
import Glibc
import SproutAPI
import SproutCore
import SproutSystem

/// Volumes as the API sees them: a team's named file systems, made,
/// listed, deleted and read or written without a sandbox.
public struct Volumes: Sendable {
    let catalog: Catalog
    let store: VolumeStore
    let lifecycle: SandboxLifecycle

    static let defaultSizeMB = 1024

    static func validateName(_ name: String) throws {
        guard (1...64).contains(name.count), name.first.map({ $0.isASCII && ($0.isLetter || $0.isNumber) }) == true,
              name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || "-_.".contains($0)) }), !name.hasPrefix("vol_")
        else {
            throw SproutError(.invalidArgument,
                              "a volume name is 1-64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit, and not vol_…")
        }
    }

    public func create(_ body: API.CreateVolume, for identity: Identity) async throws -> API.Volume {
        try Self.validateName(body.name)
        let sizeMB = body.sizeMB ?? Self.defaultSizeMB
        guard VolumeStore.sizeRangeMB.contains(sizeMB) else {
            throw SproutError(.invalidArgument, "sizeMB must be between \(VolumeStore.sizeRangeMB.lowerBound) and \(VolumeStore.sizeRangeMB.upperBound)")
        }
        // Sparse, so it may promise more than is free, but never more than the disk holding it.
        var st = statvfs()
        if statvfs(lifecycle.settings.dataDirectory, &st) == 0, Int64(sizeMB) << 20 > Int64(st.f_blocks) * Int64(st.f_frsize) {
            throw SproutError(.invalidArgument, "sizeMB \(sizeMB) is larger than the disk that holds volumes (\((Int64(st.f_blocks) * Int64(st.f_frsize)) >> 20) MiB)")
        }
        if let free = FileSystem.freeBytes(lifecycle.settings.dataDirectory), free < lifecycle.settings.minimumFreeBytes {
            throw SproutError(.unavailable, "not enough disk space for a volume: \(free >> 20) MiB free")
        }
        let record = VolumeRecord(id: Identifiers.make(prefix: "vol", length: 16), team: identity.team, name: body.name, sizeMB: sizeMB,
                                  createdAt: lifecycle.clock.now)
        // The name is taken first, so two creates of one name make one file system.
        try await catalog.volumes.insert(record)
        do {
            try await store.create(record.id, sizeMB: sizeMB)
        } catch {
            try? await catalog.volumes.delete(record.id)
            throw error
        }
        return try await api(record)
    }

    public func list(for identity: Identity) async throws -> [API.Volume] {
        var out: [API.Volume] = []
        for record in try await catalog.volumes.list(team: identity.team) { out.append(try await api(record)) }
        return out
    }

    public func show(_ nameOrID: String, for identity: Identity) async throws -> API.Volume {
        try await api(try await find(nameOrID, identity))
    }

    /// Deletes a volume and its files; refused while a sandbox that has not
    /// ended mounts it, unless `force`, which kills those sandboxes first.
    public func delete(_ nameOrID: String, force: Bool, for identity: Identity) async throws {
        let record = try await find(nameOrID, identity)
        let users = try await catalog.volumes.users(record.id)
        if !users.isEmpty {
            guard force else {
                throw SproutError(.conflict, "volume \(record.name) is mounted by \(users.joined(separator: ", ")); kill them first or delete with force")
            }
            for id in users { _ = try? await lifecycle.kill(id, reason: "its volume \(record.name) was deleted") }
        }
        try await catalog.volumes.delete(record.id)
        await store.remove(record.id)
        lifecycle.metrics.volumeDeleted(record.id, record.name, record.team)
    }

    // MARK: Moves between nodes

    /// The first half of moving a volume to another node of a fleet (admin,
    /// for the API server): it mounts here no more, and its file system goes
    /// to the object store. Refused while a sandbox that has not ended
    /// mounts it, unless `withPaused` and each of them is paused (a drain
    /// moves those with it). The volume stays here until its delete ends the
    /// move, or `cancelExport`.
    public func export(_ nameOrID: String, withPaused: Bool, for identity: Identity) async throws -> API.VolumeExport {
        let remote = try moveStore(for: identity)
        let record = try await find(nameOrID, identity)
        let folder = try await store.beginMove(record.id)
        defer { try? FileSystem.removeTree(folder) }
        do {
            var running: [String] = []
            for id in try await catalog.volumes.users(record.id) {
                let state = try await catalog.sandboxes.find(id)?.state
                if !withPaused || state != .paused { running.append(id) }
            }
            guard running.isEmpty else {
                throw SproutError(.conflict, "volume \(record.name) is mounted by \(running.joined(separator: ", ")); "
                    + "a volume moves without sandboxes that mount it (a drain moves them with it)")
            }
            let key = try await remote.pushDirectory(folder)
            return API.VolumeExport(id: record.id, name: record.name, team: record.team, sizeMB: record.sizeMB, createdAt: record.createdAt, key: key)
        } catch {
            await store.endMove(record.id)
            throw error
        }
    }

    /// Moves are an admin's (an API server's for its caller).
    static func requireMover(_ identity: Identity) throws {
        guard identity.admin else { throw SproutError(.forbidden, "moving a volume needs an admin key") }
    }

    /// The object store a move goes through, for an admin.
    func moveStore(for identity: Identity) throws -> RemoteStore {
        try Self.requireMover(identity)
        guard let remote = lifecycle.stores.remote else {
            throw SproutError(.unsupported, "moving a volume needs the fleet's object store (--store s3://…)")
        }
        return remote
    }

    /// Ends a move that did not happen: the volume mounts here again.
    public func cancelExport(_ nameOrID: String, for identity: Identity) async throws {
        try Self.requireMover(identity)
        await store.endMove(try await find(nameOrID, identity).id)
    }

    /// The second half of a move: the volume `export` describes, taken in
    /// from the object store and recorded here under its id, name and team.
    public func importVolume(_ export: API.VolumeExport, for identity: Identity) async throws -> API.Volume {
        let remote = try moveStore(for: identity)
        try Self.validateName(export.name)
        guard export.id.hasPrefix("vol_"), Identifiers.isSafeName(export.id), Identifiers.isSafeName(export.team),
              VolumeStore.sizeRangeMB.contains(export.sizeMB), export.key.hasPrefix("uppers/")
        else { throw SproutError(.invalidArgument, "not a volume export: \(export.id)") }
        let record = VolumeRecord(id: export.id, team: export.team, name: export.name, sizeMB: export.sizeMB, createdAt: export.createdAt)
        // Refused when the id or the team's name is here already.
        try await catalog.volumes.insert(record)
        do {
            try await store.adopt(record.id) { folder in try await remote.fetchDirectory(export.key, into: folder) }
        } catch {
            try? await catalog.volumes.delete(record.id)
            throw error
        }
        lifecycle.logger.notice("volume taken in from another node", metadata: ["volume": "\(record.id)", "name": "\(record.name)"])
        return try await api(record)
    }

    /// The volume's files (mounted first if this server has not yet).
    public func files(_ nameOrID: String, for identity: Identity) async throws -> VolumeFiles {
        let record = try await find(nameOrID, identity)
        return VolumeFiles(root: try await store.mount(record.id))
    }

    /// A volume by id alone, for a caller that proved access otherwise (E2B's volume token).
    func files(id: String) async throws -> VolumeFiles {
        guard let record = try await catalog.volumes.find(id: id) else { throw SproutError(.notFound, "no volume with id '\(id.prefix(64))'") }
        return VolumeFiles(root: try await store.mount(record.id))
    }

    func find(_ nameOrID: String, _ identity: Identity) async throws -> VolumeRecord {
        guard let record = try await catalog.volumes.find(nameOrID, team: identity.team) else {
            throw SproutError(.notFound, "no volume named '\(nameOrID.prefix(64))'")
        }
        return record
    }

    func api(_ record: VolumeRecord) async throws -> API.Volume {
        API.Volume(id: record.id, name: record.name, sizeMB: record.sizeMB, usedBytes: store.usage(record.id)?.used, createdAt: record.createdAt,
                   mountedBy: try await catalog.volumes.users(record.id))
    }

    /// Each volume's bytes in use, for `/metrics` (mounted ones only).
    func usage() async -> [(id: String, name: String, team: String, used: Int64)] {
        let records = (try? await catalog.volumes.all()) ?? []
        return records.compactMap { record in store.usage(record.id).map { (record.id, record.name, record.team, $0.used) } }
    }
}
