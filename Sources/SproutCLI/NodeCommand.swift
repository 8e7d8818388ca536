import ArgumentParser
import Foundation
import SproutAPI
import SproutClient

/// `sprout node list|drain` (admin; a server that is a node of a fleet).
struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "The fleet's nodes (admin).", subcommands: [NodeList.self, NodeDrain.self])
}

struct NodeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the fleet's nodes: state, lease, capacity and use.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let nodes = try await client.client().nodes()
        if json { return try Output.json(nodes) }
        Output.table(["ID", "STATE", "EPOCH", "LEASE", "CPU", "MEMORY", "SANDBOXES", "RUNTIME", "ADDRESS"], nodes.map {
            [$0.id, $0.state, "\($0.epoch)", String(format: "%.1fs", $0.leaseSeconds),
             String(format: "%.1f/%.0f", $0.cpuReserved, $0.cpuCapacity), "\($0.memoryReservedMB)/\($0.memoryMB) MiB",
             "\($0.sandboxes)", $0.runtime, $0.address]
        })
    }
}

struct NodeDrain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Place no new sandboxes on a node and move its sandboxes to others (through an API server).",
        discussion: "A running sandbox moves by pause and resume, its processes intact; a paused one moves paused; the node's volumes move with the sandboxes that mount them. Run it again to retry what failed.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let drain = try await client.client().drainNode(id)
        if json { return try Output.json(drain) }
        for move in drain.moved { print("\(move.id) moved to \(move.node) (\(move.state.rawValue))") }
        for volume in drain.movedVolumes ?? [] { print("volume \(volume.name) (\(volume.id)) moved to \(volume.node)") }
        for failure in drain.failed { print("\(failure.id) not moved: \(failure.error)") }
        print("\(drain.node.id) \(drain.node.state): \(drain.moved.count) moved, \(drain.remaining.count) left on it")
        if !drain.failed.isEmpty { throw ExitCode(1) }
    }
}

/// `sprout store collect` (admin; a server with `--store`).
struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "The object store of a server started with --store (admin).", subcommands: [StoreCollect.self])
}

struct StoreCollect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collect", abstract: "Delete now what nothing in the object store holds any more (the server also does it every half grace).",
        discussion: "Objects are deleted once unreferenced and older than the grace (6 hours). A shorter --grace-seconds is for a store with nothing in flight: no pause, resume or build running on any server that uses it.")
    @OptionGroup var client: ClientOptions
    @Option(help: "Seconds an object must be older than to go (default: the server's grace).") var graceSeconds: Double?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let report = try await client.client().collectStore(graceSeconds: graceSeconds)
        if json { return try Output.json(report) }
        let deleted = report.deleted.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
        print("\(report.roots) roots; deleted \(deleted.isEmpty ? "nothing" : deleted) (\(report.deletedBytes) bytes); kept \(report.kept)"
              + (report.stoppedEarly ? "; stopped early (run it again)" : ""))
    }
}

