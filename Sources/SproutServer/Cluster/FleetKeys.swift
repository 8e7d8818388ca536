import Foundation
import SproutAPI
import SproutCluster
import SproutCore

/// A fleet's API keys, in its PostgreSQL catalog: every API server checks
/// the same keys.
struct FleetKeys: KeyService {
    let catalog: ClusterCatalog

    func create(name: String, team: String, admin: Bool) async throws -> API.CreatedKey {
        let made = try Self.newKey(name: name, team: team, admin: admin, at: Date().timeIntervalSince1970)
        try await catalog.insertKey(Self.stored(made.key, hash: made.hash))
        return API.CreatedKey(key: made.key, secret: made.secret)
    }

    /// The fleet's first key, an admin one, if it has none yet (else nil).
    func createFirstAdmin() async throws -> API.CreatedKey? {
        let made = try Self.newKey(name: "admin", team: "default", admin: true, at: Date().timeIntervalSince1970)
        guard try await catalog.insertFirstKey(Self.stored(made.key, hash: made.hash)) else { return nil }
        return API.CreatedKey(key: made.key, secret: made.secret)
    }

    func authenticate(_ secret: String) async throws -> Identity? {
        guard Self.plausible(secret), let key = try await catalog.key(hash: KeyStore.hash(secret)), key.revokedAt == nil else { return nil }
        return Identity(keyID: key.id, team: key.team, admin: key.admin)
    }

    func list() async throws -> [API.Key] { try await catalog.keys().map(Self.api) }

    /// Returns once key `id` is revoked (checked every 2 s): a relayed
    /// WebSocket ends with it. A catalog that cannot be read ends nothing.
    func untilRevoked(_ id: String) async {
        while !Task.isCancelled {
            if let key = try? await catalog.key(id: id), key.revokedAt != nil { return }
            do { try await Task.sleep(for: .seconds(2)) } catch { return }
        }
    }

    func revoke(id: String) async throws -> API.Key {
        guard let key = try await catalog.revokeKey(id: id, at: Date().timeIntervalSince1970) else {
            throw SproutError(.notFound, "no key with id '\(id)'")
        }
        return Self.api(key)
    }

    static func stored(_ key: API.Key, hash: String) -> ClusterCatalog.StoredKey {
        ClusterCatalog.StoredKey(id: key.id, name: key.name, team: key.team, prefix: key.prefix, hash: hash, admin: key.admin,
                                 createdAt: key.createdAt, revokedAt: key.revokedAt)
    }

    static func api(_ key: ClusterCatalog.StoredKey) -> API.Key {
        API.Key(id: key.id, name: key.name, team: key.team, prefix: key.prefix, admin: key.admin, createdAt: key.createdAt, revokedAt: key.revokedAt)
    }
}
