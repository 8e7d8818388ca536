import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import SproutAPI
import SproutCluster
import SproutCore

/// The API role (`sprout server --role api`): stateless, any number behind
/// a load balancer. It checks API keys against the fleet's catalog, places
/// a create on a node (the reservation is the catalog's), and forwards each
/// request for a sandbox to the node that holds it, acting for the caller's
/// team with the cluster token. What it forwards is streamed both ways.
/// Not yet routed: envs and builds, volumes, WebSockets (terminals, exec
/// streams, port previews), the E2B control plane and envd.
struct FleetRoutes: Sendable {
    let catalog: ClusterCatalog
    let keys: FleetKeys
    let clusterToken: String
    let http: HTTPClient
    let logger: Logger

    func register(on router: Router<SproutContext>) {
        router.get("health") { _, _ in
            try JSONBody.response(["status": "ok", "role": "api"])
        }
        let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: keys))
        KeyRoutes(keys: keys).register(on: v1)
        NodeRoutes(catalog: catalog).register(on: v1)
        v1.post("sandboxes") { request, context in try await create(request, context: context) }
        v1.get("sandboxes") { request, context in try await list(request, context: context) }
        v1.post("sandboxes/:id/resume") { request, context in try await resume(request, context: context) }
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            for path in ["sandboxes/:id", "sandboxes/:id/**"] {
                v1.on(RouterPath(path), method: method) { request, context in
                    let id = try context.parameters.require("id")
                    guard let placement = try await catalog.placement(of: id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
                    let response = try await forward(request, context: context, to: placement)
                    // A kill the node answered: the reservation goes with the sandbox.
                    if method == .delete, path == "sandboxes/:id", response.status == .ok { try? await catalog.forget(id) }
                    return response
                }
            }
        }
    }

    /// WebSockets for a sandbox (exec streams, terminals, port previews):
    /// upgraded here, connected to the sandbox's node as the caller's team,
    /// and relayed frame by frame until either side closes or the key is revoked.
    func registerWebSocket(on router: Router<SproutContext>) {
        let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: keys))
        for path in ["sandboxes/:id/**"] {
            v1.ws(RouterPath(path)) { request, context in
                let id = try context.parameters.require("id")
                guard try await catalog.placement(of: id) != nil else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
                return .upgrade(AuthMiddleware.webSocketHeaders(request))
            } onUpgrade: { inbound, outbound, wsContext in
                let context = wsContext.requestContext
                let id = try context.parameters.require("id")
                let identity = try context.caller()
                guard let placement = try await catalog.placement(of: id), let url = URL(string: placement.address), let host = url.host else {
                    throw SproutError(.notFound, "no sandbox with id '\(id)'")
                }
                let uri = wsContext.request.uri
                let upstream = try await SandboxWebSocket.connect(
                    host: host, port: UInt16(url.port ?? 80), target: uri.path + (uri.query.map { $0.isEmpty ? "" : "?" + $0 } ?? ""),
                    headers: [("Sprout-Cluster-Token", clusterToken), ("Sprout-Key-Id", identity.keyID), ("Sprout-Team", identity.team),
                              ("Sprout-Admin", identity.admin ? "true" : "false"), ("Sec-WebSocket-Protocol", "sprout")])
                try await Relay.run(upstream: upstream, inbound: inbound, outbound: outbound) { [keys] in await keys.untilRevoked(identity.keyID) }
            }
        }
    }

    /// Places the sandbox on a node and creates it there; a node that cannot
    /// be reached is skipped for another.
    private func create(_ request: Request, context: SproutContext) async throws -> Response {
        let body = try await request.body.collect(upTo: JSONBody.limit)
        let asked = try JSONDecoder().decode(API.CreateSandbox.self, from: Data(body.readableBytesView))
        var refused: Set<String> = []
        while true {
            let provisional = "pending-" + Identifiers.random(length: 16)
            let placement = try await catalog.place(ClusterCatalog.PlacementRequest(
                sandbox: provisional, cpu: asked.cpu ?? 1, memoryMB: Int64(asked.memoryMB ?? 512), excluding: refused))
            let answer: (response: HTTPClientResponse, body: ByteBuffer)
            do {
                let response = try await send(request.method, path: "/v1/sandboxes", query: request.uri.query, headers: request.headers,
                                              body: .bytes(body), identity: try context.caller(), to: placement)
                answer = (response, try await response.body.collect(upTo: 16 << 20))
            } catch let error as SproutError where error.code == .unavailable {
                try? await catalog.forget(provisional)
                refused.insert(placement.node)
                logger.warning("node refused a create; placing elsewhere", metadata: ["node": "\(placement.node)", "error": "\(error)"])
                continue
            } catch {
                try? await catalog.forget(provisional)
                throw error
            }
            if answer.response.status.code / 100 == 2, let created = try? JSONDecoder().decode(API.Sandbox.self, from: Data(answer.body.readableBytesView)) {
                try await catalog.rename(placement: provisional, to: created.id)
            } else {
                try? await catalog.forget(provisional)
            }
            return Self.response(answer.response, body: ResponseBody(byteBuffer: answer.body))
        }
    }

    /// Resumes on the node that paused the sandbox; if that node is lost or
    /// cannot be reached, on another: placed anew (the pause is in the object
    /// store), taken in there (`adopt`), then resumed.
    private func resume(_ request: Request, context: SproutContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let identity = try context.caller()
        let body = try await request.body.collect(upTo: JSONBody.limit)
        guard let placement = try await catalog.placement(of: id) else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
        // `?node=ID` (admin): resume on that node, moving the sandbox there if it is elsewhere.
        let wanted: String? = request.uri.queryParameters.get("node").map { String($0) }
        if wanted != nil, !identity.admin { throw SproutError(.forbidden, "choosing the node of a resume needs an admin key") }
        let nodes = try await catalog.nodes()
        let state = nodes.first { $0.id == placement.node }?.state
        if (state == .ready || state == .draining) && (wanted == nil || wanted == placement.node) {
            do {
                let response = try await send(.post, path: "/v1/sandboxes/\(id)/resume", query: request.uri.query, headers: request.headers,
                                              body: .bytes(body), identity: identity, to: placement)
                return Self.response(response, body: ResponseBody(asyncSequence: response.body))
            } catch let error as SproutError where error.code == .unavailable {
                logger.warning("the node that paused a sandbox cannot be reached; resuming it elsewhere",
                               metadata: ["sandbox": "\(id)", "node": "\(placement.node)"])
            }
        }
        if let wanted, !nodes.contains(where: { $0.id == wanted && $0.state == .ready }) {
            throw SproutError(.notFound, "no ready node with id '\(wanted)'")
        }
        // Anywhere but where it was paused, or only where it was asked to go.
        var excluding: Set<String> = [placement.node]
        if let wanted { excluding = Set(nodes.map(\.id)).subtracting([wanted]) }
        let moved = try await catalog.place(ClusterCatalog.PlacementRequest(
            sandbox: id, cpu: placement.cpu, memoryMB: placement.memoryMB, excluding: excluding))
        let adopted = try await send(.post, path: "/v1/sandboxes/\(id)/adopt", query: nil, headers: request.headers, body: .bytes(ByteBuffer()),
                                     identity: identity, to: moved)
        let adoptBody = try await adopted.body.collect(upTo: 1 << 20)
        guard adopted.status.code / 100 == 2 else {
            // Not taken in: the reservation stays where the sandbox was paused.
            try? await catalog.restore(placement, of: id)
            return Self.response(adopted, body: ResponseBody(byteBuffer: adoptBody))
        }
        logger.notice("sandbox moved to another node", metadata: ["sandbox": "\(id)", "from": "\(placement.node)", "to": "\(moved.node)"])
        let response = try await send(.post, path: "/v1/sandboxes/\(id)/resume", query: nil, headers: request.headers,
                                      body: .bytes(body), identity: identity, to: moved)
        let answer = try await response.body.collect(upTo: 16 << 20)
        if response.status.code / 100 == 2, state == .ready || state == .draining {
            // The node it left is up: its paused copy there ends (the store keeps what the move needed).
            _ = try? await send(.delete, path: "/v1/sandboxes/\(id)", query: nil, headers: [:], body: nil, identity: identity, to: placement)
        }
        return Self.response(response, body: ResponseBody(byteBuffer: answer))
    }

    /// Every node's list for the caller, merged (a node that cannot be reached is left out, and logged).
    private func list(_ request: Request, context: SproutContext) async throws -> Response {
        let identity = try context.caller()
        let nodes = try await catalog.nodes().filter { $0.state != .lost }
        let lists = await withTaskGroup(of: [API.Sandbox].self) { group in
            for node in nodes {
                group.addTask {
                    let placement = ClusterCatalog.Placement(node: node.id, address: node.registration.address, epoch: node.epoch)
                    do {
                        let response = try await send(.get, path: "/v1/sandboxes", query: request.uri.query, headers: request.headers, body: nil,
                                                      identity: identity, to: placement)
                        let body = try await response.body.collect(upTo: 64 << 20)
                        guard response.status == .ok else { return [] }
                        return try JSONDecoder().decode([API.Sandbox].self, from: Data(body.readableBytesView))
                    } catch {
                        logger.warning("a node's sandboxes left out of a list", metadata: ["node": "\(node.id)", "error": "\(error)"])
                        return []
                    }
                }
            }
            var all: [API.Sandbox] = []
            for await list in group { all += list }
            return all
        }
        return try JSONBody.response(lists.sorted { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) })
    }

    private func forward(_ request: Request, context: SproutContext, to placement: ClusterCatalog.Placement) async throws -> Response {
        let length = request.headers[.contentLength].flatMap(Int.init)
        let body: HTTPClientRequest.Body = .stream(request.body, length: length.map { .known(Int64($0)) } ?? .unknown)
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: request.headers,
                                      body: body, identity: try context.caller(), to: placement)
        return Self.response(response, body: ResponseBody(asyncSequence: response.body))
    }

    /// Headers that belong to one hop, or that only this API server may set.
    static let dropped: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length",
        "x-api-key", "sprout-cluster-token", "sprout-key-id", "sprout-team", "sprout-admin",
    ]

    private func send(
        _ method: HTTPRequest.Method, path: String, query: String?, headers: HTTPFields, body: HTTPClientRequest.Body?, identity: Identity,
        to placement: ClusterCatalog.Placement
    ) async throws -> HTTPClientResponse {
        var outgoing = HTTPClientRequest(url: placement.address + path + (query.map { $0.isEmpty ? "" : "?" + $0 } ?? ""))
        outgoing.method = HTTPMethod(rawValue: method.rawValue)
        for field in headers where !Self.dropped.contains(field.name.canonicalName) {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        outgoing.headers.add(name: "Sprout-Cluster-Token", value: clusterToken)
        outgoing.headers.add(name: "Sprout-Key-Id", value: identity.keyID)
        outgoing.headers.add(name: "Sprout-Team", value: identity.team)
        outgoing.headers.add(name: "Sprout-Admin", value: identity.admin ? "true" : "false")
        if let body { outgoing.body = body }
        do {
            return try await http.execute(outgoing, timeout: .hours(24))
        } catch {
            throw SproutError(.unavailable, "node \(placement.node) at \(placement.address) cannot be reached: \(error)")
        }
    }

    static func response(_ upstream: HTTPClientResponse, body: ResponseBody) -> Response {
        var headers = HTTPFields()
        for (name, value) in upstream.headers where !dropped.contains(name.lowercased()) {
            if let field = HTTPField.Name(name) { headers.append(HTTPField(name: field, value: value)) }
        }
        return Response(status: HTTPResponse.Status(code: Int(upstream.status.code)), headers: headers, body: body)
    }
}
