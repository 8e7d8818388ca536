import Glibc
import SproutCore
import SproutSystem

/// Network namespaces, veth pairs and the host's NAT and filter rules.
///
/// Every sandbox gets its own namespace `<prefix><sandbox id>` holding `eth0`
/// (the sandbox's end of a veth pair, at the slot's .2 address, default route
/// via .1) and the host end `sp<12 chars>` at .1. Outbound traffic is
/// masqueraded; sandboxes cannot reach each other or the host itself (only
/// replies to connections the host opened get through); `internet: false`
/// drops everything the sandbox forwards.
public struct SandboxNetwork: Sendable {
    public let namespacePrefix: String

    public init(namespacePrefix: String) {
        self.namespacePrefix = namespacePrefix
    }

    public func namespaceName(_ sandboxID: String) -> String { namespacePrefix + sandboxID }
    public func namespacePath(_ sandboxID: String) -> String { "/run/netns/" + namespaceName(sandboxID) }

    /// The host side of the veth: `sp` + up to 13 characters of the id.
    public static func hostInterface(_ sandboxID: String) -> String {
        let tail = sandboxID.split(separator: "_").last.map(String.init) ?? sandboxID
        return "sp" + String(tail.prefix(13))
    }

    /// Host-wide rules, installed idempotently at server start.
    public static func prepareHost() throws {
        try FileSystem.writeIfDifferent("/proc/sys/net/ipv4/ip_forward", "1\n")
        try shareNamespaceDirectory()
        let pool = NetworkSlot.poolCIDR
        // NAT for the pool.
        if try HostCommand.capture(["iptables", "-w", "-t", "nat", "-C", "POSTROUTING", "-s", pool, "!", "-d", pool, "-j", "MASQUERADE"]).status != 0 {
            try HostCommand.run(["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-s", pool, "!", "-d", pool, "-j", "MASQUERADE"])
        }
        // Our own chains, rebuilt from scratch each start.
        for chain in ["SPROUT-INPUT", "SPROUT-FORWARD"] {
            _ = try HostCommand.capture(["iptables", "-w", "-N", chain])
            try HostCommand.run(["iptables", "-w", "-F", chain])
        }
        let rules: [[String]] = [
            // Sandboxes may answer the host, never open connections to it.
            ["-A", "SPROUT-INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["-A", "SPROUT-INPUT", "-j", "DROP"],
            // No sandbox-to-sandbox traffic.
            ["-A", "SPROUT-FORWARD", "-o", "sp+", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
            ["-A", "SPROUT-FORWARD", "-i", "sp+", "-o", "sp+", "-j", "DROP"],
        ]
        for rule in rules { try HostCommand.run(["iptables", "-w"] + rule) }
        for (chain, jump) in [("INPUT", ["-i", "sp+", "-j", "SPROUT-INPUT"]), ("FORWARD", ["-j", "SPROUT-FORWARD"])] {
            if try HostCommand.capture(["iptables", "-w", "-C", chain] + jump).status != 0 {
                try HostCommand.run(["iptables", "-w", "-I", chain, "1"] + jump)
            }
        }
    }

    /// Makes `/run/netns` a shared mount (as `ip netns add` itself does), so
    /// namespaces created later also appear in Sprout's runtime mount
    /// namespace. Must run before that namespace is created.
    static func shareNamespaceDirectory() throws {
        try FileSystem.makeDirectories("/run/netns")
        let info = (try? Descriptor.readFile("/proc/self/mountinfo", limit: 16 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let line = info.split(separator: "\n").first { $0.split(separator: " ").dropFirst(4).first == "/run/netns" }
        if let line, line.contains("shared:") { return }
        if line == nil {
            try HostCommand.run(["mount", "--bind", "/run/netns", "/run/netns"])
        }
        try HostCommand.run(["mount", "--make-shared", "/run/netns"])
    }

    /// Creates the namespace and veth pair. On failure, removes what it made.
    /// `egress`, if not empty, is the only outside traffic allowed (IPv4 CIDRs).
    public func create(sandboxID: String, slot: NetworkSlot, internet: Bool, egress: [String] = []) throws {
        let ns = namespaceName(sandboxID)
        let hostIF = Self.hostInterface(sandboxID)
        do {
            try HostCommand.run(["ip", "-batch", "-"], input: """
                netns add \(ns)
                link add \(hostIF) type veth peer name eth0 netns \(ns)
                addr add \(slot.hostAddress)/30 dev \(hostIF)
                link set \(hostIF) up

                """)
            try HostCommand.run(["ip", "-n", ns, "-batch", "-"], input: """
                addr add \(slot.sandboxAddress)/30 dev eth0
                link set eth0 up
                link set lo up
                route add default via \(slot.hostAddress)

                """)
            if !internet || !egress.isEmpty {
                try HostCommand.run(["iptables", "-w", "-I", "SPROUT-FORWARD", "1", "-i", hostIF, "-j", "DROP"])
            }
            if internet {
                for cidr in egress {
                    try HostCommand.run(["iptables", "-w", "-I", "SPROUT-FORWARD", "1", "-i", hostIF, "-d", cidr, "-j", "ACCEPT"])
                }
            }
        } catch {
            destroy(sandboxID: sandboxID)
            throw error
        }
    }

    /// Puts the sandbox's address and default route back on its `eth0`.
    /// gVisor moves them into its own network stack and strips them from the
    /// namespace; a restore reads them from the namespace again.
    public func restoreAddresses(sandboxID: String, slot: NetworkSlot) throws {
        try HostCommand.run(["ip", "-n", namespaceName(sandboxID), "-batch", "-"], input: """
            addr replace \(slot.sandboxAddress)/30 dev eth0
            route replace default via \(slot.hostAddress)

            """)
    }

    /// Ends every TCP connection between the host and the sandbox from the
    /// host's side (`ss -K`: the host end is reset, the sandbox end closes).
    /// gVisor cannot checkpoint a sandbox holding a connected endpoint.
    public static func closeConnections(to slot: NetworkSlot) {
        _ = try? HostCommand.capture(["ss", "-K", "-t", "dst", slot.sandboxAddress])
    }

    /// Removes the namespace (which takes the veth pair with it) and any
    /// per-sandbox rule. Idempotent.
    public func destroy(sandboxID: String) {
        let hostIF = Self.hostInterface(sandboxID)
        // Every rule about this sandbox's interface (no-internet drop, egress allow-list).
        let rules = (try? HostCommand.capture(["iptables", "-w", "-S", "SPROUT-FORWARD"]))?.stdout ?? ""
        for rule in rules.split(separator: "\n") where rule.hasPrefix("-A SPROUT-FORWARD ") && rule.contains(" -i \(hostIF) ") {
            let argv = rule.split(separator: " ").map(String.init)
            _ = try? HostCommand.capture(["iptables", "-w", "-D"] + argv.dropFirst())
        }
        _ = try? HostCommand.capture(["ip", "netns", "delete", namespaceName(sandboxID)])
        _ = try? HostCommand.capture(["ip", "link", "delete", hostIF])
    }

    /// Sandbox ids of every namespace with our prefix.
    public func existingSandboxIDs() -> [String] {
        guard let names = try? FileSystem.children("/run/netns") else { return [] }
        return names.filter { $0.hasPrefix(namespacePrefix) }.map { String($0.dropFirst(namespacePrefix.count)) }
    }
}

extension FileSystem {
    /// Writes a (proc or sys) file only if its content differs.
    public static func writeIfDifferent(_ path: String, _ text: String) throws {
        if let current = try? Descriptor.readFile(path, limit: 4096), current == Array(text.utf8) { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system("open \(path)") }
        defer { close(fd) }
        try Descriptor.writeAll(fd, Array(text.utf8))
    }
}
