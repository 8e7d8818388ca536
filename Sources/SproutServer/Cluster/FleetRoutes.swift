import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
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
/// team with the cluster token. What it forwards is streamed both ways;
/// WebSockets are relayed, E2B's control plane and envd forwarded too.
/// Not yet routed: envs and builds, volumes, E2B's templates and volumes.
struct FleetRoutes: Sendable {
    let catalog: ClusterCatalog
    let keys: FleetKeys
    let clusterToken: String
    let nodes: NodeClients
    /// How callers reach this API server (`http` or `https`).
    var scheme = "http"
    /// Sandboxes' ports are reached at `{port}-{id}.{domain}` through this API server (`--domain`; `localhost` by default).
    var domain = "localhost"
    let logger: Logger

    func register(on router: Router<SproutContext>) {
        // E2B's envd (by `E2b-Sandbox-Id`, or `49983-{id}.…` by host): to the sandbox's node as it came, before any route.
        router.middlewares.add(FleetEnvdMiddleware(routes: self))
        router.get("health") { _, _ in
            try JSONBody.response(["status": "ok", "role": "api"])
        }
        registerE2B(on: router)
        let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: keys))
        KeyRoutes(keys: keys).register(on: v1)
        NodeRoutes(catalog: catalog, mover: { node, caller in await drain(node, by: caller) }).register(on: v1)
        v1.post("sandboxes") { request, context in try await create(request, context: context) }
        v1.get("sandboxes") { request, context in try await list(request, context: context) }
        v1.post("sandboxes/:id/resume") { request, context in try await resume(request, context: context) }
        forwardSandboxRoutes(on: v1, paths: ["sandboxes/:id", "sandboxes/:id/**"]) { "no sandbox with id '\($0)'" }
        forwardToBuilder(on: v1, paths: ["envs", "envs/**", "builds", "builds/**", "blobs", "blobs/**"])
    }

    /// Envs, builds, blobs and E2B's templates go to one node, the fleet's
    /// first ready one by id, so that a push's uploads, its build and the
    /// build's status meet on one node. The env it records goes to the
    /// object store, where every node finds it by name or id.
    private func forwardToBuilder(on group: RouterGroup<SproutContext>, paths: [String]) {
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            for path in paths {
                group.on(RouterPath(path), method: method) { request, context in
                    try await forward(request, context: context, to: try await builder())
                }
            }
        }
    }

    /// The node that builds: the first ready node by id.
    private func builder() async throws -> ClusterCatalog.Placement {
        guard let node = try await catalog.nodes().first(where: { $0.state == .ready && $0.leaseSeconds > 0 }) else {
            throw SproutError(.unavailable, "no node of the fleet is ready to build")
        }
        return ClusterCatalog.Placement(node: node.id, address: node.registration.address, epoch: node.epoch, certificate: node.registration.certificate)
    }

    /// Every method on `paths` (the first is the sandbox itself, whose DELETE
    /// kills it) goes to the node that holds the sandbox; `notFound` words
    /// the answer for one the fleet does not know.
    private func forwardSandboxRoutes(on group: RouterGroup<SproutContext>, paths: [String], notFound: @escaping @Sendable (String) -> String) {
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            for path in paths {
                group.on(RouterPath(path), method: method) { request, context in
                    let id = try context.parameters.require("id")
                    guard let placement = try await locate(id, for: try context.caller()) else { throw SproutError(.notFound, notFound(id)) }
                    let response = try await forward(request, context: context, to: placement)
                    // A kill the node answered: the reservation goes with the sandbox.
                    if method == .delete, path == paths[0], response.status.code / 100 == 2 { try? await catalog.forget(id) }
                    return response
                }
            }
        }
    }

    /// WebSockets for a sandbox (exec streams, terminals, port previews):
    /// upgraded here, connected to the sandbox's node as the caller's team,
    /// and relayed frame by frame until either side closes or the key is revoked.
    func registerWebSocket(on router: Router<SproutContext>) {
        router.middlewares.add(FleetHostWebSocketMiddleware(routes: self))
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
                guard let placement = try await locate(id, for: identity) else {
                    throw SproutError(.notFound, "no sandbox with id '\(id)'")
                }
                let upstream = try await connectWebSocket(wsContext.request, to: placement, headers: fleetHeaders(identity) + [("Sec-WebSocket-Protocol", "sprout")])
                try await Relay.run(upstream: upstream, inbound: inbound, outbound: outbound) { [keys] in await keys.untilRevoked(identity.keyID) }
            }
        }
    }

    /// The headers that make a request to a node act for `identity`'s team.
    func fleetHeaders(_ identity: Identity) -> [(String, String)] {
        [("Sprout-Cluster-Token", clusterToken), ("Sprout-Key-Id", identity.keyID), ("Sprout-Team", identity.team),
         ("Sprout-Admin", identity.admin ? "true" : "false")]
    }

    /// A WebSocket to the node of `placement` for `request`'s path (over TLS to an `https` node).
    func connectWebSocket(_ request: Request, to placement: ClusterCatalog.Placement, headers: [(String, String)]) async throws -> SandboxWebSocket.Channel {
        guard let url = URL(string: placement.address), let host = url.host else { throw SproutError(.internal, "node \(placement.node) has no address") }
        let uri = request.uri
        return try await SandboxWebSocket.connect(
            host: host, port: UInt16(url.port ?? (url.scheme == "https" ? 443 : 80)), tls: try nodes.context(for: placement),
            target: (uri.path.isEmpty ? "/" : uri.path) + (uri.query.map { $0.isEmpty ? "" : "?" + $0 } ?? ""), headers: headers)
    }

    /// E2B's control plane: create placed, lists merged, a sandbox's routes forwarded.
    private func registerE2B(on router: Router<SproutContext>) {
        let group = router.group().add(middleware: E2BErrorMiddleware()).add(middleware: AuthMiddleware(keys: keys))
        for path in ["sandboxes", "v2/sandboxes"] {
            group.post(RouterPath(path)) { request, context in try await create(request, context: context, path: "/" + path) }
            group.get(RouterPath(path)) { request, context in try await list(request, context: context, path: "/" + path) }
        }
        forwardSandboxRoutes(on: group, paths: ["sandboxes/:id", "sandboxes/:id/**", "v2/sandboxes/:id/**"]) { "sandbox \($0) not found" }
        forwardToBuilder(on: group, paths: ["templates", "templates/**", "v2/templates/**", "v3/templates", "v3/templates/**"])
        // The upload link of a template's file carries its own token: no key.
        let upload = router.group().add(middleware: E2BErrorMiddleware())
        upload.put("templates/files/upload/:token") { request, context in
            let response = try await send(.put, path: request.uri.path, query: request.uri.query, headers: request.headers,
                                          body: Self.streamed(request), identity: nil, to: try await builder())
            return Self.response(response, body: ResponseBody(asyncSequence: response.body))
        }
    }

    /// Where a sandbox is. One placed on a node the fleet lost is taken in by
    /// another node first, if it was paused there (its pause is in the
    /// store): it stays paused, and the request then reaches it there (and
    /// wakes it, if it was paused to wake). One that was running there ended
    /// with its node: its placement goes, and the answer is that it is gone.
    private func locate(_ id: String, for identity: Identity) async throws -> ClusterCatalog.Placement? {
        guard let placement = try await catalog.placement(of: id) else { return nil }
        guard placement.nodeState == .lost else { return placement }
        let moved = try await relocate(id, from: placement, nodes: try await catalog.nodes(), to: nil, identity: identity, headers: [:], resume: nil)
        guard moved.response.status.code / 100 == 2 else { throw try await lostWith(id, placement, moved) }
        return try await catalog.placement(of: id)
    }

    /// The error for a sandbox that could not be moved off a lost node: gone
    /// with it (no pause in the store: it was running) or the target's error.
    private func lostWith(
        _ id: String, _ placement: ClusterCatalog.Placement, _ answer: (response: HTTPClientResponse, body: ByteBuffer, node: String)
    ) async throws -> SproutError {
        let error = Self.nodeError(answer.body, status: answer.response.status.code, node: answer.node)
        guard error.code == .notFound, placement.nodeState == .lost else { return error }
        try await catalog.forget(id)
        logger.notice("a sandbox that ran on a lost node is gone", metadata: ["sandbox": "\(id)", "node": "\(placement.node)", "error": "\(error.message)"])
        return SproutError(.notFound, "sandbox \(id) was running on node \(placement.node), which the fleet lost: it ended with its node (node lost)")
    }

    /// A request for a sandbox's envd, sent to its node unchanged (the node checks the sandbox's access token).
    func forwardEnvd(_ request: Request, sandbox id: String) async throws -> Response {
        guard let placement = try await catalog.placement(of: id) else {
            return Response(status: .notFound, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"code":404,"message":"sandbox \#(id) not found"}"#)))
        }
        var headers = request.headers
        headers[EnvdMiddleware.sandboxHeader] = id
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: headers,
                                      body: Self.streamed(request), identity: nil, to: placement)
        return Self.response(response, body: ResponseBody(asyncSequence: response.body))
    }

    /// A request for `{port}-{id}.{domain}`: to the sandbox's node as it
    /// came, the port and sandbox named in headers the node trusts only with
    /// the cluster token. An API key is checked here (the node takes the team
    /// it names); a sandbox's access token goes on for the node to check.
    func forwardPreview(_ request: Request, port: UInt16, sandbox id: String) async throws -> Response {
        let (placement, identity) = try await previewTarget(request, sandbox: id)
        var headers = request.headers
        headers[HostRouting.previewPort] = "\(port)"
        headers[HostRouting.previewSandbox] = id
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: headers,
                                      body: Self.streamed(request), identity: identity, vouching: true, to: placement)
        return Self.response(response, body: ResponseBody(asyncSequence: response.body))
    }

    /// Where a request for a sandbox's port by host goes, and for whom: the
    /// caller's key, checked here, or none (the node checks an access token).
    func previewTarget(_ request: Request, sandbox id: String) async throws -> (ClusterCatalog.Placement, Identity?) {
        var identity: Identity?
        if let secret = request.headers[AuthMiddleware.header] {
            guard let known = try await keys.authenticate(secret) else { throw SproutError(.unauthorized, "invalid or revoked API key") }
            identity = known
        }
        let found = if let identity { try await locate(id, for: identity) } else { try await catalog.placement(of: id) }
        guard let placement = found else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
        return (placement, identity)
    }

    /// Places the sandbox on a node and creates it there; a node that cannot
    /// be reached is skipped for another.
    private func create(_ request: Request, context: SproutContext, path: String = "/v1/sandboxes") async throws -> Response {
        let body = try await request.body.collect(upTo: JSONBody.limit)
        // Sprout's create names CPU and memory; E2B's takes its template's (reserved here at the defaults).
        let asked = path == "/v1/sandboxes" ? try JSONDecoder().decode(API.CreateSandbox.self, from: Data(body.readableBytesView)) : API.CreateSandbox(env: "")
        var refused: Set<String> = []
        while true {
            let provisional = "pending-" + Identifiers.random(length: 16)
            let placement = try await catalog.place(ClusterCatalog.PlacementRequest(
                sandbox: provisional, team: try context.caller().team, cpu: asked.cpu ?? 1, memoryMB: Int64(asked.memoryMB ?? 512), excluding: refused))
            let answer: (response: HTTPClientResponse, body: ByteBuffer)
            do {
                let response = try await send(request.method, path: path, query: request.uri.query, headers: request.headers,
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
            // The id in the answer: Sprout's `id`, E2B's `sandboxID`.
            if answer.response.status.code / 100 == 2, let created = try? JSONDecoder().decode(JSONValue.self, from: Data(answer.body.readableBytesView)).id,
               !created.isEmpty {
                try await catalog.rename(placement: provisional, to: created)
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
        let moved = try await relocate(id, from: placement, nodes: nodes, to: wanted, identity: identity, headers: request.headers, resume: body)
        if moved.response.status.code / 100 != 2, moved.node == placement.node { throw try await lostWith(id, placement, moved) }
        return Self.response(moved.response, body: ResponseBody(byteBuffer: moved.body))
    }

    /// Moves a paused sandbox off the node that holds it: placed anew (only
    /// `wanted` if named; never where it is, and only on a node with its CPU
    /// features and runtime, which its memory image needs), taken in there
    /// from the store's handoff (`adopt`), resumed there when `resume` is
    /// given (the resume's body), and its paused copy on the node it left
    /// ended if that node is up. The answer is the target's (adopt's, when
    /// not resumed or not taken in: then the reservation stays where it was).
    private func relocate(
        _ id: String, from placement: ClusterCatalog.Placement, nodes: [ClusterCatalog.NodeStatus], to wanted: String?, identity: Identity,
        headers: HTTPFields, resume: ByteBuffer?
    ) async throws -> (response: HTTPClientResponse, body: ByteBuffer, node: String) {
        let source = nodes.first { $0.id == placement.node }
        let excluding = wanted.map { Set(nodes.map(\.id)).subtracting([$0]) } ?? [placement.node]
        let moved = try await catalog.place(ClusterCatalog.PlacementRequest(
            sandbox: id, cpu: placement.cpu, memoryMB: placement.memoryMB, cpuFlags: source?.registration.cpuFlags ?? [],
            runtime: source?.registration.runtime, excluding: excluding))
        let adopted = try await send(.post, path: "/v1/sandboxes/\(id)/adopt", query: nil, headers: headers, body: .bytes(ByteBuffer()),
                                     identity: identity, to: moved)
        let adoptBody = try await adopted.body.collect(upTo: 1 << 20)
        guard adopted.status.code / 100 == 2 else {
            // Not taken in: the reservation stays where the sandbox was paused.
            try? await catalog.restore(placement, of: id)
            return (adopted, adoptBody, placement.node)
        }
        logger.notice("sandbox moved to another node", metadata: ["sandbox": "\(id)", "from": "\(placement.node)", "to": "\(moved.node)"])
        var answer = (response: adopted, body: adoptBody, node: moved.node)
        if let resume {
            let response = try await send(.post, path: "/v1/sandboxes/\(id)/resume", query: nil, headers: headers,
                                          body: .bytes(resume), identity: identity, to: moved)
            answer = (response, try await response.body.collect(upTo: 16 << 20), moved.node)
        }
        if answer.response.status.code / 100 == 2, source?.state == .ready || source?.state == .draining {
            // The node it left is up: its paused copy there ends (the store keeps what the move needed).
            _ = try? await send(.delete, path: "/v1/sandboxes/\(id)", query: nil, headers: [:], body: nil, identity: identity, to: placement)
        }
        return answer
    }

    /// Moves every sandbox placed on a draining node to others, one at a
    /// time: a running one is paused (its image and layer go to the store)
    /// and resumed elsewhere with its processes; a paused one moves paused.
    /// One that cannot move stays where it is, with the reason.
    func drain(_ node: String, by caller: Identity) async -> (moved: [API.NodeDrain.Move], failed: [API.NodeDrain.Failure]) {
        var moved: [API.NodeDrain.Move] = [], failed: [API.NodeDrain.Failure] = []
        let placed: [(sandbox: String, team: String)]
        do {
            placed = try await catalog.teams(on: node)
        } catch {
            return ([], [API.NodeDrain.Failure(id: "", error: "the catalog cannot list the node's sandboxes: \(error)")])
        }
        // A `pending-` reservation is a create still under way: it lands here; drain again once it has.
        for (id, team) in placed where !id.hasPrefix("pending-") {
            do {
                guard !team.isEmpty else {
                    throw SproutError(.conflict, "placed before the catalog kept teams; move it with POST /v1/sandboxes/\(id)/resume?node=ID")
                }
                let identity = Identity(keyID: caller.keyID, team: team, admin: caller.admin)
                let move = try await drainOne(id, team: identity)
                logger.notice("drain moved a sandbox", metadata: ["sandbox": "\(id)", "from": "\(node)", "to": "\(move.node)"])
                moved.append(move)
            } catch {
                let message = (error as? SproutError)?.message ?? "\(error)"
                logger.warning("drain could not move a sandbox", metadata: ["sandbox": "\(id)", "node": "\(node)", "error": "\(message)"])
                failed.append(API.NodeDrain.Failure(id: id, error: message))
            }
        }
        return (moved, failed)
    }

    private func drainOne(_ id: String, team identity: Identity) async throws -> API.NodeDrain.Move {
        guard let placement = try await catalog.placement(of: id) else { throw SproutError(.notFound, "no longer placed") }
        let json: HTTPFields = [.contentType: "application/json"]
        let sandbox: API.Sandbox = try await call(.get, "/v1/sandboxes/\(id)", identity: identity, to: placement)
        switch sandbox.state {
        case .running:
            let _: API.Sandbox = try await call(.post, "/v1/sandboxes/\(id)/pause", body: ByteBuffer(string: "{}"), identity: identity, to: placement)
        case .paused:
            break
        default:
            throw SproutError(.conflict, "it is \(sandbox.state.rawValue); only a running or paused sandbox moves")
        }
        let nodes = try await catalog.nodes()
        let answer = try await relocate(id, from: placement, nodes: nodes, to: nil, identity: identity, headers: json,
                                        resume: sandbox.state == .running ? ByteBuffer(string: "{}") : nil)
        let after = try? JSONDecoder().decode(API.Sandbox.self, from: Data(answer.body.readableBytesView))
        guard answer.response.status.code / 100 == 2, let after else {
            // A running sandbox that was not taken in elsewhere runs on where it was.
            if sandbox.state == .running, answer.node == placement.node {
                let _: API.Sandbox? = try? await call(.post, "/v1/sandboxes/\(id)/resume", body: ByteBuffer(string: "{}"), identity: identity, to: placement)
            }
            throw Self.nodeError(answer.body, status: answer.response.status.code, node: answer.node)
        }
        return API.NodeDrain.Move(id: id, node: answer.node, state: after.state)
    }

    /// A JSON call to a node as `identity`; a non-2xx answer thrown as the node's error.
    private func call<T: Decodable>(
        _ method: HTTPRequest.Method, _ path: String, body: ByteBuffer? = nil, identity: Identity, to placement: ClusterCatalog.Placement
    ) async throws -> T {
        let response = try await send(method, path: path, query: nil, headers: [.contentType: "application/json"], body: body.map { .bytes($0) },
                                      identity: identity, to: placement)
        let bytes = try await response.body.collect(upTo: 16 << 20)
        guard response.status.code / 100 == 2 else { throw Self.nodeError(bytes, status: response.status.code, node: placement.node) }
        return try JSONDecoder().decode(T.self, from: Data(bytes.readableBytesView))
    }

    /// A node's error answer as the error it carries.
    static func nodeError(_ body: ByteBuffer, status: UInt, node: String) -> SproutError {
        guard let envelope = try? JSONDecoder().decode(API.ErrorEnvelope.self, from: Data(body.readableBytesView)) else {
            return SproutError(.unavailable, "node \(node) answered \(status)")
        }
        return SproutError(SproutError.Code(rawValue: envelope.error.code), envelope.error.message)
    }

    /// Every node's list for the caller, merged (a node that cannot be reached is left out, and logged).
    private func list(_ request: Request, context: SproutContext, path: String = "/v1/sandboxes") async throws -> Response {
        let identity = try context.caller()
        let nodes = try await catalog.nodes().filter { $0.state != .lost }
        let lists = await withTaskGroup(of: [JSONValue].self) { group in
            for node in nodes {
                group.addTask {
                    let placement = ClusterCatalog.Placement(node: node.id, address: node.registration.address, epoch: node.epoch,
                                                             certificate: node.registration.certificate)
                    do {
                        let response = try await send(.get, path: path, query: request.uri.query, headers: request.headers, body: nil,
                                                      identity: identity, to: placement)
                        let body = try await response.body.collect(upTo: 64 << 20)
                        guard response.status == .ok else { return [] }
                        return try JSONDecoder().decode([JSONValue].self, from: Data(body.readableBytesView))
                    } catch {
                        logger.warning("a node's sandboxes left out of a list", metadata: ["node": "\(node.id)", "error": "\(error)"])
                        return []
                    }
                }
            }
            var all: [JSONValue] = []
            for await list in group { all += list }
            return all
        }
        // Sprout's entries by `createdAt`, E2B's by `startedAt`; then by id.
        return try JSONBody.response(lists.sorted { ($0.sortKey, $0.id) < ($1.sortKey, $1.id) })
    }

    private func forward(_ request: Request, context: SproutContext, to placement: ClusterCatalog.Placement) async throws -> Response {
        // Where the caller reached the fleet: links a node makes (E2B's upload links) point back here.
        var headers = request.headers
        if let authority = request.head.authority { headers[Self.forwardedHost] = authority }
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: headers,
                                      body: Self.streamed(request), identity: try context.caller(), to: placement)
        return Self.response(response, body: ResponseBody(asyncSequence: response.body))
    }

    /// The request's body, streamed on as it arrives.
    static func streamed(_ request: Request) -> HTTPClientRequest.Body {
        let length = request.headers[.contentLength].flatMap(Int.init)
        return .stream(request.body, length: length.map { .known(Int64($0)) } ?? .unknown)
    }

    static let forwardedHost = HTTPField.Name("Sprout-Forwarded-Host")!
    static let forwardedScheme = HTTPField.Name("Sprout-Forwarded-Proto")!

    /// Headers that belong to one hop, or that only this API server may set.
    static let dropped: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length",
        "x-api-key", "sprout-cluster-token", "sprout-key-id", "sprout-team", "sprout-admin", "sprout-forwarded-host", "sprout-forwarded-proto",
        "sprout-preview-port", "sprout-preview-sandbox",
    ]

    /// Sends a request to a node: as `identity`'s team with the cluster token,
    /// or (nil: envd, which checks the sandbox's own token) without them.
    /// `vouching`: the cluster token goes with it even without an identity,
    /// and the preview headers this API server set with it.
    private func send(
        _ method: HTTPRequest.Method, path: String, query: String?, headers: HTTPFields, body: HTTPClientRequest.Body?, identity: Identity?,
        vouching: Bool = false, to placement: ClusterCatalog.Placement
    ) async throws -> HTTPClientResponse {
        var outgoing = HTTPClientRequest(url: placement.address + path + (query.map { $0.isEmpty ? "" : "?" + $0 } ?? ""))
        outgoing.method = HTTPMethod(rawValue: method.rawValue)
        for field in headers where !Self.dropped.contains(field.name.canonicalName) {
            outgoing.headers.add(name: field.name.rawName, value: field.value)
        }
        if vouching {
            for name in [HostRouting.previewPort, HostRouting.previewSandbox] {
                if let value = headers[name] { outgoing.headers.add(name: name.rawName, value: value) }
            }
            if identity == nil { outgoing.headers.add(name: "Sprout-Cluster-Token", value: clusterToken) }
        }
        if let identity {
            if let host = headers[Self.forwardedHost] {
                outgoing.headers.add(name: Self.forwardedHost.rawName, value: host)
                outgoing.headers.add(name: Self.forwardedScheme.rawName, value: scheme)
            }
            outgoing.headers.add(name: "Sprout-Cluster-Token", value: clusterToken)
            outgoing.headers.add(name: "Sprout-Key-Id", value: identity.keyID)
            outgoing.headers.add(name: "Sprout-Team", value: identity.team)
            outgoing.headers.add(name: "Sprout-Admin", value: identity.admin ? "true" : "false")
        }
        if let body { outgoing.body = body }
        do {
            return try await nodes.client(for: placement).execute(outgoing, timeout: .hours(24))
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

/// Any JSON value, passed through as it came (a list entry from a node).
indirect enum JSONValue: Codable, Sendable {
    case object([String: JSONValue]), array([JSONValue]), string(String), number(Double), bool(Bool), null

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .object(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    subscript(_ key: String) -> JSONValue? { if case .object(let object) = self { object[key] } else { nil } }

    var text: String {
        switch self {
        case .string(let value): value
        case .number(let value): String(value)
        default: ""
        }
    }

    var id: String { (self["id"] ?? self["sandboxID"])?.text ?? "" }
    var sortKey: String { (self["createdAt"] ?? self["startedAt"])?.text ?? "" }
}

/// E2B's envd on an API server: a request naming a sandbox (`E2b-Sandbox-Id`,
/// or `49983-{id}.HOST`) goes to that sandbox's node as it came.
struct FleetEnvdMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let routes: FleetRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let id = request.headers[EnvdMiddleware.sandboxHeader] {
            return try await routes.forwardEnvd(request, sandbox: id)
        }
        if let authority = request.head.authority, let label = HostRouting.hostname(authority).split(separator: ".").first,
           label.hasPrefix(EnvdMiddleware.envdPort + "-") {
            let id = String(label.dropFirst(EnvdMiddleware.envdPort.count + 1))
            if !id.isEmpty, id.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { return try await routes.forwardEnvd(request, sandbox: id) }
        }
        // A sandbox's other ports, `{port}-{id}.{domain}`.
        if let authority = request.head.authority, let (port, id) = HostRouting.target(authority: authority, domain: routes.domain) {
            return try await routes.forwardPreview(request, port: port, sandbox: id)
        }
        return try await next(request, context)
    }
}

/// WebSocket upgrades for `{port}-{id}.{domain}` on an API server: relayed
/// to the sandbox's node as the HTTP ones are (`forwardPreview`), the key
/// checked here, an access token by the node.
struct FleetHostWebSocketMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let routes: FleetRoutes

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let authority = request.head.authority, let (port, id) = HostRouting.target(authority: authority, domain: routes.domain) else {
            return try await next(request, context)
        }
        let routes = self.routes
        let upgrade = WebSocketUpgradeMiddleware<Context>(shouldUpgrade: { request, _ in
            _ = try await routes.previewTarget(request, sandbox: id)
            return .upgrade([:])
        }, onUpgrade: { inbound, outbound, wsContext in
            let (placement, identity) = try await routes.previewTarget(wsContext.request, sandbox: id)
            var headers = identity.map(routes.fleetHeaders) ?? [("Sprout-Cluster-Token", routes.clusterToken)]
            headers += [(HostRouting.previewPort.rawName, "\(port)"), (HostRouting.previewSandbox.rawName, id)]
            for name in HostRouting.tokenHeaders {
                if let field = HTTPField.Name(name), let token = wsContext.request.headers[field] { headers.append((name, token)) }
            }
            let upstream = try await routes.connectWebSocket(wsContext.request, to: placement, headers: headers)
            try await Relay.run(upstream: upstream, inbound: inbound, outbound: outbound) {
                if let identity { await routes.keys.untilRevoked(identity.keyID) } else { try? await Task.sleep(for: .seconds(86_400 * 365)) }
            }
        })
        return try await upgrade.handle(request, context: context, next: next)
    }
}
