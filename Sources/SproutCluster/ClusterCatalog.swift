import Foundation
import Logging
import PostgresNIO
import SproutCore

/// The fleet's shared state in PostgreSQL: which nodes there are, the lease
/// each holds, and where each sandbox is placed. Time is the database's
/// (`now()`), never a node's, so clocks that disagree cannot extend a lease.
///
/// A node's **epoch** grows by one at every registration. A renewal names
/// the epoch it holds and succeeds only while that lease has not run out:
/// a node that was stopped past its lease (SIGSTOP, a partition) finds its
/// renewal refused when it wakes, even before anyone marked it lost, and
/// must stop its sandboxes; everything it writes carries `(node, epoch)`,
/// so a fenced node's writes are refused too. **Placement** reserves a
/// sandbox's CPU and memory on one node inside one transaction that holds
/// the node rows, so concurrent API servers never overcommit a node.
public final class ClusterCatalog: Sendable {
    let client: PostgresClient
    let logger: Logger
    private let runner: Task<Void, Never>

    /// Opens the catalog at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|require]`)
    /// and brings its tables up to date (one server at a time: an advisory lock).
    public init(url: String, logger: Logger) async throws {
        let configuration = try Self.configuration(url)
        try await Self.probe(url, logger: logger)
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let client = self.client
        runner = Task { await client.run() }
        self.logger = logger
        do {
            try await migrate()
        } catch {
            runner.cancel()
            await runner.value
            throw SproutError(.unavailable, "the catalog at \(Self.redacted(url)) is not usable: \(Self.describe(error))")
        }
    }

    public func shutdown() async {
        runner.cancel()
        await runner.value
    }

    // MARK: Nodes

    /// What a node says about itself when it registers.
    public struct Registration: Sendable, Equatable {
        public var id: String
        /// Where API servers reach it (`https://host:port`).
        public var address: String
        /// CPUs sandboxes may reserve in all (its cores times the overcommit it allows).
        public var cpuCapacity: Double
        public var memoryMB: Int64
        public var diskMB: Int64
        /// `/proc/cpuinfo`'s flags: a memory image resumes only where its CPU's features are.
        public var cpuFlags: Set<String>
        /// `runsc 20240729 ptrace`: a memory image resumes only on a runtime that can restore it.
        public var runtime: String
        /// The PEM certificate an `https` node serves ("" for `http`): API
        /// servers trust a self-signed one as the node's alone (a pin kept
        /// in the catalog), one a CA issued by the system's roots.
        public var certificate: String

        public init(id: String, address: String, cpuCapacity: Double, memoryMB: Int64, diskMB: Int64, cpuFlags: Set<String>, runtime: String,
                    certificate: String = "") {
            (self.id, self.address, self.cpuCapacity, self.memoryMB, self.diskMB, self.cpuFlags, self.runtime, self.certificate) =
                (id, address, cpuCapacity, memoryMB, diskMB, cpuFlags, runtime, certificate)
        }
    }

    /// A node's claim to its place in the fleet.
    public struct Membership: Sendable, Equatable {
        public var node: String
        public var epoch: Int64
        /// The fleet had counted the node lost when it registered (again):
        /// what ran on it ended as far as the fleet knows.
        public var wasLost = false
        public init(node: String, epoch: Int64, wasLost: Bool = false) { (self.node, self.epoch, self.wasLost) = (node, epoch, wasLost) }
    }

    /// Registers the node (again: its epoch grows, so whatever it held under
    /// an earlier one is fenced) with a lease of `lease`.
    public func register(_ node: Registration, lease: Duration) async throws -> Membership {
        let flags = node.cpuFlags.sorted().joined(separator: " ")
        let seconds = Self.seconds(lease)
        let rows = try await client.query("""
            WITH before AS (SELECT state FROM node WHERE id = \(node.id))
            INSERT INTO node (id, address, epoch, state, lease_until, cpu_capacity, memory_mb, disk_mb, cpu_flags, runtime, certificate,
                              registered_at, renewed_at)
            VALUES (\(node.id), \(node.address), 1, 'ready', now() + make_interval(secs => \(seconds)), \(node.cpuCapacity), \(node.memoryMB),
                    \(node.diskMB), \(flags), \(node.runtime), \(node.certificate), now(), now())
            ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, epoch = node.epoch + 1, state = 'ready',
                lease_until = EXCLUDED.lease_until, cpu_capacity = EXCLUDED.cpu_capacity, memory_mb = EXCLUDED.memory_mb,
                disk_mb = EXCLUDED.disk_mb, cpu_flags = EXCLUDED.cpu_flags, runtime = EXCLUDED.runtime, certificate = EXCLUDED.certificate,
                registered_at = now(), renewed_at = now()
            RETURNING epoch, COALESCE((SELECT state FROM before), '') = 'lost'
            """, logger: logger)
        for try await (epoch, wasLost) in rows.decode((Int64, Bool).self) { return Membership(node: node.id, epoch: epoch, wasLost: wasLost) }
        throw SproutError(.internal, "registering node \(node.id) returned nothing")
    }

