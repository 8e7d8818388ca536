import Glibc
import SproutCore
import SproutHost
import SproutSystem
import Testing

extension Integration {
    /// The tests' own networks (`TestNetwork`) on a host where an earlier test
    /// run was killed: a CI run once took over the subnets of a run killed
    /// before it, whose veths still held their addresses, and every reply to
    /// its test hosts went to the dead run's namespaces.
    @Suite("test networks")
    struct TestNetworkTests {
        @Test("a subnet a killed run left is taken back: its namespace and veth are removed first")
        func leakedNetworkIsRemoved() async throws {
            let namespace = "\(HostResources.testHostPrefix)leak\(Identifiers.random(length: 4))"
            let link = "stvleak\(Identifiers.random(length: 4))"
            // Counted as a live test host, so the other lane's leftover checks pass it by.
            HostResources.testHosts.withLock { _ = $0.insert(namespace) }
            defer { HostResources.testHosts.withLock { _ = $0.remove(namespace) } }
            let (subnet, lock) = try await TestNetwork.takeSubnet(namespace: namespace, link: link)
            _ = try? await HostCommand.capture(["ip", "-batch", "-"], input: """
                netns add \(namespace)
                link add \(link) type veth peer name eth0 netns \(namespace)
                addr add 198.18.\(subnet).1/30 dev \(link)
                link set \(link) up

                """)
            // Positive control: the leak is there, holding the subnet's address.
            #expect(if_nametoindex(link) != 0 && TestNetwork.addressInUse(subnet), "the leaked veth is up with its address")
            Descriptor.close(lock)  // the run dies: its lock goes, its record and veth stay

            let network = try await TestNetwork(defaultRoute: false)
            // The leak's subnet is the lowest free one, so this test's network (or,
            // should it take the subnet first, the other lane's) takes it back.
            #expect(if_nametoindex(link) == 0, "the leaked veth is gone")
            #expect(!FileSystem.exists("/run/netns/\(namespace)"), "the leaked namespace is gone")
            let route = try await HostCommand.capture(["ip", "-4", "route", "get", network.innerAddress])
            #expect(route.stdout.contains("dev \(network.link) "), "the network's address is routed to its own veth: \(route.stdout)")
            await network.remove()
            // Never left behind, whatever failed above.
            _ = try? await HostCommand.capture(["ip", "link", "delete", link])
            _ = try? await HostCommand.capture(["ip", "netns", "delete", namespace])
        }

        @Test("a subnet whose address is on the host with no record of who holds it is passed over")
        func addressInUseIsSkipped() async throws {
            let dummy = "stvd\(Identifiers.random(length: 4))"
            let (subnet, lock) = try await TestNetwork.takeSubnet(namespace: "none", link: "none")
            // A veth with both ends on the host: this kernel has no dummy links.
            _ = try? await HostCommand.capture(["ip", "-batch", "-"], input: """
                link add \(dummy) type veth peer name \(dummy)p
                addr add 198.18.\(subnet).1/30 dev \(dummy)

                """)
            // Positive control: the probe sees the address.
            #expect(TestNetwork.addressInUse(subnet), "198.18.\(subnet).1 is on \(dummy)")
            // No record (another run's, or one that leaked without one), and no lock.
            unlink("\(TestNetwork.subnets)/\(subnet)")
            Descriptor.close(lock)

            let network = try await TestNetwork(defaultRoute: false)
            #expect(network.subnet != subnet, "the subnet in use is not taken again")
            await network.remove()
            _ = try? await HostCommand.capture(["ip", "link", "delete", dummy])
        }
    }
}
