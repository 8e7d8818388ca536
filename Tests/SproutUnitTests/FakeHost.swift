import Foundation
import SproutAgentClient
import SproutCore
import SproutRuntime
import SproutServer
import SproutSystem
import SproutBlocking

/// A fake host for the fast tier: it stands in for runsc or runc, network
/// namespaces, nftables and the address pool, so the server's own logic
/// (routes, auth, the state machines, the catalog, the gate) runs without
/// root. Each "container" is the real `sprout-agent` as a host process on
/// loopback, working in the sandbox's writable layer. Everything it stands
/// in for is tested for real by `SproutIntegrationTests`.
enum FakeHost {
    static func make(directory: String) throws -> SandboxHost {
        guard let binary = LocalAgent.binaryBesideExecutable() else {
            throw SproutError(.notFound, "sprout-agent is not built next to the test runner")
        }
        let ports = Locked<[Int: UInt16]>([:])
        return SandboxHost(
            runtime: FakeRuntime(agentBinary: binary, ports: ports), network: FakeNetwork(ports: ports),
            addresses: FakeAddresses(), bases: FakeBases(directory: directory + "/bases"), watchesMemory: false,
            // Its agents are host processes: /run/sprout/env.json would be the host's own.
            envFile: directory + "/sandbox-env.json")
    }
}

/// Containers as local agent processes. No memory snapshots (like runc here).
final class FakeRuntime: SandboxRuntime, @unchecked Sendable {
    let agentBinary: String
    let ports: Locked<[Int: UInt16]>
    private let agents = Locked<[String: LocalAgent]>([:])

    init(agentBinary: String, ports: Locked<[Int: UInt16]>) {
        self.agentBinary = agentBinary
        self.ports = ports
    }

    var kind: RuntimeKind { .runc }
    var capabilities: RuntimeCapabilities { RuntimeCapabilities(memorySnapshot: false) }
    var version: String { "fake" }
    var platform: String? { nil }

    func start(_ launch: ContainerLaunch) async throws {
        let token = launch.spec.env.first { $0.hasPrefix("SPROUT_AGENT_TOKEN=") }.map { String($0.dropFirst("SPROUT_AGENT_TOKEN=".count)) }
        let workdir = launch.rootfs.directory + "/upper"
        try FileSystem.makeDirectories(workdir)
        let agent = try await onThread { [agentBinary] in try LocalAgent(binary: agentBinary, workdir: workdir, token: token) }
        agents.withLock { $0[launch.spec.id] = agent }
        ports.withLock { $0[launch.slot.index] = agent.port }
    }

    func checkpoint(id: String, rootfs: OverlayRootfs, imageDirectory: String) async throws {
        throw SproutError(.unsupported, "the fake runtime cannot snapshot memory")
    }

    func restore(_ launch: ContainerLaunch, imageDirectory: String) async throws {
        throw SproutError(.unsupported, "the fake runtime cannot snapshot memory")
    }

    func destroy(id: String, rootfs: OverlayRootfs) async {
        let agent = agents.withLock { $0.removeValue(forKey: id) }
        agent?.stop()
    }

    /// Ends a container as a crash would (for death detection).
    func crash(_ id: String) {
        if let agent = agents.current[id] { kill(agent.pid, SIGKILL) }
    }

    func containerIDs() async -> [String] { Array(agents.current.keys) }

    func containerProcess(id: String) async -> ContainerProcess? {
        agents.current[id].flatMap { ProcessWatch.identify($0.pid) }
    }

    func usage(id: String) -> ResourceUsage? { nil }
    func setMemoryLimit(id: String, bytes: Int64) throws {}
    func shutdown() async {
        for agent in agents.withLock({ agents in defer { agents = [:] }; return Array(agents.values) }) { agent.stop() }
    }
}

/// Every sandbox "address" is loopback, at its agent's port.
struct FakeNetwork: SandboxNetworking {
    let ports: Locked<[Int: UInt16]>
    func prepare() async throws {}
    func create(sandboxID: String, slot: NetworkSlot, policy: NetworkPolicy) async throws {}
    func updatePolicy(sandboxID: String, from old: NetworkPolicy, to new: NetworkPolicy) async throws {}
    func destroy(sandboxID: String, policy: NetworkPolicy) async {}
    func restoreAddresses(sandboxID: String, slot: NetworkSlot) async throws {}
    func closeConnections(to slot: NetworkSlot) async {}
    func hasNamespace(sandboxID: String) -> Bool { true }
    func namespacePath(_ sandboxID: String) -> String { "/nonexistent/\(sandboxID)" }
    func existingSandboxIDs() -> [String] { [] }
    func applyPolicies(_ policies: [String: NetworkPolicy]) async throws {}
    func removeInstanceRules() async {}
    func agentEndpoint(_ slot: NetworkSlot) -> (host: String, port: UInt16) { ("127.0.0.1", ports.current[slot.index] ?? 1) }
    func address(_ slot: NetworkSlot) -> String { "127.0.0.1" }
}

final class FakeAddresses: AddressPool, @unchecked Sendable {
    private let next = Locked(1)
    func allocate(owner: String) throws -> NetworkSlot { NetworkSlot(index: next.withLock { n in defer { n += 1 }; return n }) }
    func release(_ slot: NetworkSlot, owner: String) {}
    func slots(ownedBy predicate: (String) -> Bool) -> [(NetworkSlot, String)] { [] }
}

/// Bases are empty directories.
struct FakeBases: BaseProvider {
    let directory: String
    func ensure(_ name: String, progress: @escaping @Sendable (String) -> Void) async throws -> String {
        guard ["empty", "debian"].contains(name) else { throw SproutError(.notFound, "no base env '\(name)'") }
        try FileSystem.makeDirectories(path(name))
        return path(name)
    }
    func path(_ name: String) -> String { "\(directory)/\(name)" }
}
