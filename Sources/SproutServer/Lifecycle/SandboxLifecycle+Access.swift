import Foundation
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// The sandbox lifecycle as the API sees it: create, show, list, kill,
/// timeouts, and access to a running sandbox's agent (waking a sleeping one
/// that asked for it). Every state change goes through the catalog's
/// `transition` under the operation gate; this type keeps no state.
extension SandboxLifecycle {
    // MARK: Queries

    public func get(_ id: String, for identity: Identity) async throws -> API.Sandbox {
        api(try await repository.owned(id, team: identity.team))
    }

    public func list(for identity: Identity, includeEnded: Bool = false) async throws -> [API.Sandbox] {
        try await repository.list(team: identity.team, includeEnded: includeEnded).map {
            var api = $0.api
            api.node = settings.node
            return api
        }
    }

    public func events(_ id: String, for identity: Identity) async throws -> [API.SandboxEvent] {
        _ = try await repository.owned(id, team: identity.team)
        return try await repository.events(id).map { API.SandboxEvent(at: $0.at, kind: $0.kind, message: $0.message) }
    }

    /// The API's view of a record, with what its memory images cost.
    func api(_ record: SandboxRecord) -> API.Sandbox {
        var api = record.api
        api.node = settings.node
        let list = record.imageList
        if !list.isEmpty {
            let usage = stores.images.usage(list)
            api.memory = API.MemoryImages(count: list.count, logicalBytes: usage.logical, storedBytes: usage.stored)
        }
        if let volumes = record.volumes, !volumes.isEmpty {
            api.volumes = volumes.map { API.VolumeMount(volume: $0.name, path: $0.path, readOnly: $0.readOnly) }
        }
        return api
    }

    // MARK: Access to a running sandbox

    /// The sandbox's record once it is running; a paused one that asked to
    /// resume on demand is resumed first (concurrent requests cause one resume).
    func running(_ id: String, for identity: Identity) async throws -> SandboxRecord {
        try await running(try await repository.owned(id, team: identity.team))
    }

