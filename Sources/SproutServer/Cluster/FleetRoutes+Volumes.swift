import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutAPI
import SproutCluster
import SproutCore

/// Volumes on an API server: each lives on one node (its file system is
/// there), recorded in the fleet's catalog (`volume_home`); a new one goes
/// to the ready node with the fewest, requests for one to its node, lists
/// merge every node's, and a sandbox that mounts volumes is placed where
/// they are. Volumes made before the fleet recorded homes are the builder's.
extension FleetRoutes {
    func registerVolumes(v1: RouterGroup<SproutContext>, e2b: RouterGroup<SproutContext>, tokened: RouterGroup<SproutContext>) {
        v1.post("volumes") { request, context in try await createVolume(request, context: context, idField: "id") }
        v1.get("volumes") { request, context in try await list(request, context: context, path: "/v1/volumes", unique: true) }
        e2b.post("volumes") { request, context in try await createVolume(request, context: context, idField: "volumeID") }
        e2b.get("volumes") { request, context in try await list(request, context: context, path: "/volumes", unique: true) }
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            for (group, path) in [(v1, "volumes/:ref"), (v1, "volumes/:ref/**"), (e2b, "volumes/:ref"), (e2b, "volumes/:ref/**")] {
                group.on(RouterPath(path), method: method) { request, context in
                    let caller = try context.caller()
                    let parts = request.uri.path.split(separator: "/")
                    if method == .post, parts.count == 4, parts[0] == "v1", parts[3] == "move" {
                        return try await moveVolume(request, context: context)
                    }
                    let home = try await catalog.volumeHome(team: caller.team, try context.parameters.require("ref"))
                    let response = try await forward(request, context: context, to: try await volumeNode(home))
                    // A delete the node answered: the volume is gone from the fleet's record too.
                    if method == .delete, !path.hasSuffix("**"), response.status.code / 100 == 2, let home { try? await catalog.forgetVolume(id: home.id) }
                    return response
                }
            }
            // Its content carries its own token, which its node checks.
            tokened.on("volumecontent/:id/**", method: method) { request, context in
                try await relay(request, to: try await volumeNode(try await catalog.volumeHome(id: try context.parameters.require("id"))))
            }
        }
    }

    /// The node a volume lives on: its recorded home, else (one made before homes were recorded) the builder.
    func volumeNode(_ home: ClusterCatalog.VolumeHome?) async throws -> ClusterCatalog.Placement {
        guard let home else { return try await builder() }
        guard let node = try await catalog.nodes().first(where: { $0.id == home.node }) else {
            throw SproutError(.unavailable, "volume \(home.name) lives on node \(home.node), which is not in the fleet")
        }
        return node.placement
    }

    /// The node a sandbox that mounts `names` (the team's volumes, by name or
    /// id) must be placed on, or nil when it mounts none.
    func volumesNode(_ names: [String], team: String) async throws -> String? {
        guard !names.isEmpty else { return nil }
        var nodes: [String: String] = [:]
        for name in names {
            if let home = try await catalog.volumeHome(team: team, name) { nodes[name] = home.node } else { nodes[name] = try await builder().node }
        }
        let distinct = Set(nodes.values)
        guard distinct.count == 1, let node = distinct.first else {
            throw SproutError(.invalidArgument, "the volumes \(names.joined(separator: ", ")) live on different nodes (\(nodes.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))); a sandbox mounts volumes of one node")
        }
        return node
    }

    /// `POST /v1/volumes/{name}/move[?node=ID]` (admin): the team's volume
    /// to that node, or to the ready node with the fewest volumes. Refused
    /// while a sandbox that has not ended mounts it (a drain moves those
    /// with it). Answers the volume as its new node has it.
    private func moveVolume(_ request: Request, context: SproutContext) async throws -> Response {
        let caller = try context.caller()
        guard caller.admin else { throw SproutError(.forbidden, "moving a volume needs an admin key") }
        let reference = try context.parameters.require("ref")
        guard let home = try await catalog.volumeHome(team: caller.team, reference) else {
            throw SproutError(.notFound, "no volume named '\(reference.prefix(64))'")
        }
        let wanted = request.uri.queryParameters.get("node").map { String($0) }
        let target = try await volumeTarget(leaving: home.node, wanted: wanted)
        let source = try await volumeNode(home)
        try await moveVolume(home, team: caller.team, from: source, to: target, withPaused: false, by: caller)
        await dropMovedVolume(home, team: caller.team, from: source, by: caller)
        let moved: API.Volume = try await call(.get, "/v1/volumes/\(home.id)", identity: caller, to: target)
        return try JSONBody.response(moved)
    }

    /// Where a volume leaving `node` goes: `wanted` (a ready node), or the
    /// ready node with the fewest volumes whose runtime and CPU features can
    /// restore the memory images of sandboxes that mount it.
    func volumeTarget(leaving node: String, wanted: String?) async throws -> ClusterCatalog.Placement {
        let nodes = try await catalog.nodes()
        let source = nodes.first { $0.id == node }
        let ready = nodes.filter { $0.state == .ready && $0.leaseSeconds > 0 && $0.id != node }
        if let wanted {
            guard let chosen = ready.first(where: { $0.id == wanted }) else { throw SproutError(.notFound, "no ready node with id '\(wanted)' other than the volume's") }
            return chosen.placement
        }
        let counts = try await catalog.volumeCounts()
        let fitting = ready.filter { candidate in
            guard let source else { return true }
            return candidate.registration.runtime == source.registration.runtime
                && Set(source.registration.cpuFlags).isSubset(of: Set(candidate.registration.cpuFlags))
        }
        guard let chosen = fitting.min(by: { (counts[$0.id] ?? 0, $0.id) < (counts[$1.id] ?? 0, $1.id) }) else {
            throw SproutError(.unavailable, "no other ready node of the fleet can take the volume")
        }
        return chosen.placement
    }

    /// Moves volume `home` (of `team`) from `source` to `target`: the source
    /// stores its file system and mounts it no more (`export`; `withPaused`:
    /// paused sandboxes that mount it may stay, to move after it), the
    /// target takes it in (`import`), and the fleet records its new home.
    /// On a failure the source mounts it again and nothing else changed.
    /// The source's copy stays until `dropMovedVolume`.
    func moveVolume(
        _ home: ClusterCatalog.VolumeHome, team: String, from source: ClusterCatalog.Placement, to target: ClusterCatalog.Placement,
        withPaused: Bool, by caller: Identity
    ) async throws {
        let identity = caller.acting(for: team)
        let export: API.VolumeExport = try await call(.post, "/v1/volumes/\(home.id)/export" + (withPaused ? "?withPaused=true" : ""),
                                                      body: ByteBuffer(), identity: identity, to: source)
        do {
            let _: API.Volume = try await call(.post, "/v1/volumes/import", body: ByteBuffer(bytes: try JSONEncoder().encode(export)),
                                               identity: identity, to: target)
            try await catalog.moveVolume(id: home.id, to: target.node)
        } catch {
            if let cancel = try? await send(.delete, path: "/v1/volumes/\(home.id)/export", query: nil, headers: [:], body: nil, identity: identity,
                                            to: source) {
                _ = try? await cancel.body.collect(upTo: 1 << 20)
            }
            throw error
        }
        logger.notice("volume moved to another node", metadata: ["volume": "\(home.id)", "from": "\(source.node)", "to": "\(target.node)"])
    }

    /// The copy a moved volume left on its old node goes (a failure is
    /// logged: that copy is never mounted again, and its node's list shows it
    /// until it is deleted there).
    func dropMovedVolume(_ home: ClusterCatalog.VolumeHome, team: String, from source: ClusterCatalog.Placement, by caller: Identity) async {
        let identity = caller.acting(for: team)
        do {
            let response = try await send(.delete, path: "/v1/volumes/\(home.id)", query: nil, headers: [:], body: nil, identity: identity, to: source)
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status.code / 100 == 2 else { throw Self.nodeError(body, status: response.status.code, node: source.node) }
        } catch {
            logger.warning("the old copy of a moved volume stays on its node", metadata: ["volume": "\(home.id)", "node": "\(source.node)", "error": "\(error)"])
        }
    }

    /// A new volume, on the ready node with the fewest; its name must be new
    /// to the team fleet-wide.
    private func createVolume(_ request: Request, context: SproutContext, idField: String) async throws -> Response {
        let caller = try context.caller()
        let body = try await request.body.collect(upTo: JSONBody.limit)
        let name = (try? JSONDecoder().decode(JSONValue.self, from: Data(body.readableBytesView)))?["name"]?.text ?? ""
        if !name.isEmpty, try await catalog.volumeHome(team: caller.team, name) != nil {
            throw SproutError(.alreadyExists, "a volume named '\(name)' already exists")
        }
        let ready = try await catalog.nodes().filter { $0.state == .ready && $0.leaseSeconds > 0 }
        let counts = try await catalog.volumeCounts()
        guard let node = ready.min(by: { (counts[$0.id] ?? 0, $0.id) < (counts[$1.id] ?? 0, $1.id) }) else {
            throw SproutError(.unavailable, "no node of the fleet is ready to hold a volume")
        }
        let placement = node.placement
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: request.headers,
                                      body: .bytes(body), identity: caller, to: placement)
        let answer = try await response.body.collect(upTo: 16 << 20)
        if response.status.code / 100 == 2, let made = try? JSONDecoder().decode(JSONValue.self, from: Data(answer.readableBytesView)),
           let id = made[idField]?.text, !id.isEmpty {
            guard try await catalog.recordVolume(id: id, team: caller.team, name: made["name"]?.text ?? name, node: node.id) else {
                // Another API server made one of that name meanwhile: this one goes.
                _ = try? await send(.delete, path: request.uri.path + "/" + id, query: nil, headers: [:], body: nil, identity: caller, to: placement)
                throw SproutError(.alreadyExists, "a volume named '\(name)' already exists")
            }
        }
        return Self.response(response, body: ResponseBody(byteBuffer: answer))
    }
}
