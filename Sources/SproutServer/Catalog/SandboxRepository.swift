import SproutAPI
import Foundation
import SproutCluster
import SproutCore

/// A sandbox as the catalog remembers it. Its state (`state`, and what a
/// pause kept, `lastPauseFilesOnly`) can only change through
/// `SandboxRepository.transition` (they are settable in this file alone),
/// which runs `SandboxMachine` on the stored state inside one write
/// transaction.
struct SandboxRecord: StoredRecord {
    static let table = "sandbox"
    var id: String
    var team: String
    var env: String
    var runtime: String
    fileprivate(set) var state: SandboxState
    var createdAt: Double
    var expiresAt: Double?
    var endedAt: Double?
    var cpu: Double
    var memoryMB: Int
    var internet: Bool
    var metadata: [String: String]
    var envVars: [String: String]
    var slot: Int?
    var agentToken: String
    var error: String?
    /// Memory images of this sandbox's pauses, oldest first (at most `MemorySnapshots.imageHistory`).
    var images: [String]?
    /// Timeout left when the sandbox was paused; the clock stops while paused.
    var remainingSeconds: Double?
    /// Resume on the next request that needs the sandbox running.
    var autoResume: Bool = false
    /// CIDRs, if outbound traffic is limited to them.
    var egress: [String]? = nil
    /// MiB the sandbox may write (nil: the server's default).
    var diskMB: Int? = nil
    /// Bumped by every write (compare-and-set).
    fileprivate(set) var version: Int = 0
    /// When it was last paused.
    var pausedAt: Double? = nil
    /// What its timeout does: nil kills it, "pause" pauses it.
    var onTimeout: String? = nil
    /// The timeout it was given last (seconds), renewed when a timeout pause wakes.
    var lifetimeSeconds: Double? = nil
    /// A timeout pause resumes on the next request that needs it running.
    var resumeOnRequest: Bool = false
    /// Pause after this many seconds without a request or an open stream.
    var idlePauseSeconds: Double? = nil
    /// Its last pause kept only its files: it boots again on resume (the
    /// machine's `memory` of `pausing`, `paused` and `resuming`).
    fileprivate(set) var lastPauseFilesOnly: Bool = false
    /// Its timeout and idle pauses keep only its files (no memory image).
    var pauseFilesOnly: Bool = false
    /// The volumes it mounts.
    var volumes: [VolumeMount]? = nil
    /// Its writable layer as the object store keeps it (`uppers/<sha256>.tar`),
    /// put there by its last pause when the server has `--store`.
    var storedUpper: String? = nil

    /// A new sandbox, `creating`.
    init(
        id: String, team: String, env: String, runtime: String, createdAt: Double, expiresAt: Double?, cpu: Double, memoryMB: Int,
        internet: Bool, metadata: [String: String], envVars: [String: String], slot: Int?, agentToken: String, egress: [String], diskMB: Int?,
        volumes: [VolumeMount]? = nil
    ) {
        self.volumes = volumes
        self.id = id
        self.team = team
        self.env = env
        self.runtime = runtime
        self.state = .creating
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.cpu = cpu
        self.memoryMB = memoryMB
        self.internet = internet
        self.metadata = metadata
        self.envVars = envVars
        self.slot = slot
        self.agentToken = agentToken
        self.egress = egress.isEmpty ? nil : egress
        self.diskMB = diskMB
    }

    /// The machine's state: the stored state and what the pause kept.
    var machineState: SandboxMachine.State { SandboxMachine.State(state, memory: !lastPauseFilesOnly) }

    /// Takes the machine's state (the only way the state changes).
    fileprivate mutating func apply(_ new: SandboxMachine.State) {
        state = new.status
        if let memory = new.keepsMemory { lastPauseFilesOnly = !memory }
    }

    var egressList: [String] { egress ?? [] }
    var imageList: [String] { images ?? [] }
    var volumeList: [VolumeMount] { volumes ?? [] }
}

/// One line of a sandbox's history (`GET /v1/sandboxes/{id}/events`).
struct SandboxEventRecord: StoredRecord {
    static let table = "sandboxEvent"
    var id: Int64?
    var sandbox: String
    var at: Double
    var kind: String
    var message: String
}

