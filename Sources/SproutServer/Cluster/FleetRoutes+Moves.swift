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

/// Moving sandboxes between nodes: a resume whose node is lost or asked
/// elsewhere, a request for a sandbox on a lost node, a drain.
extension FleetRoutes {
    /// Where a sandbox is. One placed on a node the fleet lost is taken in by
    /// another node first, if it was paused there (its pause is in the
    /// store): it stays paused, and the request then reaches it there (and
    /// wakes it, if it was paused to wake). One that was running there ended
    /// with its node: its placement goes, and the answer is that it is gone.
    func locate(_ id: String, for identity: Identity) async throws -> ClusterCatalog.Placement? {
        guard let placement = try await catalog.placement(of: id) else { return nil }
        guard placement.nodeState == .lost else { return placement }
        let moved = try await relocate(id, from: placement, nodes: try await catalog.nodes(), to: nil, identity: identity, headers: [:], resume: nil)
        guard moved.response.status.code / 100 == 2 else { throw try await lostWith(id, placement, moved) }
        return try await catalog.placement(of: id)
    }

    /// The error for a sandbox that could not be moved off a lost node: gone
    /// with it (no pause in the store: it was running) or the target's error.
    func lostWith(
        _ id: String, _ placement: ClusterCatalog.Placement, _ answer: (response: HTTPClientResponse, body: ByteBuffer, node: String)
    ) async throws -> SproutError {
        let error = Self.nodeError(answer.body, status: answer.response.status.code, node: answer.node)
        guard error.code == .notFound, placement.nodeState == .lost else { return error }
        try await catalog.forget(id)
        logger.notice("a sandbox that ran on a lost node is gone", metadata: ["sandbox": "\(id)", "node": "\(placement.node)", "error": "\(error.message)"])
        return SproutError(.notFound, "sandbox \(id) was running on node \(placement.node), which the fleet lost: it ended with its node (node lost)")
    }

