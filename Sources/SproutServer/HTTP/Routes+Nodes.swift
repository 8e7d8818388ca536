import Hummingbird
import SproutAPI
import SproutCluster
import SproutCore

/// `/v1/nodes`: the fleet's nodes (admin only), on a server of a fleet (a node or an API server).
struct NodeRoutes {
    let catalog: ClusterCatalog?
    /// An API server's: moves every sandbox off a draining node. A node has none (its drain only marks it).
    var mover: (@Sendable (_ node: String, _ caller: Identity) async -> DrainOutcome)? = nil

    /// What an API server's drain moved, and what it could not.
    struct DrainOutcome: Sendable {
        var moved: [API.NodeDrain.Move] = []
        var failed: [API.NodeDrain.Failure] = []
        var volumes: [API.NodeDrain.VolumeMove] = []
    }

    func register(on group: RouterGroup<SproutContext>) {
        group.get("nodes") { _, context in
            let catalog = try fleet(try context.caller())
            return try JSONBody.response(try await catalog.nodes().map(Self.api))
        }
        group.post("nodes/:id/drain") { [mover] _, context in
            let caller = try context.caller()
            let catalog = try fleet(caller)
            let id = try context.parameters.require("id")
            try await catalog.drain(id)
            let outcome = await mover?(id, caller) ?? DrainOutcome()
            guard let node = try await catalog.nodes().first(where: { $0.id == id }) else { throw SproutError(.notFound, "no node with id '\(id)'") }
            return try JSONBody.response(API.NodeDrain(node: Self.api(node), moved: outcome.moved, failed: outcome.failed,
                                                       remaining: try await catalog.sandboxes(on: id), movedVolumes: mover == nil ? nil : outcome.volumes))
        }
    }

    private func fleet(_ caller: Identity) throws -> ClusterCatalog {
        guard caller.admin else { throw SproutError(.forbidden, "the fleet's nodes need an admin key") }
        guard let catalog else {
            throw SproutError(.notFound, "this server is not in a fleet (start it with --role node or --role api and --catalog postgres://…)")
        }
        return catalog
    }

    static func api(_ node: ClusterCatalog.NodeStatus) -> API.Node {
        API.Node(id: node.id, address: node.registration.address, state: node.state.rawValue, epoch: node.epoch,
                 leaseSeconds: (node.leaseSeconds * 10).rounded() / 10, cpuCapacity: node.registration.cpuCapacity, cpuReserved: node.reservedCPU,
                 memoryMB: node.registration.memoryMB, memoryReservedMB: node.reservedMemoryMB, diskMB: node.registration.diskMB,
                 sandboxes: node.sandboxes, runtime: node.registration.runtime, cpuFlags: node.registration.cpuFlags.count)
    }
}

/// `/v1/store/collect` (admin): a collection of the object store now (`StoreCollector`).
struct StoreRoutes {
    let collector: StoreCollector?

    func register(on group: RouterGroup<SproutContext>) {
        group.post("store/collect") { request, context in
            guard try context.caller().admin else { throw SproutError(.forbidden, "collecting the object store needs an admin key") }
            guard let collector else { throw SproutError(.notFound, "this server has no object store (start it with --store s3://…)") }
            let body = try await JSONBody.decode(API.CollectStore.self, from: request, orIfEmpty: API.CollectStore())
            return try JSONBody.response(try await collector.collect(grace: body.graceSeconds))
        }
    }
}