    /// Extends the lease by `lease` from now. False: the node is fenced (its
    /// lease ran out, it was marked lost, or it registered again since) and
    /// must stop its sandboxes.
    public func renew(_ membership: Membership, lease: Duration) async throws -> Bool {
        let rows = try await client.query("""
            UPDATE node SET lease_until = now() + make_interval(secs => \(Self.seconds(lease))), renewed_at = now()
            WHERE id = \(membership.node) AND epoch = \(membership.epoch) AND state <> 'lost' AND lease_until >= now()
            RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// The certificate the node serves now (it read a new one), by the epoch that holds the node.
    public func updateCertificate(_ pem: String, of membership: Membership) async throws {
        try await client.query(
            "UPDATE node SET certificate = \(pem) WHERE id = \(membership.node) AND epoch = \(membership.epoch)", logger: logger)
    }

    /// Marks every node whose lease has run out `lost`; returns their ids.
    /// (Any API server may call it; each node is returned once.)
    public func markLost() async throws -> [String] {
        let rows = try await client.query(
            "UPDATE node SET state = 'lost' WHERE state <> 'lost' AND lease_until < now() RETURNING id", logger: logger)
        var out: [String] = []
        for try await id in rows.decode(String.self) { out.append(id) }
        return out.sorted()
    }

    /// No new placements on the node (its sandboxes stay until moved). A
    /// draining node may be drained again (to move what is left on it).
    public func drain(_ id: String) async throws {
        let rows = try await client.query(
            "UPDATE node SET state = 'draining' WHERE id = \(id) AND state IN ('ready', 'draining') RETURNING id", logger: logger)
        for try await _ in rows.decode(String.self) { return }
        guard try await nodes().contains(where: { $0.id == id }) else { throw SproutError(.notFound, "no node with id '\(id)'") }
        throw SproutError(.conflict, "node \(id) is lost; only a ready or draining node can be drained")
    }

    public enum NodeState: String, Sendable, Codable {
        case ready, draining, lost
    }

    public struct NodeStatus: Sendable, Equatable {
        public var registration: Registration
        public var id: String { registration.id }
        public var epoch: Int64
        public var state: NodeState
        /// Seconds of lease left (negative: past it), by the database's clock.
        public var leaseSeconds: Double
        public var reservedCPU: Double
        public var reservedMemoryMB: Int64
        public var sandboxes: Int

        /// Where requests for this node go (no reservation).
        public var placement: Placement {
            Placement(node: id, address: registration.address, epoch: epoch, certificate: registration.certificate)
        }
    }

    /// Every node with what is placed on it, by id.
    public func nodes() async throws -> [NodeStatus] {
        let rows = try await client.query("""
            SELECT n.id, n.address, n.epoch, n.state, EXTRACT(EPOCH FROM (n.lease_until - now()))::float8, n.cpu_capacity, n.memory_mb,
                   n.disk_mb, n.cpu_flags, n.runtime, n.certificate,
                   COALESCE(SUM(p.cpu), 0)::float8, COALESCE(SUM(p.memory_mb), 0)::int8, COUNT(p.sandbox)::int8
            FROM node n LEFT JOIN placement p ON p.node = n.id
            GROUP BY n.id ORDER BY n.id
            """, logger: logger)
        var out: [NodeStatus] = []
        for try await (id, address, epoch, state, lease, cpu, memory, disk, flags, runtime, certificate, usedCPU, usedMemory, count)
            in rows.decode((String, String, Int64, String, Double, Double, Int64, Int64, String, String, String, Double, Int64, Int64).self) {
            out.append(NodeStatus(
                registration: Registration(id: id, address: address, cpuCapacity: cpu, memoryMB: memory, diskMB: disk,
                                           cpuFlags: Set(flags.split(separator: " ").map(String.init)), runtime: runtime, certificate: certificate),
                epoch: epoch, state: NodeState(rawValue: state) ?? .lost, leaseSeconds: lease, reservedCPU: usedCPU,
                reservedMemoryMB: usedMemory, sandboxes: Int(count)))
        }
        return out
    }

    // MARK: Placement

    public struct PlacementRequest: Sendable {
        public var sandbox: String
        /// The team that owns it (kept with a new reservation; a move keeps the first).
        public var team: String
        public var cpu: Double
        public var memoryMB: Int64
        /// The node to prefer when it has room (the one that paused the sandbox: its image is there).
        public var prefer: String?
        /// Nodes that started the sandbox's env before (its layers are there):
        /// favoured over emptier ones unless they are much busier (`holdingBonus`).
        public var holding: Set<String> = []
        /// CPU features the node must have (a memory image's).
        public var cpuFlags: Set<String>
        /// The runtime the node must run (a memory image's), if any.
        public var runtime: String?
        /// Nodes not to use (ones that refused this sandbox already).
        public var excluding: Set<String>

        public init(sandbox: String, team: String = "", cpu: Double, memoryMB: Int64, prefer: String? = nil, holding: Set<String> = [],
                    cpuFlags: Set<String> = [], runtime: String? = nil, excluding: Set<String> = []) {
            (self.sandbox, self.team, self.cpu, self.memoryMB, self.prefer, self.holding, self.cpuFlags, self.runtime, self.excluding) =
                (sandbox, team, cpu, memoryMB, prefer, holding, cpuFlags, runtime, excluding)
        }
    }

    public struct Placement: Sendable, Equatable {
        public var node: String
        public var address: String
        public var epoch: Int64
        /// What is reserved (0 where not read).
        public var cpu: Double = 0
        public var memoryMB: Int64 = 0
        /// The node's certificate (`Registration.certificate`).
        public var certificate: String = ""
        /// The node's state when read (`placement(of:)`; `ready` elsewhere).
        public var nodeState: NodeState = .ready
        public init(node: String, address: String, epoch: Int64, cpu: Double = 0, memoryMB: Int64 = 0, certificate: String = "") {
            (self.node, self.address, self.epoch, self.cpu, self.memoryMB, self.certificate) = (node, address, epoch, cpu, memoryMB, certificate)
        }
    }

    /// Reserves the sandbox's CPU and memory on the ready node (lease
    /// current) with the most room after it, the preferred node if it has
    /// room; a sandbox placed before moves (its old reservation is
    /// replaced). Throws `unavailable` when no node has room.
    public func place(_ request: PlacementRequest) async throws -> Placement {
        let logger = self.logger
        return try await Self.unwrapped { try await client.withTransaction(logger: logger) { connection -> Placement in
            // The node rows stay locked until the reservation commits: placements serialize, none overcommits.
            // The lock comes first, in a statement of its own: under READ COMMITTED the next statement then
            // sees every reservation committed before it (one statement's subqueries would read the snapshot
            // taken before it waited for the lock, and overcommit).
            try await connection.query("SELECT id FROM node WHERE state = 'ready' ORDER BY id FOR UPDATE", logger: logger)
            let rows = try await connection.query("""
                SELECT n.id, n.address, n.epoch, n.cpu_capacity, n.memory_mb, n.cpu_flags, n.runtime, n.certificate,
                       COALESCE((SELECT SUM(cpu) FROM placement p WHERE p.node = n.id AND p.sandbox <> \(request.sandbox)), 0)::float8,
                       COALESCE((SELECT SUM(memory_mb) FROM placement p WHERE p.node = n.id AND p.sandbox <> \(request.sandbox)), 0)::int8
                FROM node n WHERE n.state = 'ready' AND n.lease_until > now() ORDER BY n.id
                """, logger: logger)
            var best: (score: Double, placement: Placement)?
            var (seen, unfit) = (0, 0)
            for try await (id, address, epoch, cpu, memory, flags, runtime, certificate, usedCPU, usedMemory)
                in rows.decode((String, String, Int64, Double, Int64, String, String, String, Double, Int64).self) {
                guard !request.excluding.contains(id) else { continue }
                seen += 1
                guard request.cpuFlags.isSubset(of: Set(flags.split(separator: " ").map(String.init))), request.runtime.map({ $0 == runtime }) ?? true
                else { unfit += 1; continue }
                guard usedCPU + request.cpu <= cpu + 1e-9, usedMemory + request.memoryMB <= memory else { continue }
                // The busier of CPU and memory after this sandbox; the preferred node wins whenever it fits.
                let busy = max((usedCPU + request.cpu) / max(cpu, 0.001), Double(usedMemory + request.memoryMB) / Double(max(memory, 1)))
                let score = id == request.prefer ? -1 : busy - (request.holding.contains(id) ? Self.holdingBonus : 0)
                if best == nil || score < best!.score {
                    best = (score, Placement(node: id, address: address, epoch: epoch, certificate: certificate))
                }
            }
            guard let chosen = best?.placement else {
                throw SproutError(.unavailable, seen == 0
                    ? "no \(request.excluding.isEmpty ? "" : "other ")node is ready to take sandbox \(request.sandbox)"
                    : unfit == seen
                    ? "no ready node can restore sandbox \(request.sandbox)'s memory image (its CPU features and runtime, \(request.runtime ?? "any"), are on none of \(seen))"
                    : "no node has room for sandbox \(request.sandbox) (\(request.cpu) CPUs, \(request.memoryMB) MiB) among \(seen) ready")
            }
            try await connection.query("""
                INSERT INTO placement (sandbox, node, epoch, cpu, memory_mb, placed_at, team)
                VALUES (\(request.sandbox), \(chosen.node), \(chosen.epoch), \(request.cpu), \(request.memoryMB), now(), \(request.team))
                ON CONFLICT (sandbox) DO UPDATE SET node = EXCLUDED.node, epoch = EXCLUDED.epoch, cpu = EXCLUDED.cpu,
                    memory_mb = EXCLUDED.memory_mb, placed_at = now()
                """, logger: logger)
            return chosen
        } }
    }

    /// How much busier (as a share of its capacity) a node that holds the env may be and still be chosen.
    public static let holdingBonus = 0.1

    /// The nodes that started `env` before, so hold its layers (a hint: a node may have evicted them since).
    public func nodes(holding env: String) async throws -> Set<String> {
        guard !env.isEmpty else { return [] }
        let rows = try await client.query("SELECT node FROM node_env WHERE env = \(env)", logger: logger)
        var out: Set<String> = []
        for try await node in rows.decode(String.self) { out.insert(node) }
        return out
    }

    /// `node` started a sandbox of `env`.
    public func noteHolding(_ env: String, on node: String) async throws {
        guard !env.isEmpty else { return }
        try await client.query("INSERT INTO node_env (node, env) VALUES (\(node), \(env)) ON CONFLICT DO NOTHING", logger: logger)
    }

    // MARK: Volumes

    /// Where a volume lives.
    public struct VolumeHome: Sendable, Equatable {
        public var id: String
        public var name: String
        public var node: String
    }

    /// The team's volume `reference` (a name or an id), if the fleet recorded where it lives.
    public func volumeHome(team: String, _ reference: String) async throws -> VolumeHome? {
        let rows = try await client.query(
            "SELECT id, name, node FROM volume_home WHERE team = \(team) AND (name = \(reference) OR id = \(reference))", logger: logger)
        for try await (id, name, node) in rows.decode((String, String, String).self) { return VolumeHome(id: id, name: name, node: node) }
        return nil
    }

    /// Volume `id` (whichever team's: its content token was checked by its node).
    public func volumeHome(id: String) async throws -> VolumeHome? {
        let rows = try await client.query("SELECT id, name, node FROM volume_home WHERE id = \(id)", logger: logger)
        for try await (id, name, node) in rows.decode((String, String, String).self) { return VolumeHome(id: id, name: name, node: node) }
        return nil
    }

    /// Records where a new volume lives; false if the team has one of that name already.
    public func recordVolume(id: String, team: String, name: String, node: String) async throws -> Bool {
        let rows = try await client.query("""
            INSERT INTO volume_home (id, team, name, node) VALUES (\(id), \(team), \(name), \(node))
            ON CONFLICT DO NOTHING RETURNING id
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// The volumes that live on `node`, each with its team.
    public func volumes(on node: String) async throws -> [(home: VolumeHome, team: String)] {
        var out: [(home: VolumeHome, team: String)] = []
        let rows = try await client.query("SELECT id, name, node, team FROM volume_home WHERE node = \(node) ORDER BY id", logger: logger)
        for try await (id, name, node, team) in rows.decode((String, String, String, String).self) {
            out.append((VolumeHome(id: id, name: name, node: node), team))
        }
        return out
    }

    /// Volume `id` lives on `node` now (it was moved there).
    public func moveVolume(id: String, to node: String) async throws {
        try await client.query("UPDATE volume_home SET node = \(node) WHERE id = \(id)", logger: logger)
    }

    public func forgetVolume(id: String) async throws {
        try await client.query("DELETE FROM volume_home WHERE id = \(id)", logger: logger)
    }

    /// How many volumes each node holds.
    public func volumeCounts() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for try await (node, count) in try await client.query("SELECT node, COUNT(*) FROM volume_home GROUP BY node", logger: logger)
            .decode((String, Int64).self) { out[node] = Int(count) }
        return out
    }

    /// The error a transaction's body threw, not postgres-nio's wrapper of it.
    static func unwrapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PostgresTransactionError {
            throw error.closureError ?? error.beginError ?? error.commitError ?? error
        }
    }