/// Sandboxes in the catalog. Every state change is `transition`: the event is
/// applied to the state as stored (never to a copy a caller holds), inside
/// one write transaction, and recorded as an event.
public struct SandboxRepository: Sendable {
    let db: any SQLDatabase

    func find(_ id: String) async throws -> SandboxRecord? {
        try await db.read { try await $0.find(SandboxRecord.self, id: id) }
    }

    /// The sandbox if `team` owns it; 404 otherwise, so ids of other teams' sandboxes do not leak.
    func owned(_ id: String, team: String) async throws -> SandboxRecord {
        guard let record = try await find(id), record.team == team, !team.isEmpty else {
            throw SproutError(.notFound, "no sandbox with id '\(id)'")
        }
        return record
    }

    func list(team: String, includeEnded: Bool) async throws -> [SandboxRecord] {
        try await db.read { db in
            try await db.fetchAll(SandboxRecord.self, where: includeEnded ? "team = ?" : "team = ? AND state != 'killed'", [.text(team)],
                                  orderBy: "createdAt")
        }
    }

    func all(in states: [SandboxState]) async throws -> [SandboxRecord] {
        guard !states.isEmpty else { return [] }
        return try await db.read { db in
            try await db.fetchAll(SandboxRecord.self, where: "state IN (\(states.map { _ in "?" }.joined(separator: ", ")))",
                                  states.map { .text($0.rawValue) })
        }
    }

    /// Running sandboxes whose timeout passed before `time`: the supervisor's
    /// once-a-second question, answered by the database rather than by
    /// reading every running sandbox (its cost stays flat as they grow).
    func expired(before time: Double) async throws -> [SandboxRecord] {
        try await db.read { db in
            try await db.fetchAll(SandboxRecord.self, where: "state = 'running' AND expiresAt < ?", [.real(time)])
        }
    }

    /// Running sandboxes that asked to sleep when idle.
    func idlePausing() async throws -> [SandboxRecord] {
        try await db.read { db in
            try await db.fetchAll(SandboxRecord.self, where: "state = 'running' AND idlePauseSeconds IS NOT NULL")
        }
    }

    /// How many of `team`'s sandboxes are asleep (or falling asleep).
    func pausedCount(team: String) async throws -> Int {
        try await db.read { db in try await db.count("sandbox", where: "team = ? AND state IN ('paused', 'pausing')", [.text(team)]) }
    }

    func insert(_ record: SandboxRecord) async throws {
        precondition(record.state == .creating, "new sandboxes start as creating")
        try await db.write { db in
            try await db.insert(record)
            try await db.insert(SandboxEventRecord(id: nil, sandbox: record.id, at: now(), kind: "creating", message: "env \(record.env)"))
        }
    }

    /// Takes in a sandbox another node paused (its record as that node kept
    /// it), paused here with this host's network slot.
    func adopt(_ record: SandboxRecord, memory: Bool, slot: Int, note: String) async throws -> SandboxRecord {
        var adopted = record
        adopted.state = .paused
        adopted.lastPauseFilesOnly = !memory
        adopted.slot = slot
        adopted.version = 0
        let record = adopted
        try await db.write { db in
            try await db.insert(record)
            try await db.insert(SandboxEventRecord(id: nil, sandbox: record.id, at: now(), kind: "paused", message: note))
        }
        return record
    }

    /// Removes a record that never came to life (a failed create or fork).
    func delete(_ id: String) async throws {
        try await db.write { db in
            try await db.execute("DELETE FROM sandbox WHERE id = ?", .text(id))
            try await db.execute("DELETE FROM sandboxEvent WHERE sandbox = ?", .text(id))
        }
    }

