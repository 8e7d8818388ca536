import Glibc
import SproutCore
import SproutHost
import SproutSystem

/// A network namespace of the tests' own behind a veth: a /24 of
/// 198.18.0.0/15 taken host-wide, `.1` on the host's end, `.2` on `eth0`
/// inside, loopback up (and a default route back, when asked). The
/// isolation suite's outside hosts and the dashboard's browser live in one.
struct TestNetwork: Sendable {
    let namespace: String
    /// The host's end of the veth pair.
    let link: String
    let subnet: Int
    var hostAddress: String { "198.18.\(subnet).1" }
    var innerAddress: String { "198.18.\(subnet).2" }
    var cidr: String { "198.18.\(subnet).0/24" }

    /// Where test runs on this host take their subnets: a file per
    /// subnet made with O_EXCL, holding the taker's pid, so two test
    /// runs side by side never put the same address on two veths (a
    /// run that died leaves its files; a dead pid's are taken over).
    static let subnets = "/run/sprout-test-subnets"

    static func takeSubnet() throws -> Int {
        try FileSystem.makeDirectories(subnets)
        for subnet in 1...250 {
            let path = "\(subnets)/\(subnet)"
            for _ in 0..<2 {
                let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                if fd >= 0 {
                    try Descriptor.writeAll(fd, Array("\(getpid())\n".utf8))
                    Descriptor.close(fd)
                    return subnet
                }
                let owner = (try? Descriptor.readFile(path, limit: 64)).flatMap { Int32(String(decoding: $0, as: UTF8.self).trimmed) }
                // Taken by a live process (or being written): try the next one.
                guard let owner, kill(owner, 0) != 0 && errno == ESRCH else { break }
                unlink(path)
            }
        }
        throw SproutError(.unavailable, "no free test subnet in \(subnets)")
    }

    init(defaultRoute: Bool) async throws {
        subnet = try Self.takeSubnet()
        namespace = "\(HostResources.testHostPrefix)\(Identifiers.random(length: 6))"
        link = "stv\(Identifiers.random(length: 8))"
        let namespace = namespace
        HostResources.testHosts.withLock { _ = $0.insert(namespace) }
        do {
            try await HostCommand.run(["ip", "-batch", "-"], input: """
                netns add \(namespace)
                link add \(link) type veth peer name eth0 netns \(namespace)
                addr add \(hostAddress)/30 dev \(link)
                link set \(link) up

                """)
            try await HostCommand.run(["ip", "-n", namespace, "-batch", "-"], input: """
                addr add \(innerAddress)/30 dev eth0
                link set eth0 up
                link set lo up
                \(defaultRoute ? "route add default via \(hostAddress)" : "")

                """)
        } catch {
            await remove()
            throw error
        }
    }

    /// The pair goes first, with its address: a namespace outlives its name
    /// while its sockets close, and those that cannot (a link set down)
    /// would keep the subnet's route on the host.
    func remove() async {
        _ = try? await HostCommand.capture(["ip", "link", "delete", link])
        _ = try? await HostCommand.capture(["ip", "netns", "delete", namespace])
        unlink("\(Self.subnets)/\(subnet)")
        let namespace = namespace
        HostResources.testHosts.withLock { _ = $0.remove(namespace) }
    }
}
