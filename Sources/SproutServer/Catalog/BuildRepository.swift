import SproutAPI
import Foundation
import SproutCluster
import SproutCore

/// Where a build is. Stored as its raw value; changed only by `BuildMachine`.
public enum BuildStatus: String, Codable, Sendable, CaseIterable {
    case running
    /// Cancel was asked for; the build's task is stopping.
    case cancelling
    case succeeded
    case failed
    case cancelled

    public var isFinal: Bool { self == .succeeded || self == .failed || self == .cancelled }
}

/// A build's lifecycle as a pure state machine.
///
/// ```
/// running ──▶ succeeded | failed
///    │
///    └─(cancel)─▶ cancelling ──▶ cancelled
/// ```
/// A server restart fails whatever was running or cancelling (its task died with the server).
public struct BuildMachine: Sendable, Equatable {
    public private(set) var status: BuildStatus
    public init(status: BuildStatus) { self.status = status }

    public enum Event: Sendable, Equatable {
        case succeeded
        case failed
        case cancel
        /// The build's task ended after a cancel (or was cancelled by a shutdown).
        case stopped
        case interrupted
    }

    public enum Action: Sendable, Equatable {
        case none
        /// Stop the build's task.
        case cancelTask
        /// Remove the layers the build made that no env uses.
        case discardLayers
    }

    public mutating func handle(_ event: Event) throws -> Action {
        switch (status, event) {
        case (.running, .succeeded):
            status = .succeeded
            return .none
        case (.running, .failed), (.cancelling, .failed):
            status = status == .cancelling ? .cancelled : .failed
            return .discardLayers
        case (.running, .cancel):
            status = .cancelling
            return .cancelTask
        case (.running, .stopped), (.cancelling, .stopped), (.cancelling, .succeeded):
            // A build that finished while being cancelled is still cancelled: no env was published.
            status = .cancelled
            return .discardLayers
        case (.running, .interrupted), (.cancelling, .interrupted):
            status = .failed
            return .discardLayers
        default:
            throw SproutError(.conflict, "a \(status.rawValue) build cannot be \(event)")
        }
    }
}

/// One run of `env push`'s build. Its status changes only through `BuildRepository.transition`.
struct BuildRecord: StoredRecord {
    static let table = "build"
    var id: String
    var team: String
    var envID: String
    fileprivate(set) var status: BuildStatus
    var failedStep: String?
    var exitCode: Int?
    var error: String?
    var createdAt: Double
    var finishedAt: Double?
    var steps: Int
    var cachedSteps: Int
    /// Warnings (files left alone).
    var warnings: [String]?
    fileprivate(set) var version: Int = 0

    /// A new build, `running`.
    init(id: String, team: String, envID: String, steps: Int) {
        self.id = id
        self.team = team
        self.envID = envID
        self.status = .running
        self.createdAt = now()
        self.steps = steps
        self.cachedSteps = 0
    }
}

public struct BuildRepository: Sendable {
    let db: any SQLDatabase

    func insert(_ build: BuildRecord) async throws {
        try await db.write { try await $0.insert(build) }
    }

    func find(_ id: String) async throws -> BuildRecord? {
        try await db.read { try await $0.find(BuildRecord.self, id: id) }
    }

    /// A team's builds, newest first (only `env`'s if given).
    func list(team: String, env: String?, limit: Int) async throws -> [BuildRecord] {
        try await db.read { db in
            try await db.fetchAll(BuildRecord.self, where: env == nil ? "team = ?" : "team = ? AND envID = ?",
                                  [.text(team)] + (env.map { [.text($0)] } ?? []), orderBy: "createdAt DESC, id", limit: limit)
        }
    }

    /// The team's running build of env name `name` (its env ids are `name-<hash>`), if any.
    func running(named name: String, team: String) async throws -> BuildRecord? {
        let pattern = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "_", with: "\\_")
            .replacingOccurrences(of: "%", with: "\\%") + "-%"
        return try await db.read { db in
            try await db.fetchOne(BuildRecord.self, where: "team = ? AND status = 'running' AND envID LIKE ? ESCAPE '\\'",
                                  [.text(team), .text(pattern)], orderBy: "createdAt DESC")
        }
    }

    /// Applies `event` to build `id` as stored, with `edit` in the same transaction.
    @discardableResult
    func transition(
        _ id: String, _ event: BuildMachine.Event, edit: @escaping @Sendable (inout BuildRecord) -> Void = { _ in }
    ) async throws -> (record: BuildRecord, action: BuildMachine.Action) {
        try await db.write { db in
            guard var record = try await db.find(BuildRecord.self, id: id) else {
                throw SproutError(.notFound, "no build with id '\(id)'")
            }
            var machine = BuildMachine(status: record.status)
            let action: BuildMachine.Action
            do {
                action = try machine.handle(event)
            } catch {
                throw SproutError(.conflict, "build \(id) is \(record.status.rawValue)")
            }
            record.status = machine.status
            if machine.status.isFinal { record.finishedAt = now() }
            edit(&record)
            record.version += 1
            try await db.update(record)
            return (record, action)
        }
    }

    /// Fails every build a restart interrupted; returns their ids.
    func interruptAll() async throws -> [String] {
        let open = try await db.read { db in try await db.fetchAll(BuildRecord.self, where: "status IN ('running', 'cancelling')") }
        for build in open {
            try await transition(build.id, .interrupted) { $0.error = "interrupted by a server restart" }
        }
        return open.map(\.id)
    }
}