    /// `running` for a record the caller has read already (no second read
    /// while it is running).
    func running(_ read: SandboxRecord) async throws -> SandboxRecord {
        var record = read
        let id = record.id
        // A sleeping sandbox that wakes on request, or one already waking or
        // falling asleep: wait for the one resume (or the pause) in the gate,
        // then take it running (a pause that does not wake on request ends
        // in the conflict below).
        if (record.state == .paused && record.autoResume) || record.state == .resuming || record.state == .pausing {
            record = try await wake(id)
        }
        guard record.state == .running, record.slot != nil else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue), not running")
        }
        activity.touch(id)
        return record
    }

    /// A running sandbox as one request uses it, from one read of its
    /// record: its agent and the variables its processes get.
    public func open(_ id: String, for identity: Identity) async throws -> RunningSandbox {
        await open(try await running(id, for: identity))
    }

    /// `open` for a record the caller has read already (envd's middleware).
    func open(record: SandboxRecord) async throws -> RunningSandbox {
        await open(try await running(record))
    }

    private func open(_ record: SandboxRecord) async -> RunningSandbox {
        let defaults = await graph.processDefaults(record.env)
        return RunningSandbox(id: record.id, agent: agents.client(record), environment: environment(record, defaults: defaults),
                              workdir: defaults.workdir, user: defaults.user)
    }

    /// What every process the server starts in the sandbox gets: the
    /// server's variables, then its env's, then its own (each wins over the one before).
    func environment(_ record: SandboxRecord, defaults: API.ProcessDefaults) -> [String: String] {
        settings.serverEnvironment.merging(defaults.env ?? [:]) { $1 }.merging(record.envVars) { $1 }
    }

    /// A client for the agent of a running sandbox.
    public func agent(_ id: String, for identity: Identity) async throws -> AgentClient {
        try await open(id, for: identity).agent
    }

    /// Runs `body` against the agent of a running sandbox. A call cut short
    /// because the sandbox stopped running meanwhile (a pause, a kill, a
    /// fork's checkpoint ends every host connection into it) is a conflict
    /// that says so, not a failure of the server.
    public func withAgent<T: Sendable>(
        _ id: String, for identity: Identity, _ body: (AgentClient) async throws -> T
    ) async throws -> T {
        try await withAgent(try await open(id, for: identity), body)
    }

    /// `withAgent` for a sandbox the request has opened.
    public func withAgent<T: Sendable>(_ sandbox: RunningSandbox, _ body: (AgentClient) async throws -> T) async throws -> T {
        do {
            return try await body(sandbox.agent)
        } catch {
            throw await explain(error, sandbox.id)
        }
    }

    /// `error`, or the conflict it really was when the sandbox is no longer
    /// running (or an operation that stops it is under way).
    public func explain(_ error: Error, _ id: String) async -> Error {
        if let sprout = error as? SproutError, sprout.code != .unavailable && sprout.code != .timeout && sprout.code != .io {
            return error
        }
        if let operation = await gate.current(id), [.kill, .pause, .fork, .died].contains(operation) {
            return SproutError(.conflict, "sandbox \(id) is \(operation.progressive): the request was cut short")
        }
        if let record = try? await repository.find(id), record.state != .running {
            return SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue) now: it stopped running during the request")
        }
        return error
    }

    /// Whether the sandbox is being killed or is gone (killed, cleaned up
    /// after a death, or no record at all), rather than paused or forked.
    public func isEnding(_ id: String) async -> Bool {
        if let operation = await gate.current(id), [.kill, .died].contains(operation) { return true }
        guard let record = try? await repository.find(id) else { return true }
        return record.state == .killing || record.state == .killed
    }

    /// Where a sandbox's extended attributes are kept (see `SandboxXattrs`).
    func xattrs(_ id: String) -> SandboxXattrs {
        SandboxXattrs(onHost: runtime.kind == .gvisor, upper: settings.directory(id) + "/upper", sandbox: id)
    }

    /// The sandbox's env vars, which the server adds to every process it starts there.
    public func environment(_ id: String, for identity: Identity) async throws -> [String: String] {
        let own = try await repository.owned(id, team: identity.team).envVars
        return settings.serverEnvironment.merging(own) { _, sandbox in sandbox }
    }

    /// The sandbox's address, for port previews.
    public func address(_ id: String, for identity: Identity) async throws -> String {
        try await address(try await repository.owned(id, team: identity.team))
    }

    /// `address` for a record the caller has read already.
    func address(_ read: SandboxRecord) async throws -> String {
        let record = try await running(read)
        return network.address(NetworkSlot(index: record.slot ?? 0))
    }

    // MARK: Timeouts

    public func setTimeout(_ id: String, seconds: Int, for identity: Identity) async throws -> API.Sandbox {
        try CreateRequest.validateTimeout(seconds, max: settings.maxTimeoutSeconds)
        _ = try await repository.owned(id, team: identity.team)
        let record = try await repository.modify(id) { record in
            record.lifetimeSeconds = Double(seconds)
            switch record.state {
            case .paused:
                // The clock starts again at resume.
                record.remainingSeconds = Double(seconds)
            case .running, .creating, .pausing, .resuming, .forking:
                record.expiresAt = self.clock.now + Double(seconds)
            default:
                throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue)")
            }
        }
        return api(record)
    }

    // MARK: Network

    /// Replaces the outbound policy of a running or paused sandbox. The
    /// catalog changes first, then the firewall in one transaction; if that
    /// fails the catalog is put back, so what is acknowledged is what holds
    /// (and a restart applies the catalog's policy).
    public func setNetwork(_ id: String, internet: Bool, egress: [String], for identity: Identity) async throws -> API.Sandbox {
        let egress = try CreateRequest.validateEgress(egress, internet: internet)
        let new = NetworkPolicy(internet: internet, egress: egress)
        let old = try await repository.owned(id, team: identity.team)
        return try await gate.run(.network, on: id) {
            let record = try await repository.modify(id) { record in
                guard [.running, .paused].contains(record.state) else {
                    throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue): only a running or paused sandbox has a network to change")
                }
                record.internet = internet
                record.egress = egress.isEmpty ? nil : egress
            }
            do {
                try await network.updatePolicy(sandboxID: id, from: old.policy, to: new)
            } catch {
                _ = try? await repository.modify(id) { record in
                    record.internet = old.internet
                    record.egress = old.egress
                }
                throw error
            }
            return api(record)
        }
    }
}

extension SandboxRecord {
    var api: API.Sandbox {
        API.Sandbox(
            id: id, env: env, runtime: runtime, state: state, team: team, createdAt: createdAt,
            expiresAt: state == .killed || state == .paused ? nil : expiresAt, endedAt: endedAt, cpu: cpu, memoryMB: memoryMB,
            internet: internet, egress: egress, diskMB: diskMB, metadata: metadata,
            envVarNames: envVars.keys.sorted(), address: slot.map { NetworkSlot(index: $0).sandboxAddress }, error: error,
            autoResume: state == .paused ? autoResume : (resumeOnRequest ? true : nil), remainingSeconds: state == .paused ? remainingSeconds : nil,
            pausedAt: state == .paused ? pausedAt : nil, onTimeout: onTimeout, idlePauseSeconds: idlePauseSeconds,
            filesOnly: state == .paused && lastPauseFilesOnly ? true : nil)
    }
}

/// A running sandbox as one request sees it (`SandboxLifecycle.open`).
public struct RunningSandbox: Sendable {
    public let id: String
    public let agent: AgentClient
    /// The server's, its env's and the sandbox's env vars, which every
    /// process the server starts there gets.
    public let environment: [String: String]
    /// Where a process that names no cwd starts, and who it runs as, when
    /// its env says (an image's `WorkingDir` and `User`).
    public var workdir: String? = nil
    public var user: String? = nil
}
