import Foundation
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// envd's directory watches: `WatchDir` (a server stream, the async SDK)
/// and `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher` (polling, the
/// sync SDK), on the agent's watch. Event names are relative to the
/// watched directory.
enum EnvdWatch {
    /// `allowNetworkMounts` is accepted: a sandbox has no network mounts.
    struct Request: Decodable { var path: String; var recursive: Bool?; var includeEntry: Bool?; var allowNetworkMounts: Bool? }
    struct WatcherID: Codable { var watcherId: String }
    struct Event: Encodable, Sendable {
        var name: String
        var type: String
        /// With `includeEntry`: the entry as it is when the event is read (none once removed).
        var entry: EnvdFilesystem.EntryInfo?
        init(name: String, type: String, entry: EnvdFilesystem.EntryInfo? = nil) {
            self.name = name
            self.type = type
            self.entry = entry
        }
    }
    struct Events: Encodable { var events: [Event] }
    struct StreamMessage: Encodable {
        struct Start: Encodable {}
        var start: Start?
        var filesystem: Event?
        var keepalive: EnvdProcess.Empty?
    }

    /// The agent writes a file under a temporary name and renames it into
    /// place; envd writes in place. Watchers see what envd's would: the
    /// temporary name is hidden, and the file appearing is CREATE then WRITE.
    struct Translator {
        let directory: String
        private var renamedIn: Set<String> = []

        init(directory: String) { self.directory = directory }

        mutating func translate(_ raw: WatchEvent) -> [Event] {
            let event = EnvdWatch.event(raw, under: directory)
            let base = event.name.split(separator: "/").last.map(String.init) ?? event.name
            if base.hasPrefix("."), let marker = base.range(of: ".upload-"), base[marker.upperBound...].count == 8 {
                let target = String(base.dropFirst()[..<base.dropFirst().range(of: ".upload-")!.lowerBound])
                let parent = event.name.contains("/") ? String(event.name[..<event.name.lastIndex(of: "/")!]) + "/" : ""
                if raw.type == .rename { renamedIn.insert(parent + target) }
                return []
            }
            if raw.type == .create, renamedIn.remove(event.name) != nil {
                return [event, Event(name: event.name, type: "EVENT_TYPE_WRITE")]
            }
            return [event]
        }
    }

    static func event(_ event: WatchEvent, under directory: String) -> Event {
        let prefix = directory == "/" ? "/" : directory + "/"
        let name = event.path.hasPrefix(prefix) ? String(event.path.dropFirst(prefix.count)) : event.path
        let type = switch event.type {
        case .create: "EVENT_TYPE_CREATE"
        case .write: "EVENT_TYPE_WRITE"
        case .remove: "EVENT_TYPE_REMOVE"
        case .rename: "EVENT_TYPE_RENAME"
        }
        return Event(name: name, type: type)
    }
}

/// Polling watchers by id: each keeps its agent watch open and buffers
/// events until they are fetched (at most 10,000; the oldest go first).
actor EnvdWatchers {
    static let limit = 256

    private struct Watcher {
        var sandbox: String
        var session: WatchSession
        var events: [EnvdWatch.Event] = []
        var failure: String?
    }
    private var watchers: [String: Watcher] = [:]

    func add(_ session: WatchSession, sandbox: String, directory: String,
             enrich: @escaping @Sendable (EnvdWatch.Event) async -> EnvdWatch.Event) throws -> String {
        // Watchers whose watch ended (their sandbox is gone, say) and whose
        // client never came back for the news make room first.
        if watchers.count >= Self.limit { watchers = watchers.filter { $0.value.failure == nil } }
        guard watchers.count < Self.limit else { throw ConnectRPC.Failure(.resource_exhausted, "at most \(Self.limit) watchers") }
        let id = "w_" + Identifiers.random(length: 16)
        watchers[id] = Watcher(sandbox: sandbox, session: session)
        Task {
            var translator = EnvdWatch.Translator(directory: directory)
            do {
                for try await event in session {
                    for translated in translator.translate(event) { self.append(id, await enrich(translated)) }
                }
                self.fail(id, "the watch ended")
            } catch {
                self.fail(id, "\(error)")
            }
        }
        return id
    }

    private func append(_ id: String, _ event: EnvdWatch.Event) {
        watchers[id]?.events.append(event)
        if let count = watchers[id]?.events.count, count > 10_000 { watchers[id]?.events.removeFirst(count - 10_000) }
    }

    private func fail(_ id: String, _ reason: String) { watchers[id]?.failure = reason }

    func take(_ id: String, sandbox: String) throws -> [EnvdWatch.Event] {
        guard var watcher = watchers[id], watcher.sandbox == sandbox else { throw ConnectRPC.Failure(.not_found, "watcher \(id.prefix(40)) not found") }
        let events = watcher.events
        watcher.events = []
        if events.isEmpty, let failure = watcher.failure {
            watchers[id] = nil
            throw ConnectRPC.Failure(.unavailable, "watcher \(id) stopped: \(failure)")
        }
        watchers[id] = watcher
        return events
    }

    func remove(_ id: String, sandbox: String) throws {
        guard let watcher = watchers[id], watcher.sandbox == sandbox else { throw ConnectRPC.Failure(.not_found, "watcher \(id.prefix(40)) not found") }
        watcher.session.close()
        watchers[id] = nil
    }
}

