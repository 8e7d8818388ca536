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
/// WebSockets are relayed, E2B's control plane and envd forwarded too;
/// envs, builds, blobs and E2B's templates go to one node (`builder`), but
/// an env list merges every node's; volumes live on a node each
/// (`FleetRoutes+Volumes.swift`). Moves between nodes are in `FleetRoutes+Moves.swift`,
/// ports by host and envd in `FleetRoutes+Ports.swift`.
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
        let (e2bGroup, tokenedGroup) = registerE2B(on: router)
        let v1 = router.group("v1").add(middleware: AuthMiddleware(keys: keys))
        KeyRoutes(keys: keys).register(on: v1)
        NodeRoutes(catalog: catalog, mover: { node, caller in await drain(node, by: caller) }).register(on: v1)
        v1.post("sandboxes") { request, context in try await create(request, context: context) }
        v1.get("sandboxes") { request, context in try await list(request, context: context) }
        v1.post("sandboxes/:id/resume") { request, context in try await resume(request, context: context) }
        forwardSandboxRoutes(on: v1, paths: ["sandboxes/:id", "sandboxes/:id/**"]) { "no sandbox with id '\($0)'" }
        // Envs are recorded where they are made (a build on the builder, a snapshot on its sandbox's node): listed from every node.
        v1.get("envs") { request, context in try await list(request, context: context, path: "/v1/envs", unique: true) }
        forwardToBuilder(on: v1, paths: ["envs", "envs/**", "builds", "builds/**", "blobs", "blobs/**"], except: [(.get, "envs")])
        registerVolumes(v1: v1, e2b: e2bGroup, tokened: tokenedGroup)
        v1.post("store/collect") { request, context in try await collectStore(request, context: context) }
    }

    /// The store's collection, asked of an API server: every ready node
    /// collects in turn (each judges the pauses it wrote), one report summed
    /// (`roots` the most any node saw, `kept` what the last left). Nodes
    /// without a store are skipped.
    private func collectStore(_ request: Request, context: SproutContext) async throws -> Response {
        let caller = try context.caller()
        guard caller.admin else { throw SproutError(.forbidden, "collecting the object store needs an admin key") }
        let body = try await request.body.collect(upTo: JSONBody.limit)
        var total: API.StoreCollection?
        for node in try await catalog.nodes() where node.state == .ready {
            let placement = node.placement
            let response = try await send(.post, path: "/v1/store/collect", query: nil, headers: request.headers, body: .bytes(body),
                                          identity: caller, to: placement)
            let answer = try await response.body.collect(upTo: 1 << 20)
            if response.status == .notFound { continue }
            guard response.status == .ok else { return Self.response(response, body: ResponseBody(byteBuffer: answer)) }
            let report = try JSONDecoder().decode(API.StoreCollection.self, from: Data(answer.readableBytesView))
            guard var sum = total else {
                total = report
                continue
            }
            sum.roots = max(sum.roots, report.roots)
            sum.kept = report.kept
            sum.deleted.merge(report.deleted, uniquingKeysWith: +)
            sum.deletedBytes += report.deletedBytes
            sum.stoppedEarly = sum.stoppedEarly || report.stoppedEarly
            total = sum
        }
        guard let total else { throw SproutError(.notFound, "no node of the fleet has an object store (start nodes with --store s3://…)") }
        return try JSONBody.response(total)
    }

    /// Envs, builds, blobs and E2B's templates go to one node, the fleet's
    /// first ready one by id, so that a push's uploads, its build and the
    /// build's status meet on one node. The env it records goes to the
    /// object store, where every node finds it by name or id.
    private func forwardToBuilder(on group: RouterGroup<SproutContext>, paths: [String], except: [(HTTPRequest.Method, String)] = []) {
        for method in [HTTPRequest.Method.get, .post, .put, .patch, .delete] {
            for path in paths where !except.contains(where: { $0 == (method, path) }) {
                group.on(RouterPath(path), method: method) { request, context in
                    if method == .delete, Self.deletesEnv(request.uri.path) { return try await deleteEnv(request, context: context) }
                    return try await forward(request, context: context, to: try await builder())
                }
            }
        }
    }

    /// Whether `path` is an env's delete: `/v1/envs/{id}`, or E2B's
    /// `/templates/{id}` (not `/templates/tags`). (Routes of their own would
    /// clash with the builder's `…/**` in the router.)
    static func deletesEnv(_ path: String) -> Bool {
        let parts = path.split(separator: "/")
        return (parts.count == 3 && parts[0] == "v1" && parts[1] == "envs") || (parts.count == 2 && parts[0] == "templates" && parts[1] != "tags")
    }

    /// An env's delete (`/v1/envs/{id}`, E2B's `/templates/{id}`): one node
    /// decides it, the builder or else the first that has the env (without
    /// a store, an env is only on the node that made it); with a store it
    /// finds forks made on any node there and marks every env it deletes
    /// deleted there. Then each other node forgets those envs (`DELETE
    /// /v1/envs/{id}` by id, with the same `force`; a node that does not
    /// have them answers 404). A node that misses this forgets them at its
    /// next collection of the store. The deciding node's answer is the
    /// caller's, or the builder's when no node has the env.
    private func deleteEnv(_ request: Request, context: SproutContext) async throws -> Response {
        let caller = try context.caller()
        let builder = try await builder()
        let others = try await catalog.nodes().filter { $0.state != .lost && $0.id != builder.node }.map(\.placement)
        var decided: (node: String, response: HTTPClientResponse, answer: ByteBuffer)?
        for node in [builder] + others {
            let response = try await send(.delete, path: request.uri.path, query: request.uri.query, headers: request.headers, body: nil,
                                          identity: caller, to: node)
            let answer = try await response.body.collect(upTo: JSONBody.limit)
            if decided == nil || response.status.code != 404 { decided = (node.node, response, answer) }
            if response.status.code != 404 { break }
        }
        guard let (decider, response, answer) = decided else { throw SproutError(.unavailable, "no node of the fleet is ready") }
        let deleted = response.headers.first(name: HTTPField.Name.sproutDeletedEnvs.rawName)?.split(separator: ",").map(String.init) ?? []
        if response.status.code / 100 == 2, let first = deleted.first {
            let force = request.uri.queryParameters.get("force") == "true"
            for node in [builder] + others where node.node != decider {
                do {
                    let forgot = try await send(.delete, path: "/v1/envs/\(first)", query: force ? "force=true" : nil, headers: [:], body: nil,
                                                identity: caller, to: node)
                    let status = forgot.status.code
                    _ = try await forgot.body.collect(upTo: 1 << 20)
                    if status / 100 != 2 && status != 404 { throw SproutError(.unavailable, "it answered \(status)") }
                } catch {
                    logger.warning("a node did not forget deleted envs (with a store, it will at its next collection)", metadata: [
                        "node": "\(node.node)", "envs": "\(deleted)", "error": "\(error)",
                    ])
                }
            }
        }
        return Self.response(response, body: ResponseBody(byteBuffer: answer))
    }

    /// What placement reads of E2B's create: its template, and the volumes it mounts.
    struct E2BCreate: Decodable {
        var templateID: String?
        var volumeMounts: [JSONValue]?
    }

    /// The node that builds: the first ready node by id.
    func builder() async throws -> ClusterCatalog.Placement {
        try Self.builder(among: try await catalog.nodes())
    }

    static func builder(among nodes: [ClusterCatalog.NodeStatus]) throws -> ClusterCatalog.Placement {
        guard let node = nodes.first(where: { $0.state == .ready && $0.leaseSeconds > 0 }) else {
            throw SproutError(.unavailable, "no node of the fleet is ready to build")
        }
        return node.placement
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
        [(AuthMiddleware.clusterTokenHeader.rawName, clusterToken), (AuthMiddleware.fleetKeyHeader.rawName, identity.keyID),
         (AuthMiddleware.fleetTeamHeader.rawName, identity.team), (AuthMiddleware.fleetAdminHeader.rawName, identity.admin ? "true" : "false")]
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
    /// Returns the E2B group (key checked) and the one whose requests carry tokens of their own.
    private func registerE2B(on router: Router<SproutContext>) -> (RouterGroup<SproutContext>, RouterGroup<SproutContext>) {
        let group = router.group().add(middleware: E2BErrorMiddleware()).add(middleware: AuthMiddleware(keys: keys))
        for path in ["sandboxes", "v2/sandboxes"] {
            group.post(RouterPath(path)) { request, context in try await create(request, context: context, path: "/" + path) }
            group.get(RouterPath(path)) { request, context in try await list(request, context: context, path: "/" + path) }
        }
        forwardSandboxRoutes(on: group, paths: ["sandboxes/:id", "sandboxes/:id/**", "v2/sandboxes/:id/**"]) { "sandbox \($0) not found" }
        forwardToBuilder(on: group, paths: ["templates", "templates/**", "v2/templates/**", "v3/templates", "v3/templates/**"])
        // The upload link of a template's file carries its own token: no key.
        let tokened = router.group().add(middleware: E2BErrorMiddleware())
        tokened.put("templates/files/upload/:token") { request, _ in try await relay(request, to: try await builder()) }
        return (group, tokened)
    }

    /// A request for a sandbox's envd, sent to its node unchanged (the node checks the sandbox's access token).
    func forwardEnvd(_ request: Request, sandbox id: String) async throws -> Response {
        guard let placement = try await catalog.placement(of: id) else {
            return Response(status: .notFound, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(string: #"{"code":404,"message":"sandbox \#(id) not found"}"#)))
        }
        var headers = request.headers
        headers[EnvdMiddleware.sandboxHeader] = id
        return try await relay(request, headers: headers, to: placement)
    }

    /// A request that carries its own token (a sandbox's, a volume's, an
    /// upload link's), streamed to `placement` as it came (with `headers`,
    /// if given) for the node to check.
    func relay(_ request: Request, headers: HTTPFields? = nil, to placement: ClusterCatalog.Placement) async throws -> Response {
        let response = try await send(request.method, path: request.uri.path, query: request.uri.query, headers: headers ?? request.headers,
                                      body: Self.streamed(request), identity: nil, to: placement)
        return Self.response(response, body: ResponseBody(asyncSequence: response.body))
    }

    /// A signed file URL (`download_url()`/`upload_url()`): its sandbox is
    /// the placed one whose access token makes the signature match (a
    /// fleet's tokens come from the cluster token, so this server can tell);
    /// the request goes to its node as it came, which checks it again.
    func forwardSigned(_ request: Request, signature: String) async throws -> Response {
        let tokens = EnvdTokens.fleet(clusterToken: clusterToken)
        guard let id = try await catalog.placedSandboxes().first(where: { EnvdMiddleware.signature(of: request, token: tokens.token(for: $0)) == signature }),
              let placement = try await catalog.placement(of: id)
        else { return EnvdMiddleware.invalidSignature(request) }
        return try await relay(request, to: placement)
    }

    /// Places the sandbox on a node and creates it there; a node that cannot
    /// be reached is skipped for another.
    private func create(_ request: Request, context: SproutContext, path: String = "/v1/sandboxes") async throws -> Response {
        let body = try await request.body.collect(upTo: JSONBody.limit)
        // Sprout's create names CPU and memory; E2B's takes its template's (reserved here at the defaults).
        let asked = path == "/v1/sandboxes" ? try JSONDecoder().decode(API.CreateSandbox.self, from: Data(body.readableBytesView)) : API.CreateSandbox(env: "")
        let e2b = path == "/v1/sandboxes" ? nil : try? JSONDecoder().decode(E2BCreate.self, from: Data(body.readableBytesView))
        // Nodes that started this env before hold its layers: favoured (every node has the built-in ones).
        let named = e2b.map { $0.templateID ?? "" } ?? asked.env
        let env = EnvGraph.builtins.contains(named) ? "" : named
        let holding = (try? await catalog.nodes(holding: env)) ?? []
        var refused: Set<String> = []
        // One that mounts volumes goes where they are.
        let team = try context.caller().team
        let mounted = (asked.volumes ?? []).map(\.volume) + (e2b?.volumeMounts ?? []).map { $0["name"]?.text ?? "" }
        if let home = try await volumesNode(mounted, team: team) {
            refused = Set(try await catalog.nodes().map(\.id)).subtracting([home])
        }
        while true {
            let provisional = "pending-" + Identifiers.random(length: 16)
            let placement = try await catalog.place(ClusterCatalog.PlacementRequest(
                sandbox: provisional, team: try context.caller().team, cpu: asked.cpu ?? 1, memoryMB: Int64(asked.memoryMB ?? 512), holding: holding,
                excluding: refused))
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
            // A node without the volumes the env mounts by default (`volumes=NAME,…`): again, where they live.
            if let value = answer.response.headers.first(name: APIError.placeElsewhereHeader.rawName), value.hasPrefix("volumes="),
               let home = try await volumesNode(value.dropFirst("volumes=".count).split(separator: ",").map(String.init), team: team),
               home != placement.node {
                try? await catalog.forget(provisional)
                refused = Set(try await catalog.nodes().map(\.id)).subtracting([home])
                continue
            }
            // The id in the answer: Sprout's `id`, E2B's `sandboxID`.
            if answer.response.status.code / 100 == 2, let created = try? JSONDecoder().decode(JSONValue.self, from: Data(answer.body.readableBytesView)).id,
               !created.isEmpty {
                try await catalog.rename(placement: provisional, to: created)
                if !holding.contains(placement.node) { try? await catalog.noteHolding(env, on: placement.node) }
            } else {
                try? await catalog.forget(provisional)
            }
            return Self.response(answer.response, body: ResponseBody(byteBuffer: answer.body))
        }
    }

    /// Every node's list for the caller, merged (a node that cannot be
    /// reached is left out, and logged); with `unique`, an entry several
    /// nodes have (an env by id) once, as the builder has it.
    func list(_ request: Request, context: SproutContext, path: String = "/v1/sandboxes", unique: Bool = false) async throws -> Response {
        let identity = try context.caller()
        let nodes = try await catalog.nodes().filter { $0.state != .lost }
        let builder = try? Self.builder(among: nodes).node
        let lists = await withTaskGroup(of: (node: String, entries: [JSONValue]).self) { group in
            for node in nodes {
                group.addTask {
                    let placement = node.placement
                    do {
                        let response = try await send(.get, path: path, query: request.uri.query, headers: request.headers, body: nil,
                                                      identity: identity, to: placement)
                        let body = try await response.body.collect(upTo: 64 << 20)
                        guard response.status == .ok else { return (node.id, []) }
                        return (node.id, try JSONDecoder().decode([JSONValue].self, from: Data(body.readableBytesView)))
                    } catch {
                        logger.warning("a node's list left out of a merged one", metadata: ["node": "\(node.id)", "path": "\(path)", "error": "\(error)"])
                        return (node.id, [])
                    }
                }
            }
            var all: [(node: String, entries: [JSONValue])] = []
            for await list in group { all.append(list) }
            return all
        }
        var merged: [JSONValue] = []
        var seen: Set<String> = []
        // The builder's first: its entry is the one kept of an env several nodes have.
        for list in lists.sorted(by: { ($0.node == builder ? 0 : 1, $0.node) < ($1.node == builder ? 0 : 1, $1.node) }) {
            for entry in list.entries where !unique || seen.insert(entry.id).inserted { merged.append(entry) }
        }
        // Sprout's entries by `createdAt`, E2B's by `startedAt`; then by id.
        return try JSONBody.response(merged.sorted { ($0.sortKey, $0.id) < ($1.sortKey, $1.id) })
    }

    func forward(_ request: Request, context: SproutContext, to placement: ClusterCatalog.Placement) async throws -> Response {
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
    func send(
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
            if identity == nil { outgoing.headers.add(name: AuthMiddleware.clusterTokenHeader.rawName, value: clusterToken) }
        }
        if let identity {
            if let host = headers[Self.forwardedHost] {
                outgoing.headers.add(name: Self.forwardedHost.rawName, value: host)
                outgoing.headers.add(name: Self.forwardedScheme.rawName, value: scheme)
            }
            for (name, value) in fleetHeaders(identity) { outgoing.headers.add(name: name, value: value) }
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
