import EnvdProto
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
    /// What a watch asks for (`WatchDir` and `CreateWatcher` ask the same).
    /// `allowNetworkMounts` is accepted: a sandbox has no network mounts.
    struct Request {
        var path: String
        var recursive: Bool
        var includeEntry: Bool
        init(_ request: Filesystem_WatchDirRequest) { (path, recursive, includeEntry) = (request.path, request.recursive, request.includeEntry) }
        init(_ request: Filesystem_CreateWatcherRequest) { (path, recursive, includeEntry) = (request.path, request.recursive, request.includeEntry) }
    }
    /// An event; with `includeEntry`, its entry as it is when the event is
    /// read (none once removed).
    typealias Event = Filesystem_FilesystemEvent

    static func event(_ name: String, _ type: Filesystem_EventType) -> Event {
        var event = Event()
        event.name = name
        event.type = type
        return event
    }

    static func streamMessage(_ event: Filesystem_WatchDirResponse.OneOf_Event) -> Filesystem_WatchDirResponse {
        var message = Filesystem_WatchDirResponse()
        message.event = event
        return message
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
                return [event, EnvdWatch.event(event.name, .write)]
            }
            return [event]
        }
    }

    static func event(_ event: WatchEvent, under directory: String) -> Event {
        let prefix = directory == "/" ? "/" : directory + "/"
        let name = event.path.hasPrefix(prefix) ? String(event.path.dropFirst(prefix.count)) : event.path
        let type: Filesystem_EventType = switch event.type {
        case .create: .create
        case .write: .write
        case .remove: .remove
        case .rename: .rename
        }
        return Self.event(name, type)
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
            let body = EnvdWatch.Request(try await ConnectRPC.decodeUnary(Filesystem_CreateWatcherRequest.self, request))
            let (path, session) = try await openWatch(body)
            let enrich = try await enricher(body, directory: path)
            var response = Filesystem_CreateWatcherResponse()
            response.watcherID = try await watchers.add(session, sandbox: sandboxID, directory: path, enrich: enrich)
            return try ConnectRPC.unary(response, for: request)
        case "GetWatcherEvents":
            let body = try await ConnectRPC.decodeUnary(Filesystem_GetWatcherEventsRequest.self, request)
            var response = Filesystem_GetWatcherEventsResponse()
            response.events = try await watchers.take(body.watcherID, sandbox: sandboxID)
            return try ConnectRPC.unary(response, for: request)
        case "RemoveWatcher":
            let body = try await ConnectRPC.decodeUnary(Filesystem_RemoveWatcherRequest.self, request)
            try await watchers.remove(body.watcherID, sandbox: sandboxID)
            return try ConnectRPC.unary(Filesystem_RemoveWatcherResponse(), for: request)
        case "WatchDir":
            let body = EnvdWatch.Request(try await ConnectRPC.decodeStreamRequest(Filesystem_WatchDirRequest.self, request))
            let (path, session) = try await openWatch(body)
            let enrich = try await enricher(body, directory: path)
            let activity = services.lifecycle.activity, id = sandboxID, service = self, codec = ConnectRPC.Codec(request)
            return Response(status: .ok, headers: [.contentType: codec.streamContentType], body: ResponseBody { writer in
                defer { session.close() }
                var failure: ConnectRPC.Failure?
                var translator = EnvdWatch.Translator(directory: path)
                do {
                    try await writer.write(try ConnectRPC.message(EnvdWatch.streamMessage(.start(.init())), codec))
                    try await activity.holding(id) {
                        for try await event in session {
                            for translated in translator.translate(event) {
                                try await writer.write(try ConnectRPC.message(EnvdWatch.streamMessage(.filesystem(await enrich(translated))), codec))
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
        guard body.includeEntry else { return { $0 } }
        let agent = sandbox.agent
        let service = self
        return { event in
            guard event.type != .remove else { return event }
            var enriched = event
            let path = directory == "/" ? "/" + event.name : directory + "/" + event.name
            if let info = try? await agent.stat(path), let entry = try? await service.describe(info, agent, listing: true) { enriched.entry = entry }
            return enriched
        }
    }

    func openWatch(_ body: EnvdWatch.Request) async throws -> (String, WatchSession) {
        let path = try user.resolve(body.path)
        let session = try await withAgent { agent -> WatchSession in
            guard (try await agent.stat(path)).type == .dir else { throw ConnectRPC.Failure(.invalid_argument, "path \(path) is not a directory") }
            return try await agent.watch(path, recursive: body.recursive)
        }
        return (path, session)
    }
}
