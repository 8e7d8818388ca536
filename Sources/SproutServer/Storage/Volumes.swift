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
