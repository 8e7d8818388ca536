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