    /// Applies `event` to sandbox `id` as stored: the machine decides the
    /// next state (or refuses with 409), `edit` changes other fields in the
    /// same transaction, the version is bumped and the change recorded as an
    /// event. With `expecting`, the stored version must still be that one
    /// (compare-and-set): a caller acting on what it read earlier learns, with
    /// a 409, that the sandbox changed meanwhile.
    @discardableResult
    func transition(
        _ id: String, _ event: SandboxMachine.Event, expecting version: Int? = nil, note: String? = nil,
        edit: @escaping @Sendable (inout SandboxRecord) -> Void = { _ in }
    ) async throws -> (record: SandboxRecord, action: SandboxMachine.Action) {
        try await db.write { db in
            guard var record = try await db.find(SandboxRecord.self, id: id) else {
                throw SproutError(.notFound, "no sandbox with id '\(id)'")
            }
            if let version, record.version != version {
                throw SproutError(.conflict, "sandbox \(id) changed meanwhile (it is \(record.state.rawValue) now); try again")
            }
            var machine = SandboxMachine(state: record.machineState)
            let action: SandboxMachine.Action
            do {
                action = try machine.handle(event)
            } catch {
                throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue): it cannot \(event.verb)")
            }
            let before = record.state
            record.apply(machine.state)
            edit(&record)
            record.version += 1
            try await db.update(record)
            if before != record.state || note != nil {
                let message = [before == record.state ? nil : "\(before.rawValue) -> \(record.state.rawValue)", note]
                    .compactMap { $0 }.joined(separator: ": ")
                try await db.insert(SandboxEventRecord(id: nil, sandbox: id, at: now(), kind: record.state.rawValue, message: message))
            }
            return (record, action)
        }
    }

    /// Changes fields other than the state, atomically on the stored record
    /// (`edit` may throw to leave it as it was). Returns the new record.
    @discardableResult
    func modify(_ id: String, _ edit: @escaping @Sendable (inout SandboxRecord) throws -> Void) async throws -> SandboxRecord {
        try await db.write { db in
            guard var record = try await db.find(SandboxRecord.self, id: id) else {
                throw SproutError(.notFound, "no sandbox with id '\(id)'")
            }
            try edit(&record)
            record.version += 1
            try await db.update(record)
            return record
        }
    }

    /// Takes the oldest pooled sandbox of `env` for a create (nil if there is none).
    func claim(env: String, runtime: String, _ edit: @escaping @Sendable (inout SandboxRecord) -> Void) async throws -> SandboxRecord? {
        try await db.write { db in
            guard var record = try await db.fetchOne(SandboxRecord.self, where: "state = 'pooled' AND env = ? AND runtime = ?",
                                                     [.text(env), .text(runtime)], orderBy: "createdAt")
            else { return nil }
            var machine = SandboxMachine(state: record.machineState)
            _ = try machine.handle(.claimed)
            record.apply(machine.state)
            edit(&record)
            record.version += 1
            try await db.update(record)
            try await db.insert(SandboxEventRecord(id: nil, sandbox: record.id, at: now(), kind: "running", message: "claimed from the warm pool"))
            return record
        }
    }

    /// Records something that happened to a sandbox without a state change.
    func note(_ id: String, kind: String, _ message: String) async {
        _ = try? await db.write { db in
            try await db.insert(SandboxEventRecord(id: nil, sandbox: id, at: now(), kind: kind, message: message))
        }
    }

    func events(_ id: String) async throws -> [SandboxEventRecord] {
        try await db.read { db in try await db.fetchAll(SandboxEventRecord.self, where: "sandbox = ?", [.text(id)], orderBy: "id") }
    }

    /// Sandboxes by state, for the metrics gauge.
    func countsByState() async throws -> [String: Int] {
        try await db.read { db in
            try await db.rows("SELECT state, COUNT(*) AS n FROM sandbox GROUP BY state")
                .reduce(into: [String: Int]()) { counts, row in
                    if let state = row["state"].string { counts[state] = Int(row["n"].int64 ?? 0) }
                }
        }
    }

    /// The envs of sandboxes whose root filesystem is mounted (every state but paused and killed).
    func mountedEnvs() async throws -> Set<String> {
        Set(try await db.read { db in try await db.strings("SELECT DISTINCT env FROM sandbox WHERE state NOT IN ('paused', 'killed')") })
    }

    /// Every memory image a live sandbox refers to.
    func referencedImages() async throws -> Set<String> {
        try await db.read { db in
            var ids: Set<String> = []
            for text in try await db.strings("SELECT images FROM sandbox WHERE images IS NOT NULL AND state != 'killed'") {
                ids.formUnion(try JSONDecoder().decode([String].self, from: Data(text.utf8)))
            }
            return ids
        }
    }
}