extension EnvdService {
    func watchCall(_ method: String, _ request: Request) async throws -> Response? {
        switch method {
        case "CreateWatcher":
            let body = try await ConnectRPC.decodeUnary(EnvdWatch.Request.self, request)
            let (path, session) = try await openWatch(body)
            let enrich = try await enricher(body, directory: path)
            let id = try await watchers.add(session, sandbox: sandboxID, directory: path, enrich: enrich)
            return try ConnectRPC.unary(EnvdWatch.WatcherID(watcherId: id))
        case "GetWatcherEvents":
            let body = try await ConnectRPC.decodeUnary(EnvdWatch.WatcherID.self, request)
            return try ConnectRPC.unary(EnvdWatch.Events(events: try await watchers.take(body.watcherId, sandbox: sandboxID)))
        case "RemoveWatcher":
            let body = try await ConnectRPC.decodeUnary(EnvdWatch.WatcherID.self, request)
            try await watchers.remove(body.watcherId, sandbox: sandboxID)
            return try ConnectRPC.unary(EnvdProcess.Empty())
        case "WatchDir":
            let body = try await ConnectRPC.decodeStreamRequest(EnvdWatch.Request.self, request)
            let (path, session) = try await openWatch(body)
            let enrich = try await enricher(body, directory: path)
            let activity = services.lifecycle.activity, id = sandboxID, service = self
            return Response(status: .ok, headers: [.contentType: ConnectRPC.streamContentType], body: ResponseBody { writer in
                defer { session.close() }
                var failure: ConnectRPC.Failure?
                var translator = EnvdWatch.Translator(directory: path)
                do {
                    try await writer.write(try ConnectRPC.message(EnvdWatch.StreamMessage(start: .init())))
                    try await activity.holding(id) {
                        for try await event in session {
                            for translated in translator.translate(event) {
                                try await writer.write(try ConnectRPC.message(EnvdWatch.StreamMessage(filesystem: await enrich(translated))))
                            }
                        }
                    }
                } catch {
                    failure = await service.streamFailure(error)
                }
                try await writer.write(ConnectRPC.endOfStream(failure))
                try await writer.finish(nil)
            })
        default:
            return nil
        }
    }

    /// What adds the entry to an event when the watch asked for it (envd 0.6.3).
    func enricher(_ body: EnvdWatch.Request, directory: String) async throws
        -> @Sendable (EnvdWatch.Event) async -> EnvdWatch.Event
    {
        guard body.includeEntry == true else { return { $0 } }
        let agent = sandbox.agent
        let service = self
        return { event in
            guard event.type != "EVENT_TYPE_REMOVE" else { return event }
            var enriched = event
            let path = directory == "/" ? "/" + event.name : directory + "/" + event.name
            if let info = try? await agent.stat(path) { enriched.entry = try? await service.describe(info, agent, listing: true) }
            return enriched
        }
    }

    func openWatch(_ body: EnvdWatch.Request) async throws -> (String, WatchSession) {
        let path = try user.resolve(body.path)
        let session = try await withAgent { agent -> WatchSession in
            guard (try await agent.stat(path)).type == .dir else { throw ConnectRPC.Failure(.invalid_argument, "path \(path) is not a directory") }
            return try await agent.watch(path, recursive: body.recursive ?? false)
        }
        return (path, session)
    }
}
