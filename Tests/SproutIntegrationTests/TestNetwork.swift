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
    /// The descriptor whose lock holds the subnet (see `subnets`).
    private let lock: Int32
    var hostAddress: String { "198.18.\(subnet).1" }
    var innerAddress: String { "198.18.\(subnet).2" }
    var cidr: String { "198.18.\(subnet).0/24" }

    /// Where test runs on this host take their subnets: a file per subnet,
    /// held by a lock (`flock`) on it for as long as the network lives and
    /// naming the network's namespace and link. The kernel drops the lock
    /// when its holder dies, whatever pid namespace that ran in, so a test run
    /// that was killed leaves a file anyone can lock, and the next taker
    /// removes what it names before using the subnet: a leaked veth still
    /// holding the subnet's address would otherwise take the replies meant
    /// for the new one. A subnet with an address on the host that no file
    /// names (a run elsewhere, or one that leaked without a record) is skipped.
    static let subnets = "/run/sprout-test-subnets"

    /// The subnet taken, and the descriptor holding its lock.
    static func takeSubnet(namespace: String, link: String) async throws -> (subnet: Int, lock: Int32) {
        try FileSystem.makeDirectories(subnets)
        for subnet in 1...250 {
            let path = "\(subnets)/\(subnet)"
            let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw SproutError.system("open \(path)") }
            // Held by a live network, or a file its last holder has just unlinked: not this one.
            guard flock(fd, LOCK_EX | LOCK_NB) == 0, isNamed(fd, path) else {
                Descriptor.close(fd)
                continue
            }
            let record = String(decoding: (try? Descriptor.readAll(fd, limit: 256, what: path)) ?? [], as: UTF8.self).split(separator: " ").map(String.init)
            if record.count == 2 { await removeLeaked(namespace: record[0], link: record[1]) }
            let ours = Array("\(namespace) \(link)".utf8)
            guard !addressInUse(subnet), ftruncate(fd, 0) == 0, pwrite(fd, ours, ours.count, 0) == ours.count else {
                if record.isEmpty { unlink(path) }  // made just now, and names no one
                Descriptor.close(fd)
                continue
            }
            return (subnet, fd)
        }
        throw SproutError(.unavailable, "no free test subnet in \(subnets)")
    }

    /// Whether `fd` is still the file at `path`.
    private static func isNamed(_ fd: Int32, _ path: String) -> Bool {
        var held = stat()
        var named = stat()
        return fstat(fd, &held) == 0 && stat(path, &named) == 0 && held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    /// What a killed test run left of its network.
    private static func removeLeaked(namespace: String, link: String) async {
        guard namespace.hasPrefix("sproutit-"), link.hasPrefix("stv") else { return }
        await deletePair(namespace: namespace, link: link)
    }

    /// The pair goes first, with its address: a namespace outlives its name
    /// while its sockets close, and those that cannot (a link set down)
    /// would keep the subnet's route on the host.
    private static func deletePair(namespace: String, link: String) async {
        _ = try? await HostCommand.capture(["ip", "link", "delete", link])
        _ = try? await HostCommand.capture(["ip", "netns", "delete", namespace])
    }

    /// Whether an address of the subnet is on one of the host's interfaces.
    static func addressInUse(_ subnet: Int) -> Bool {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return true }
        defer { freeifaddrs(list) }
        var entry = list
        while let current = entry {
            defer { entry = current.pointee.ifa_next }
            guard let address = current.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            let octets = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { withUnsafeBytes(of: $0.pointee.sin_addr.s_addr) { Array($0) } }
            if octets[0] == 198, octets[1] == 18, Int(octets[2]) == subnet { return true }
        }
        return false
    }

    init(defaultRoute: Bool) async throws {
        namespace = "\(HostResources.testHostPrefix)\(Identifiers.random(length: 6))"
        link = "stv\(Identifiers.random(length: 8))"
        (subnet, lock) = try await Self.takeSubnet(namespace: namespace, link: link)
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

    /// Removes the pair and the namespace (see `deletePair`), then gives the subnet back.
    func remove() async {
        await Self.deletePair(namespace: namespace, link: link)
        // Gone: the record goes too (unlinked while locked). Still there: the
        // record stays, for the next taker to remove.
        if if_nametoindex(link) == 0 { unlink("\(Self.subnets)/\(subnet)") }
        Descriptor.close(lock)
        let namespace = namespace
        HostResources.testHosts.withLock { _ = $0.remove(namespace) }
    }
}
