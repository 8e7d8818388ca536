import Foundation
import HTTPTypes
import Hummingbird
import SproutAPI
import SproutCore

/// `/v1/sandboxes`: create, list, show, kill, timeout, snapshot, pause, resume, fork; `/v1/envs`.
struct SandboxRoutes {
    let services: SproutServices

    func register(on group: RouterGroup<SproutContext>) {
        group.post("sandboxes") { request, context in
            let body = try await JSONBody.decode(API.CreateSandbox.self, from: request)
            try await services.builtins.ensure(body.env, for: try context.caller())
            let sandbox = try await services.lifecycle.create(body, for: try context.caller())
            return try JSONBody.response(sandbox, status: .created)
        }
        group.get("sandboxes") { request, context in
            let all = request.uri.queryParameters.get("all") == "true"
            return try JSONBody.response(try await services.lifecycle.list(for: try context.caller(), includeEnded: all))
        }
        group.get("sandboxes/:id") { _, context in
            try JSONBody.response(try await services.lifecycle.get(try context.parameters.require("id"), for: try context.caller()))
        }
        group.delete("sandboxes/:id") { _, context in
            try JSONBody.response(try await services.lifecycle.kill(try context.parameters.require("id"), for: try context.caller()))
        }
        // A fleet's API server moving a paused sandbox here from a lost or draining node.
        group.post("sandboxes/:id/adopt") { _, context in
            let lifecycle = services.lifecycle
            return try JSONBody.response(lifecycle.api(try await lifecycle.adopt(try context.parameters.require("id"), for: try context.caller())))
        }
        group.post("sandboxes/:id/snapshot") { request, context in
            let body = try await JSONBody.decode(API.Snapshot.self, from: request)
            let id = try context.parameters.require("id")
            return try JSONBody.response(try await services.lifecycle.snapshot(id, name: body.name, for: try context.caller()), status: .created)
        }
        group.post("sandboxes/:id/pause") { request, context in
            let body = try await JSONBody.decode(API.Pause.self, from: request, orIfEmpty: API.Pause())
            let id = try context.parameters.require("id")
            return try JSONBody.response(try await services.lifecycle.pause(
                id, autoResume: body.autoResume ?? false, filesOnly: body.memory == false, for: try context.caller()))
        }
        group.post("sandboxes/:id/resume") { _, context in
            try JSONBody.response(try await services.lifecycle.resume(try context.parameters.require("id"), for: try context.caller()))
        }
        group.post("sandboxes/:id/fork") { request, context in
            let body = try await JSONBody.decode(API.Fork.self, from: request)
            let id = try context.parameters.require("id")
            let forks = try await services.lifecycle.fork(id, count: body.count, for: try context.caller())
            return try JSONBody.response(API.ForkResult(sandboxes: forks), status: .created)
        }
        group.get("envs") { _, context in
            try JSONBody.response(try await services.envs.list(for: try context.caller()))
        }
        group.get("envs/:id") { _, context in
            try JSONBody.response(try await services.envs.show(try context.parameters.require("id"), for: try context.caller()))
        }
        group.post("envs/:id/publish") { _, context in
            try JSONBody.response(try await services.envs.setPublished(try context.parameters.require("id"), true, for: try context.caller()))
        }
        group.post("envs/:id/unpublish") { _, context in
            try JSONBody.response(try await services.envs.setPublished(try context.parameters.require("id"), false, for: try context.caller()))
        }
        group.get("envs/:id/tree") { _, context in
            try JSONBody.response(try await services.envs.tree(try context.parameters.require("id"), for: try context.caller()))
        }
        group.delete("envs/:id") { request, context in
            let force = request.uri.queryParameters.get("force") == "true"
            let deleted = try await services.lifecycle.deleteEnv(try context.parameters.require("id"), force: force, for: try context.caller())
            var response = try JSONBody.response(API.Deleted(deleted: deleted))
            response.headers[.sproutDeletedEnvs] = deleted.joined(separator: ",")
            return response
        }
        group.get("sandboxes/:id/events") { _, context in
            try JSONBody.response(try await services.lifecycle.events(try context.parameters.require("id"), for: try context.caller()))
        }
        group.get("sandboxes/:id/metrics") { request, context in
            let id = try context.parameters.require("id")
            _ = try await services.lifecycle.get(id, for: try context.caller())
            let (start, end) = try Self.timeRange(request)
            return try JSONBody.response(services.sandboxMetrics.samples(id, start: start, end: end))
        }
        group.put("sandboxes/:id/network") { request, context in
            let body = try await JSONBody.decode(API.SetNetwork.self, from: request)
            let id = try context.parameters.require("id")
            return try JSONBody.response(try await services.lifecycle.setNetwork(
                id, internet: body.internet ?? true, egress: body.egress ?? [], for: try context.caller()))
        }
        group.post("sandboxes/:id/timeout") { request, context in
            let body = try await JSONBody.decode(API.SetTimeout.self, from: request)
            let id = try context.parameters.require("id")
            return try JSONBody.response(try await services.lifecycle.setTimeout(id, seconds: body.timeoutSeconds, for: try context.caller()))
        }
    }
}

/// `/v1/keys`: admin only.
struct KeyRoutes {
    let keys: any KeyService

    func register(on group: RouterGroup<SproutContext>) {
        group.post("keys") { request, context in
            let caller = try context.caller()
            try Self.requireAdmin(caller)
            let body = try await JSONBody.decode(API.CreateKey.self, from: request)
            let created = try await keys.create(name: body.name ?? "", team: body.team ?? caller.team, admin: body.admin ?? false)
            return try JSONBody.response(created, status: .created)
        }
        group.get("whoami") { _, context in
            try JSONBody.response(try context.caller())
        }
        group.get("keys") { _, context in
            try Self.requireAdmin(try context.caller())
            return try JSONBody.response(try await keys.list())
        }
        group.delete("keys/:id") { _, context in
            try Self.requireAdmin(try context.caller())
            return try JSONBody.response(try await keys.revoke(id: try context.parameters.require("id")))
        }
    }

    static func requireAdmin(_ identity: Identity) throws {
        guard identity.admin else { throw SproutError(.forbidden, "managing keys needs an admin key") }
    }
}

extension SandboxRoutes {
    /// `start` and `end` in seconds since the Unix epoch (either may be left out).
    static func timeRange(_ request: Request) throws -> (Double?, Double?) {
        func value(_ name: String) throws -> Double? {
            guard let text = request.uri.queryParameters.get(name) else { return nil }
            guard let n = Double(text), n.isFinite, n >= 0 else {
                throw SproutError(.invalidArgument, "\(name) must be seconds since the Unix epoch, got \(text.prefix(32))")
            }
            return n
        }
        let start = try value("start"), end = try value("end")
        if let start, let end, start > end { throw SproutError(.invalidArgument, "start is after end") }
        return (start, end)
    }
}

extension HTTPField.Name {
    /// A node's answer to an env's delete names every env it deleted (the
    /// env and, with `force`, its descendants), on `/v1` and E2B's routes
    /// alike: an API server has the fleet's other nodes forget them.
    static let sproutDeletedEnvs = HTTPField.Name("Sprout-Deleted-Envs")!
}