    /// Resumes on the node that paused the sandbox; if that node is lost or
    /// cannot be reached, on another: placed anew (the pause is in the object
    /// store), taken in there (`adopt`), then resumed.
    func resume(_ request: Request, context: SproutContext) async throws -> Response {
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
    func relocate(
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
    /// Then the node's volumes move (`drainVolumes`), with the sandboxes
    /// that mount them. One that cannot move stays where it is, with the reason.
    func drain(_ node: String, by caller: Identity) async -> NodeRoutes.DrainOutcome {
        var outcome = NodeRoutes.DrainOutcome()
        let placed: [(sandbox: String, team: String)]
        let volumes: [(home: ClusterCatalog.VolumeHome, team: String)]
        var mounting: [String: [String]] = [:]
        do {
            placed = try await catalog.teams(on: node)
            volumes = try await catalog.volumes(on: node)
            if !volumes.isEmpty, let source = try await catalog.nodes().first(where: { $0.id == node })?.placement {
                for (home, team) in volumes {
                    let volume: API.Volume = try await call(.get, "/v1/volumes/\(home.id)", identity: caller.acting(for: team),
                                                            to: source)
                    mounting[home.id] = volume.mountedBy
                }
            }
        } catch {
            return NodeRoutes.DrainOutcome(failed: [API.NodeDrain.Failure(id: "", error: "the node's sandboxes and volumes cannot be listed: \(error)")])
        }
        let withVolumes = Set(mounting.values.joined())
        // A `pending-` reservation is a create still under way: it lands here; drain again once it has.
        for (id, team) in placed where !id.hasPrefix("pending-") && !withVolumes.contains(id) {
            do {
                guard !team.isEmpty else {
                    throw SproutError(.conflict, "placed before the catalog kept teams; move it with POST /v1/sandboxes/\(id)/resume?node=ID")
                }
                let identity = caller.acting(for: team)
                let move = try await drainOne(id, team: identity)
                logger.notice("drain moved a sandbox", metadata: ["sandbox": "\(id)", "from": "\(node)", "to": "\(move.node)"])
                outcome.moved.append(move)
            } catch {
                outcome.failed.append(drainFailure(id, node: node, error))
            }
        }
        if !volumes.isEmpty {
            let teams = Dictionary(placed.map { ($0.sandbox, $0.team) }, uniquingKeysWith: { first, _ in first })
            await drainVolumes(volumes, mounting: mounting, teams: teams, from: node, by: caller, into: &outcome)
        }
        return outcome
    }

    func drainFailure(_ id: String, node: String, _ error: Error) -> API.NodeDrain.Failure {
        let message = (error as? SproutError)?.message ?? "\(error)"
        logger.warning("drain could not move a sandbox or volume", metadata: ["id": "\(id)", "node": "\(node)", "error": "\(message)"])
        return API.NodeDrain.Failure(id: id, error: message)
    }

    /// A drain's second part: the node's volumes go to one other node
    /// (`volumeTarget`), with the sandboxes that mount them. Those are paused
    /// first (a running one resumes there with its processes), each volume
    /// is moved, then each sandbox whose volumes all moved is taken in there;
    /// one whose volume could not move resumes where it was. Last, the old
    /// copies of the moved volumes go.
    func drainVolumes(
        _ volumes: [(home: ClusterCatalog.VolumeHome, team: String)], mounting: [String: [String]], teams: [String: String], from node: String,
        by caller: Identity, into outcome: inout NodeRoutes.DrainOutcome
    ) async {
        let target: ClusterCatalog.Placement, source: ClusterCatalog.Placement
        do {
            target = try await volumeTarget(leaving: node, wanted: nil)
            guard let placement = try await catalog.nodes().first(where: { $0.id == node })?.placement else { throw SproutError(.notFound, "no node \(node)") }
            source = placement
        } catch {
            for (home, _) in volumes { outcome.failed.append(drainFailure(home.id, node: node, error)) }
            return
        }
        let users = Set(mounting.values.joined()).sorted()
        var wasRunning: Set<String> = [], paused: Set<String> = []
        for id in users {
            do {
                let identity = caller.acting(for: teams[id] ?? "")
                let sandbox: API.Sandbox = try await call(.get, "/v1/sandboxes/\(id)", identity: identity, to: source)
                switch sandbox.state {
                case .running:
                    let _: API.Sandbox = try await call(.post, "/v1/sandboxes/\(id)/pause", body: ByteBuffer(string: "{}"), identity: identity, to: source)
                    wasRunning.insert(id)
                case .paused:
                    break
                default:
                    throw SproutError(.conflict, "it is \(sandbox.state.rawValue); only a running or paused sandbox moves")
                }
                paused.insert(id)
            } catch {
                outcome.failed.append(drainFailure(id, node: node, error))
            }
        }
        var movedVolumes: Set<String> = []
        for (home, team) in volumes {
            let blocked = (mounting[home.id] ?? []).filter { !paused.contains($0) }
            guard blocked.isEmpty else {
                outcome.failed.append(drainFailure(home.id, node: node, SproutError(.conflict, "volume \(home.name) stays: \(blocked.joined(separator: ", ")) could not be paused")))
                continue
            }
            do {
                try await moveVolume(home, team: team, from: source, to: target, withPaused: true, by: caller)
                movedVolumes.insert(home.id)
                outcome.volumes.append(API.NodeDrain.VolumeMove(id: home.id, name: home.name, node: target.node))
            } catch {
                outcome.failed.append(drainFailure(home.id, node: node, error))
            }
        }
        let nodes = (try? await catalog.nodes()) ?? []
        let json: HTTPFields = [.contentType: "application/json"]
        for id in users where paused.contains(id) {
            let identity = caller.acting(for: teams[id] ?? "")
            let own = mounting.filter { $0.value.contains(id) }.map(\.key)
            do {
                guard own.allSatisfy(movedVolumes.contains) else {
                    throw SproutError(.conflict, "a volume it mounts could not move")
                }
                guard let placement = try await catalog.placement(of: id) else { throw SproutError(.notFound, "no longer placed") }
                let answer = try await relocate(id, from: placement, nodes: nodes, to: target.node, identity: identity, headers: json,
                                                resume: wasRunning.contains(id) ? ByteBuffer(string: "{}") : nil)
                guard answer.response.status.code / 100 == 2, let after = try? JSONDecoder().decode(API.Sandbox.self, from: Data(answer.body.readableBytesView)) else {
                    throw SproutError(.conflict, "\(Self.nodeError(answer.body, status: answer.response.status.code, node: answer.node).message) "
                        + "(its volumes are on node \(target.node) now: POST /v1/sandboxes/\(id)/resume?node=\(target.node) moves it there)")
                }
                outcome.moved.append(API.NodeDrain.Move(id: id, node: answer.node, state: after.state))
            } catch {
                if wasRunning.contains(id), !own.allSatisfy(movedVolumes.contains) {
                    let _: API.Sandbox? = try? await call(.post, "/v1/sandboxes/\(id)/resume", body: ByteBuffer(string: "{}"), identity: identity, to: source)
                }
                outcome.failed.append(drainFailure(id, node: node, error))
            }
        }
        for (home, team) in volumes where movedVolumes.contains(home.id) {
            await dropMovedVolume(home, team: team, from: source, by: caller)
        }
    }

    func drainOne(_ id: String, team identity: Identity) async throws -> API.NodeDrain.Move {
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
    func call<T: Decodable>(
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
}