    /// Where the sandbox is placed, if anywhere.
    public func placement(of sandbox: String) async throws -> Placement? {
        let rows = try await client.query("""
            SELECT p.node, n.address, p.epoch, p.cpu, p.memory_mb, n.certificate, n.state FROM placement p JOIN node n ON n.id = p.node
            WHERE p.sandbox = \(sandbox)
            """, logger: logger)
        for try await (node, address, epoch, cpu, memory, certificate, state)
            in rows.decode((String, String, Int64, Double, Int64, String, String).self) {
            var placement = Placement(node: node, address: address, epoch: epoch, cpu: cpu, memoryMB: memory, certificate: certificate)
            placement.nodeState = NodeState(rawValue: state) ?? .lost
            return placement
        }
        return nil
    }

    /// Frees the sandbox's reservation, only by the node (and epoch) that holds it.
    @discardableResult
    public func release(_ sandbox: String, by membership: Membership) async throws -> Bool {
        let rows = try await client.query("""
            DELETE FROM placement p USING node n
            WHERE p.sandbox = \(sandbox) AND p.node = \(membership.node) AND n.id = p.node AND n.epoch = \(membership.epoch)
            RETURNING p.sandbox
            """, logger: logger)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    /// Every placed sandbox.
    public func placedSandboxes() async throws -> [String] {
        var out: [String] = []
        for try await id in try await client.query("SELECT sandbox FROM placement ORDER BY sandbox", logger: logger).decode(String.self) { out.append(id) }
        return out
    }

    /// The sandboxes placed on a node.
    public func sandboxes(on node: String) async throws -> [String] {
        try await teams(on: node).map(\.sandbox)
    }

    /// The sandboxes placed on a node with the team of each ("" for one placed before teams were kept).
    public func teams(on node: String) async throws -> [(sandbox: String, team: String)] {
        let rows = try await client.query("SELECT sandbox, team FROM placement WHERE node = \(node) ORDER BY sandbox", logger: logger)
        var out: [(sandbox: String, team: String)] = []
        for try await (id, team) in rows.decode((String, String).self) { out.append((id, team)) }
        return out
    }

    // MARK: API keys

    /// An API key as the fleet's catalog keeps it (the secret's SHA-256, never the secret).
    public struct StoredKey: Sendable, Equatable {
        public var id: String
        public var name: String
        public var team: String
        public var prefix: String
        public var hash: String
        public var admin: Bool
        public var createdAt: Double
        public var revokedAt: Double?
        public init(id: String, name: String, team: String, prefix: String, hash: String, admin: Bool, createdAt: Double, revokedAt: Double?) {
            (self.id, self.name, self.team, self.prefix, self.hash, self.admin, self.createdAt, self.revokedAt) =
                (id, name, team, prefix, hash, admin, createdAt, revokedAt)
        }
    }

    public func insertKey(_ key: StoredKey) async throws {
        try await client.query(Self.inserting(key), logger: logger)
    }

    private static func inserting(_ key: StoredKey) -> PostgresQuery {
        """
        INSERT INTO api_key (id, name, team, prefix, hash, admin, created_at)
        VALUES (\(key.id), \(key.name), \(key.team), \(key.prefix), \(key.hash), \(key.admin), \(key.createdAt))
        """
    }

    /// Inserts `key` only if the catalog has no key at all (the first API
    /// server's admin key; servers starting together make one between them).
    public func insertFirstKey(_ key: StoredKey) async throws -> Bool {
        let logger = self.logger
        return try await Self.unwrapped { try await client.withTransaction(logger: logger) { connection -> Bool in
            try await connection.query("SELECT pg_advisory_xact_lock(7263013)", logger: logger)
            for try await count in try await connection.query("SELECT COUNT(*)::int8 FROM api_key", logger: logger).decode(Int64.self) where count > 0 {
                return false
            }
            try await connection.query(Self.inserting(key), logger: logger)
            return true
        } }
    }

    public func key(hash: String) async throws -> StoredKey? {
        try await keys(.hash(hash)).first
    }

    public func key(id: String) async throws -> StoredKey? {
        try await keys(.id(id)).first
    }

    public func keys() async throws -> [StoredKey] {
        try await keys(.all)
    }

    private enum KeyFilter { case hash(String), id(String), all }

    private func keys(_ filter: KeyFilter) async throws -> [StoredKey] {
        let select = "SELECT id, name, team, prefix, hash, admin, created_at, revoked_at FROM api_key"
        let query: PostgresQuery = switch filter {
        case .hash(let value): "\(unescaped: select) WHERE hash = \(value)"
        case .id(let value): "\(unescaped: select) WHERE id = \(value)"
        case .all: "\(unescaped: select) ORDER BY created_at, id"
        }
        let rows = try await client.query(query, logger: logger)
        var out: [StoredKey] = []
        for try await (id, name, team, prefix, hash, admin, created, revoked) in rows.decode((String, String, String, String, String, Bool, Double, Double?).self) {
            out.append(StoredKey(id: id, name: name, team: team, prefix: prefix, hash: hash, admin: admin, createdAt: created, revokedAt: revoked))
        }
        return out
    }

    /// Revokes key `id` (once: a second revocation keeps the first time).
    public func revokeKey(id: String, at time: Double) async throws -> StoredKey? {
        try await client.query("UPDATE api_key SET revoked_at = \(time) WHERE id = \(id) AND revoked_at IS NULL", logger: logger)
        return try await key(id: id)
    }

    /// Forgets a placement whatever holds it (the API server, after the node said the sandbox is gone).
    public func forget(_ sandbox: String) async throws {
        try await client.query("DELETE FROM placement WHERE sandbox = \(sandbox)", logger: logger)
    }

    /// Puts a sandbox's reservation back as it was (a move that did not happen).
    public func restore(_ placement: Placement, of sandbox: String) async throws {
        try await client.query("""
            UPDATE placement SET node = \(placement.node), epoch = \(placement.epoch), cpu = \(placement.cpu), memory_mb = \(placement.memoryMB)
            WHERE sandbox = \(sandbox)
            """, logger: logger)
    }

    /// Gives a placement reserved under a provisional name its sandbox's id.
    public func rename(placement from: String, to sandbox: String) async throws {
        try await client.query("UPDATE placement SET sandbox = \(sandbox) WHERE sandbox = \(from)", logger: logger)
    }

    // MARK: Schema

    static let migrations: [(name: String, sql: [String])] = [
        ("v1-nodes", [
            """
            CREATE TABLE node (
                id text PRIMARY KEY,
                address text NOT NULL,
                epoch bigint NOT NULL,
                state text NOT NULL CHECK (state IN ('ready', 'draining', 'lost')),
                lease_until timestamptz NOT NULL,
                cpu_capacity double precision NOT NULL,
                memory_mb bigint NOT NULL,
                disk_mb bigint NOT NULL,
                cpu_flags text NOT NULL,
                runtime text NOT NULL,
                registered_at timestamptz NOT NULL,
                renewed_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE placement (
                sandbox text PRIMARY KEY,
                node text NOT NULL REFERENCES node (id),
                epoch bigint NOT NULL,
                cpu double precision NOT NULL,
                memory_mb bigint NOT NULL,
                placed_at timestamptz NOT NULL)
            """,
            "CREATE INDEX placement_node ON placement (node)",
        ]),
        ("v2-keys", [
            """
            CREATE TABLE api_key (
                id text PRIMARY KEY,
                name text NOT NULL,
                team text NOT NULL,
                prefix text NOT NULL,
                hash text NOT NULL UNIQUE,
                admin boolean NOT NULL,
                created_at double precision NOT NULL,
                revoked_at double precision)
            """,
        ]),
        ("v3-placement-team", ["ALTER TABLE placement ADD COLUMN team text NOT NULL DEFAULT ''"]),
        ("v4-node-certificate", ["ALTER TABLE node ADD COLUMN certificate text NOT NULL DEFAULT ''"]),
        ("v5-node-env", ["CREATE TABLE node_env (node text NOT NULL REFERENCES node (id), env text NOT NULL, PRIMARY KEY (node, env))"]),
        // Which node a volume lives on (its file system is there); a name is unique within its team fleet-wide.
        ("v6-volume-home", [
            "CREATE TABLE volume_home (id text PRIMARY KEY, team text NOT NULL, name text NOT NULL, node text NOT NULL REFERENCES node (id), UNIQUE (team, name))",
        ]),
    ]

    private func migrate() async throws {
        let logger = self.logger
        try await client.withTransaction(logger: logger) { connection in
            // One server migrates at a time; the others wait, then find nothing to do.
            try await connection.query("SELECT pg_advisory_xact_lock(7263011)", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS sprout_migration (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())", logger: logger)
            var applied: Set<String> = []
            for try await name in try await connection.query("SELECT name FROM sprout_migration", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            for migration in Self.migrations where !applied.contains(migration.name) {
                for statement in migration.sql { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                try await connection.query("INSERT INTO sprout_migration (name) VALUES (\(migration.name))", logger: logger)
            }
        }
    }

    // MARK: Helpers

    public static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// What a `postgres://` URL names.
    struct Address {
        var host: String
        var port: Int
        var user: String
        var password: String?
        var database: String
        var requireTLS: Bool
    }

    static func address(_ url: String) throws -> Address {
        func bad(_ why: String) -> SproutError {
            SproutError(.invalidArgument, "catalog \(redacted(url)): \(why); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
        }
        guard let parts = URLComponents(string: url), ["postgres", "postgresql"].contains(parts.scheme ?? "") else { throw bad("not a postgres:// address") }
        guard let host = parts.host, !host.isEmpty else { throw bad("no host") }
        guard let user = parts.user, !user.isEmpty else { throw bad("no user") }
        let database = String(parts.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else { throw bad("no database") }
        let mode = parts.queryItems?.first { $0.name == "sslmode" }?.value ?? "disable"
        guard ["disable", "require"].contains(mode) else { throw bad("sslmode must be disable or require") }
        return Address(host: host, port: parts.port ?? 5432, user: user, password: parts.password, database: database, requireTLS: mode == "require")
    }

    static func configuration(_ url: String) throws -> PostgresClient.Configuration {
        let a = try address(url)
        var configuration = PostgresClient.Configuration(host: a.host, port: a.port, username: a.user, password: a.password, database: a.database,
                                                          tls: a.requireTLS ? .require(.makeClientConfiguration()) : .disable)
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }

    /// One connection and `SELECT 1`, so a catalog that cannot be reached
    /// (or refuses the login) stops a start with the reason at once; the
    /// client's pool would retry for ever.
    public static func probe(_ url: String, logger: Logger) async throws {
        let a = try address(url)
        var configuration = PostgresConnection.Configuration(
            host: a.host, port: a.port, username: a.user, password: a.password, database: a.database,
            tls: a.requireTLS ? .require(try .init(configuration: .makeClientConfiguration())) : .disable)
        configuration.options.connectTimeout = .seconds(10)
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            defer { Task { try? await connection.close() } }
            try await connection.query("SELECT 1", logger: logger)
        } catch {
            throw SproutError(.unavailable, "the catalog at \(redacted(url)) is not usable: \(describe(error))")
        }
    }

    /// The URL without its password.
    static func redacted(_ url: String) -> String {
        guard var parts = URLComponents(string: url), parts.password != nil else { return url }
        parts.password = "…"
        return parts.string ?? url
    }

    /// PostgreSQL's own message when there is one (`PSQLError` describes itself vaguely on purpose).
    static func describe(_ error: Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] { return message }
            return "\(error.code)"
        }
        return error.sentence
    }
}
