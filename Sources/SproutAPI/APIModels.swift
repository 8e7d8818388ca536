#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SproutCore

/// The REST API's request and response bodies, shared by the server and the
/// client so the two cannot drift. See openapi.yaml.

/// Where a sandbox is in its life, as the API reports it.
public enum SandboxState: String, Codable, Sendable, CaseIterable {
    case creating
    case pooled
    case running
    case pausing
    case paused
    case resuming
    case forking
    case killing
    case killed

    /// States whose sandbox still holds host resources.
    public var isLive: Bool { self != .killed }

    /// States in which the sandbox's container runs (its agent answers).
    public var hasContainer: Bool { self == .running || self == .pooled }
}

public enum API {
    /// Every error answer's body: `{"error": {"code": ..., "message": ...}}`.
    public struct ErrorEnvelope: Codable, Sendable {
        public var error: ErrorDetail
        public init(error: ErrorDetail) { self.error = error }
    }

    /// What went wrong: a stable code (`not_found`, `conflict`, ...) and a
    /// sentence; the same body the agent's replies carry.
    public typealias ErrorDetail = ErrorBody

    /// `GET /v1/whoami`: the caller's key (the server's `Identity`).
    public struct WhoAmI: Codable, Sendable, Equatable {
        public var keyID: String
        public var team: String
        public var admin: Bool
        public init(keyID: String, team: String, admin: Bool) {
            self.keyID = keyID
            self.team = team
            self.admin = admin
        }
    }

    public struct Key: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var team: String
        /// The first characters of the secret, to recognise it.
        public var prefix: String
        public var admin: Bool
        public var createdAt: Double
        public var revokedAt: Double?

        public init(id: String, name: String, team: String, prefix: String, admin: Bool, createdAt: Double, revokedAt: Double?) {
            self.id = id
            self.name = name
            self.team = team
            self.prefix = prefix
            self.admin = admin
            self.createdAt = createdAt
            self.revokedAt = revokedAt
        }
    }

    public struct CreateKey: Codable, Sendable {
        public var name: String?
        public var team: String?
        public var admin: Bool?
        public init(name: String? = nil, team: String? = nil, admin: Bool? = nil) {
            self.name = name
            self.team = team
            self.admin = admin
        }
    }

    /// A new key: the secret is shown here once and never again.
    public struct CreatedKey: Codable, Sendable {
        public var key: Key
        public var secret: String
        public init(key: Key, secret: String) {
            self.key = key
            self.secret = secret
        }
    }

    public struct Health: Codable, Sendable {
        public var status: String
        public var version: String
        public var runtime: String
        /// The runtime binary's own version (runsc's release date, say).
        public var runtimeVersion: String?
        /// gVisor's platform (systrap or ptrace); nil for runc.
        public var platform: String?
        public init(status: String, version: String, runtime: String, runtimeVersion: String? = nil, platform: String? = nil) {
            self.status = status
            self.version = version
            self.runtime = runtime
            self.runtimeVersion = runtimeVersion
            self.platform = platform
        }
    }
}

extension API {
    /// A node of the fleet (`GET /v1/nodes`, admin).
    public struct Node: Codable, Sendable, Equatable {
        public var id: String
        public var address: String
        /// `ready`, `draining` or `lost`.
        public var state: String
        public var epoch: Int64
        /// Seconds of lease left by the catalog's clock (negative: past it).
        public var leaseSeconds: Double
        /// CPUs sandboxes may reserve in all, and reserved now.
        public var cpuCapacity: Double
        public var cpuReserved: Double
        public var memoryMB: Int64
        public var memoryReservedMB: Int64
        public var diskMB: Int64
        public var sandboxes: Int
        public var runtime: String
        public var cpuFlags: Int

        public init(id: String, address: String, state: String, epoch: Int64, leaseSeconds: Double, cpuCapacity: Double, cpuReserved: Double,
                    memoryMB: Int64, memoryReservedMB: Int64, diskMB: Int64, sandboxes: Int, runtime: String, cpuFlags: Int) {
            (self.id, self.address, self.state, self.epoch, self.leaseSeconds) = (id, address, state, epoch, leaseSeconds)
            (self.cpuCapacity, self.cpuReserved, self.memoryMB, self.memoryReservedMB) = (cpuCapacity, cpuReserved, memoryMB, memoryReservedMB)
            (self.diskMB, self.sandboxes, self.runtime, self.cpuFlags) = (diskMB, sandboxes, runtime, cpuFlags)
        }
    }

    /// What `POST /v1/nodes/{id}/drain` did. Through an API server each
    /// sandbox on the node moves to another (a running one by pause and
    /// resume, its processes intact; a paused one stays paused); a node
    /// asked directly only stops taking new sandboxes, and lists what is left.
    public struct NodeDrain: Codable, Sendable, Equatable {
        public struct Move: Codable, Sendable, Equatable {
            public var id: String
            /// The node it runs (or sleeps) on now.
            public var node: String
            public var state: SandboxState
            public init(id: String, node: String, state: SandboxState) { (self.id, self.node, self.state) = (id, node, state) }
        }
        public struct Failure: Codable, Sendable, Equatable {
            public var id: String
            public var error: String
            public init(id: String, error: String) { (self.id, self.error) = (id, error) }
        }
        /// A volume the drain moved, and the node it lives on now.
        public struct VolumeMove: Codable, Sendable, Equatable {
            public var id: String
            public var name: String
            public var node: String
            public init(id: String, name: String, node: String) { (self.id, self.name, self.node) = (id, name, node) }
        }
        public var node: Node
        public var moved: [Move]
        /// Sandboxes (or volumes, by id) that could not be moved, and why (each stays where it was; drain again to retry).
        public var failed: [Failure]
        /// Sandboxes still placed on the node afterwards.
        public var remaining: [String]
        /// Volumes moved, with the sandboxes that mount them (nil from a node asked directly).
        public var movedVolumes: [VolumeMove]?

        public init(node: Node, moved: [Move], failed: [Failure], remaining: [String], movedVolumes: [VolumeMove]? = nil) {
            (self.node, self.moved, self.failed, self.remaining, self.movedVolumes) = (node, moved, failed, remaining, movedVolumes)
        }
    }

    /// `POST /v1/store/collect` (admin): asks for a collection of the object
    /// store now. `graceSeconds` below the server's own is for a store with
    /// nothing in flight (no pause, build or resume running anywhere).
    public struct CollectStore: Codable, Sendable, Equatable {
        public var graceSeconds: Double?
        public init(graceSeconds: Double? = nil) { self.graceSeconds = graceSeconds }
    }

    /// What one collection of the object store found and removed.
    public struct StoreCollection: Codable, Sendable, Equatable {
        /// Pauses and envs that hold objects (`sandboxes/…/pause.json`, `envs/…`).
        public var roots: Int
        /// Objects it kept: held, younger than the grace, or not its kind.
        public var kept: Int
        /// Objects removed, by kind (`handoffs`, `envs` (deleted envs' records), `images`, `packs`, `uppers`, `layers`).
        public var deleted: [String: Int]
        public var deletedBytes: Int64
        /// It stopped before the end: deleting took longer than a quarter of the grace.
        public var stoppedEarly: Bool
        public var graceSeconds: Double
        public init(roots: Int, kept: Int, deleted: [String: Int], deletedBytes: Int64, stoppedEarly: Bool, graceSeconds: Double) {
            (self.roots, self.kept, self.deleted, self.deletedBytes, self.stoppedEarly, self.graceSeconds) =
                (roots, kept, deleted, deletedBytes, stoppedEarly, graceSeconds)
        }
    }
}
