import Glibc
import SproutAgentClient
import SproutCore
import SproutHost
import SproutSystem
import Testing

extension Integration {
    /// `net.quiesce`, which the server sends before every checkpoint: the
    /// agent in a network namespace of its own (as in a sandbox, where the
    /// server reaches it over a veth), so its `/proc/net/tcp` holds only its
    /// own connections.
    @Suite("agent: net.quiesce")
    struct AgentQuiesceTests {
        @Test("answers once nothing but its own connection is open, names what stays open, and leaves nothing connected")
        func quiesce() async throws {
            guard let binary = LocalAgent.binaryBesideExecutable() else { throw SproutError(.notFound, "sprout-agent is not built") }
            let network = try await TestNetwork(defaultRoute: false)
            var held: Int32 = -1
            do {
                let agent = try LocalAgent(binary: binary, launcher: ["ip", "netns", "exec", network.namespace], host: network.innerAddress)
                defer { agent.stop() }
                // Positive control: a connection held open (no request on it yet) is seen and named.
                held = try Socket.connectTCP(host: network.innerAddress, port: agent.port, timeoutSeconds: 10, resetOnClose: true)
                let heldPort = try Socket.localPort(held)
                do {
                    try await agent.client.quiesce()
                    Issue.record("quiesce answered with a connection held open")
                } catch let error as SproutError {
                    #expect(error.code == .conflict && error.message.contains(":\(heldPort)"), "\(error)")
                }
                // Reset from this side, as the server's `ss -K` does: quiet once the agent's end has taken it in.
                Descriptor.close(held)
                held = -1
                try await agent.client.quiesce()
                let table = try await HostCommand.capture(["ip", "netns", "exec", network.namespace, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
                let connected = TCPEndpoint.parse(table.stdout).filter(\.isConnection)
                #expect(connected.isEmpty, "nothing connected is left, the quiesce's own connection included: \(connected)")
            } catch {
                if held >= 0 { Descriptor.close(held) }
                await network.remove()
                throw error
            }
            await network.remove()
        }
    }
}
