import SproutCore

extension API {
    /// A volume: a team's file system that outlives sandboxes and can be
    /// mounted by several at once.
    public struct Volume: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var sizeMB: Int
        /// Bytes in use (the file system's own blocks included); nil when
        /// it is not mounted on this server.
        public var usedBytes: Int64?
        public var createdAt: Double
        /// Sandboxes that have not ended and mount it.
        public var mountedBy: [String]

        public init(id: String, name: String, sizeMB: Int, usedBytes: Int64?, createdAt: Double, mountedBy: [String]) {
            self.id = id
            self.name = name
            self.sizeMB = sizeMB
            self.usedBytes = usedBytes
            self.createdAt = createdAt
            self.mountedBy = mountedBy
        }
    }

    /// A volume on its way from one node of a fleet to another: its node
    /// answers `POST /v1/volumes/{id}/export` (admin) with it once its file
    /// system is in the object store (`key`), and the other node takes it in
    /// with `POST /v1/volumes/import`.
    public struct VolumeExport: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var team: String
        public var sizeMB: Int
        public var createdAt: Double
        /// The store's copy of its file system.
        public var key: String
        public init(id: String, name: String, team: String, sizeMB: Int, createdAt: Double, key: String) {
            (self.id, self.name, self.team, self.sizeMB, self.createdAt, self.key) = (id, name, team, sizeMB, createdAt, key)
        }
    }

    public struct CreateVolume: Codable, Sendable {
        public var name: String
        /// The size limit, MiB (default 1024).
        public var sizeMB: Int?
        public init(name: String, sizeMB: Int? = nil) {
            self.name = name
            self.sizeMB = sizeMB
        }
    }

    /// A volume in a sandbox: `volume` (its name or id) at `path`.
    public struct VolumeMount: Codable, Sendable, Equatable {
        public var volume: String
        public var path: String
        public var readOnly: Bool?
        public init(volume: String, path: String, readOnly: Bool? = nil) {
            self.volume = volume
            self.path = path
            self.readOnly = readOnly
        }

        /// `NAME:/path[:ro]`, as the CLI and `sprout.toml` write it.
        public init(parsing text: String) throws {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard (2...3).contains(parts.count), !parts[0].isEmpty, parts[1].hasPrefix("/"), parts.count == 2 || parts[2] == "ro" || parts[2] == "rw" else {
                throw SproutError(.invalidArgument, "a volume mount is NAME:/path or NAME:/path:ro, got '\(text.prefix(80))'")
            }
            self.init(volume: parts[0], path: parts[1], readOnly: parts.count == 3 ? parts[2] == "ro" : nil)
        }

        /// `NAME:/path[:ro]`, as `init(parsing:)` reads it.
        public var text: String { "\(volume):\(path)\(readOnly == true ? ":ro" : "")" }
    }
}
