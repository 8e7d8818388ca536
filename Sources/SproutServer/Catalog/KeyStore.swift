import Crypto
import Foundation
import SproutCluster
import SproutAPI
import SproutCore

/// Who is calling: the key's team and whether it may administer keys
/// (what `GET /v1/whoami` answers).
public typealias Identity = API.WhoAmI

extension Identity {
    /// The same key acting for `team` (an API server acting for each sandbox's or volume's team).
    func acting(for team: String) -> Identity { Identity(keyID: keyID, team: team, admin: admin) }
}

/// A stored API key. The secret itself is never stored, only its SHA-256.
struct KeyRecord: StoredRecord {
    static let table = "apiKey"
    var id: String
    var name: String
    var team: String
    var prefix: String
    var hash: String
    var admin: Bool
    var createdAt: Double
    var revokedAt: Double?

    var api: API.Key {
        API.Key(id: id, name: name, team: team, prefix: prefix, admin: admin, createdAt: createdAt, revokedAt: revokedAt)
    }
}

/// What the routes need of API keys: one server's own (`KeyStore`, in
/// SQLite) or a fleet's (`FleetKeys`, in PostgreSQL).
public protocol KeyService: Sendable {
    func create(name: String, team: String, admin: Bool) async throws -> API.CreatedKey
    /// The identity behind `secret`, or nil for an unknown or revoked key.
    func authenticate(_ secret: String) async throws -> Identity?
    func list() async throws -> [API.Key]
    func revoke(id: String) async throws -> API.Key
}

extension KeyService {
    /// A new key's secret and stored form, checked (the same rules everywhere).
    static func newKey(name: String, team: String, admin: Bool, at time: Double) throws -> (secret: String, key: API.Key, hash: String) {
        guard KeyStore.isValidName(team) else {
            throw SproutError(.invalidArgument, "team must be 1-64 characters of a-z, 0-9, '-' and '_'")
        }
        guard name.count <= 128, !name.contains(where: { $0.isNewline || $0 == "\0" }) else {
            throw SproutError(.invalidArgument, "key name must be at most 128 characters on one line")
        }
        let secret = "sk_" + Identifiers.random(length: 40)
        let key = API.Key(id: Identifiers.make(prefix: "key", length: 12), name: name, team: team, prefix: String(secret.prefix(10)),
                          admin: admin, createdAt: time, revokedAt: nil)
        return (secret, key, KeyStore.hash(secret))
    }

    /// Whether `secret` looks like a key at all (checked before any lookup).
    static func plausible(_ secret: String) -> Bool { secret.hasPrefix("sk_") && secret.utf8.count < 200 }
}

/// API keys: random, prefixed `sk_`, shown once, stored as SHA-256.
public struct KeyStore: KeyService {
    let catalog: Catalog

    static func hash(_ secret: String) -> String {
        hexString(SHA256.hash(data: Data(secret.utf8)))
    }

    /// Creates a key and returns it with its secret.
    public func create(name: String, team: String, admin: Bool) async throws -> API.CreatedKey {
        let made = try Self.newKey(name: name, team: team, admin: admin, at: now())
        let record = KeyRecord(id: made.key.id, name: name, team: team, prefix: made.key.prefix, hash: made.hash, admin: admin,
                               createdAt: made.key.createdAt, revokedAt: nil)
        try await catalog.db.write { try await $0.insert(record) }
        return API.CreatedKey(key: record.api, secret: made.secret)
    }

    /// The identity behind `secret`, or nil for an unknown or revoked key.
    public func authenticate(_ secret: String) async throws -> Identity? {
        guard Self.plausible(secret) else { return nil }
        let hash = Self.hash(secret)
        let record = try await catalog.db.read { try await $0.fetchOne(KeyRecord.self, where: "hash = ?", [.text(hash)]) }
        guard let record, record.revokedAt == nil else { return nil }
        return Identity(keyID: record.id, team: record.team, admin: record.admin)
    }

    /// Whether key `id` exists and is not revoked.
    public func isActive(_ id: String) async -> Bool {
        (try? await catalog.db.read { try await $0.find(KeyRecord.self, id: id) }).map { $0?.revokedAt == nil } ?? false
    }

    /// Returns once key `id` is revoked (checked twice a second): a
    /// long-lived connection (terminal, WebSocket preview) ends with it.
    public func untilRevoked(_ id: String) async {
        // A fleet's key: its API server relays the connection and ends it when the key is revoked.
        if id.hasPrefix("fleet:") {
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            return
        }
        while await isActive(id) {
            do { try await Task.sleep(for: .milliseconds(500)) } catch { return }
        }
    }

    public func list() async throws -> [API.Key] {
        try await catalog.db.read { try await $0.fetchAll(KeyRecord.self, orderBy: "createdAt") }.map(\.api)
    }

    public func revoke(id: String) async throws -> API.Key {
        try await catalog.db.write { db in
            guard var record = try await db.find(KeyRecord.self, id: id) else {
                throw SproutError(.notFound, "no key with id '\(id)'")
            }
            if record.revokedAt == nil {
                record.revokedAt = now()
                try await db.update(record)
            }
            return record.api
        }
    }

    public func count() async throws -> Int {
        try await catalog.db.read { try await $0.count("apiKey", where: "TRUE") }
    }

    static func isValidName(_ s: String) -> Bool {
        !s.isEmpty && s.count <= 64 && s.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") }
    }
}
