import Glibc
import SproutCore
import SproutHost
import SproutSystem

/// What a sandbox may reach outside: everything, nothing (`internet: false`),
/// or only some IPv4 CIDRs (`egress`).
public struct NetworkPolicy: Sendable, Equatable, Codable {
    public var internet: Bool
    public var egress: [String]

    public init(internet: Bool, egress: [String] = []) {
        self.internet = internet
        self.egress = egress
    }

    public static let open = NetworkPolicy(internet: true)

    /// True when no rule is needed.
    public var isOpen: Bool { internet && egress.isEmpty }
}

/// Sandbox networking as the server needs it; `SandboxNetwork` is the real
/// one (namespaces, veths, nftables), tests use a fake on loopback.
public protocol SandboxNetworking: Sendable {
    /// Host-wide set-up (forwarding, shared rules) and this server's own firewall table.
    func prepare() async throws
    /// Creates the sandbox's namespace and veth and applies its policy. On failure, removes what it made.
    func create(sandboxID: String, slot: NetworkSlot, policy: NetworkPolicy) async throws
    /// Removes the namespace, the veth and the policy. Idempotent.
    func destroy(sandboxID: String, policy: NetworkPolicy) async
    /// Puts back the addresses gVisor strips from the namespace (before a restore).
    func restoreAddresses(sandboxID: String, slot: NetworkSlot) async throws
    /// Ends every TCP connection between the host and the sandbox.
    func closeConnections(to slot: NetworkSlot) async
    func hasNamespace(sandboxID: String) -> Bool
    func namespacePath(_ sandboxID: String) -> String
    /// Sandbox ids of every namespace this server made.
    func existingSandboxIDs() -> [String]
    /// Makes this server's firewall hold exactly `policies` (one atomic
    /// change: no moment without the rules). Run at start, after adopting.
    func applyPolicies(_ policies: [String: NetworkPolicy]) async throws
    /// Replaces a running sandbox's policy in one change (no moment without rules).
    func updatePolicy(sandboxID: String, from old: NetworkPolicy, to new: NetworkPolicy) async throws
    /// Removes this server's firewall table (nothing of it is live any more).
    func removeInstanceRules() async
    /// Where the sandbox's agent listens.
    func agentEndpoint(_ slot: NetworkSlot) -> (host: String, port: UInt16)
    /// The sandbox's address, for port previews.
    func address(_ slot: NetworkSlot) -> String
}

/// Network namespaces, veth pairs and nftables rules.
///
/// Every sandbox gets its own namespace `<prefix><sandbox id>` holding `eth0`
/// (the sandbox's end of a veth pair, at the slot's .2 address, default route
/// via .1) and the host end `sp<13 chars>` at .1. Outbound traffic is
/// masqueraded; sandboxes cannot reach each other or the host itself (only
/// replies to connections the host opened get through).
///
/// Rules live in nftables. Host-wide ones (table `inet sprout`, and
/// `ip sprout_nat`) are the same for every server and are replaced
/// atomically at start. Per-sandbox policy lives in this server's own table,
/// `inet sprout_<instance>`: three sets keyed by the sandbox's host-side
/// interface (`noinet`, `limited`, and `egress` of interface . CIDR), matched
/// by three rules, so a lookup costs the same for 1 or 10,000 sandboxes and
/// adding a sandbox is adding a set element. The table belongs to this server
/// alone (no other server ever flushes it), survives any restart of the
/// server (kernel state), and is made to match the catalog again after
/// every start.
public struct SandboxNetwork: SandboxNetworking {
    public let namespacePrefix: String
    /// The nftables table of this server's per-sandbox rules.
    public let table: String

    public let instance: String

    public init(instance: String) {
        self.instance = instance
        namespacePrefix = "sprout-\(instance)-"
        table = "sprout_\(instance)"
    }

    public func namespaceName(_ sandboxID: String) -> String { namespacePrefix + sandboxID }
    public func namespacePath(_ sandboxID: String) -> String { "/run/netns/" + namespaceName(sandboxID) }
    public func hasNamespace(sandboxID: String) -> Bool { FileSystem.exists(namespacePath(sandboxID)) }
    public func agentEndpoint(_ slot: NetworkSlot) -> (host: String, port: UInt16) { (slot.sandboxAddress, 49983) }
    public func address(_ slot: NetworkSlot) -> String { slot.sandboxAddress }

    /// The host side of the veth: `sp`, 5 characters of the server's
    /// instance and 8 of the sandbox id (15, the kernel's limit), so that two
    /// servers on one host (a fleet tried on one machine, a sandbox moved
    /// from a node that died here) never name an interface alike.
    public func hostInterface(_ sandboxID: String) -> String { Self.hostInterface(sandboxID, instance: instance) }

    public static func hostInterface(_ sandboxID: String, instance: String) -> String {
        let tail = sandboxID.split(separator: "_").last.map(String.init) ?? sandboxID
        return "sp" + String(instance.prefix(5)) + String(tail.prefix(8))
    }

    /// The name before instances were part of it (`sp` + 13 characters of the
    /// id): a sandbox that was running across the upgrade still has it, so its
    /// policy names both and its teardown removes both.
    public static func legacyHostInterface(_ sandboxID: String) -> String {
        let tail = sandboxID.split(separator: "_").last.map(String.init) ?? sandboxID
        return "sp" + String(tail.prefix(13))
    }

    /// Both names a sandbox's host interface can have (see `legacyHostInterface`).
    func interfaceNames(_ sandboxID: String) -> [String] { [hostInterface(sandboxID), Self.legacyHostInterface(sandboxID)] }

    // MARK: Host set-up

    public func prepare() async throws {
        try FileSystem.writeIfDifferent("/proc/sys/net/ipv4/ip_forward", "1\n")
        try await Self.shareNamespaceDirectory()
        try await HostCommand.run(["nft", "-f", "-"], input: Self.sharedRules)
        await Self.removeLegacyIptablesRules()
        // Create this server's table if it is not there; never flush it here.
        _ = try await HostCommand.run(["nft", "-f", "-"], input: "table inet \(table)\n")
        if try await HostCommand.capture(["nft", "list", "chain", "inet", table, "forward"]).status != 0 {
            try await applyPolicies([:])
        }
    }

    /// Host-wide rules, replaced atomically (one nft transaction) at every start.
    static let sharedRules = """
        table inet sprout
        delete table inet sprout
        table inet sprout {
          chain input {
            type filter hook input priority filter; policy accept;
            iifname "sp*" ct state established,related accept
            iifname "sp*" drop
          }
          chain forward {
            type filter hook forward priority filter; policy accept;
            oifname "sp*" ct state established,related accept
            iifname "sp*" oifname "sp*" drop
          }
        }
        table ip sprout_nat
        delete table ip sprout_nat
        table ip sprout_nat {
          chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr \(NetworkSlot.poolCIDR) ip daddr != \(NetworkSlot.poolCIDR) masquerade
          }
        }

        """

    /// Sprout 0.1 kept its rules in iptables chains that every start flushed;
    /// remove them from a host that ran it.
    static func removeLegacyIptablesRules() async {
        guard Spawn.resolveExecutable("iptables", searchPath: HostCommand.searchPath) != nil,
            (try? await HostCommand.capture(["iptables", "-w", "-S", "SPROUT-FORWARD"]))?.status == 0
        else { return }
        for argv in [
            ["-D", "INPUT", "-i", "sp+", "-j", "SPROUT-INPUT"], ["-D", "FORWARD", "-j", "SPROUT-FORWARD"],
            ["-F", "SPROUT-INPUT"], ["-X", "SPROUT-INPUT"], ["-F", "SPROUT-FORWARD"], ["-X", "SPROUT-FORWARD"],
            ["-t", "nat", "-D", "POSTROUTING", "-s", NetworkSlot.poolCIDR, "!", "-d", NetworkSlot.poolCIDR, "-j", "MASQUERADE"],
        ] {
            _ = try? await HostCommand.capture(["iptables", "-w"] + argv)
        }
    }

    /// Makes `/run/netns` a shared mount (as `ip netns add` itself does), so
    /// namespaces created later also appear in Sprout's runtime mount
    /// namespace. Must run before that namespace is created.
    public static func shareNamespaceDirectory() async throws {
        try await HostMounts.share("/run/netns")
    }

    // MARK: Per-sandbox policy

    public func applyPolicies(_ policies: [String: NetworkPolicy]) async throws {
        var noinet: [String] = []
        var limited: [String] = []
        var egress: [String] = []
        for (id, policy) in policies.sorted(by: { $0.key < $1.key }) {
            for interface in interfaceNames(id) {
                if !policy.internet { noinet.append("\"\(interface)\"") }
                if policy.internet && !policy.egress.isEmpty {
                    limited.append("\"\(interface)\"")
                    egress += policy.egress.map { "\"\(interface)\" . \($0)" }
                }
            }
        }
        func elements(_ list: [String]) -> String { list.isEmpty ? "" : "elements = { \(list.joined(separator: ", ")) }" }
        try await HostCommand.run(["nft", "-f", "-"], input: """
            table inet \(table)
            delete table inet \(table)
            table inet \(table) {
              set noinet { type ifname; \(elements(noinet)) }
              set limited { type ifname; \(elements(limited)) }
              set egress { type ifname . ipv4_addr; flags interval; \(elements(egress)) }
              chain forward {
                type filter hook forward priority filter; policy accept;
                iifname @noinet drop
                iifname . ip daddr @egress accept
                iifname @limited drop
              }
            }

            """)
    }

    /// The nft commands that add (or delete) a sandbox's policy elements.
    func policyCommands(_ verb: String, sandboxID: String, policy: NetworkPolicy) -> [String] {
        let interfaces = interfaceNames(sandboxID).map { "\"\($0)\"" }
        if !policy.internet { return ["\(verb) element inet \(table) noinet { \(interfaces.joined(separator: ", ")) }"] }
        guard !policy.egress.isEmpty else { return [] }
        let pairs = interfaces.flatMap { interface in policy.egress.map { "\(interface) . \($0)" } }.joined(separator: ", ")
        return ["\(verb) element inet \(table) limited { \(interfaces.joined(separator: ", ")) }", "\(verb) element inet \(table) egress { \(pairs) }"]
    }

    public func updatePolicy(sandboxID: String, from old: NetworkPolicy, to new: NetworkPolicy) async throws {
        // One nft transaction: the old elements go and the new ones come together.
        let commands = policyCommands("delete", sandboxID: sandboxID, policy: old) + policyCommands("add", sandboxID: sandboxID, policy: new)
        guard !commands.isEmpty else { return }
        try await HostCommand.run(["nft", "-f", "-"], input: commands.joined(separator: "\n") + "\n")
    }

    public func removeInstanceRules() async {
        _ = try? await HostCommand.capture(["nft", "delete", "table", "inet", table])
    }

    // MARK: Namespaces

    public func create(sandboxID: String, slot: NetworkSlot, policy: NetworkPolicy) async throws {
        let ns = namespaceName(sandboxID)
        let hostIF = hostInterface(sandboxID)
        do {
            // The policy goes in before the interface exists: no packet leaves unchecked.
            let rules = policyCommands("add", sandboxID: sandboxID, policy: policy)
            if !rules.isEmpty { try await HostCommand.run(["nft", "-f", "-"], input: rules.joined(separator: "\n") + "\n") }
            try await HostCommand.run(["ip", "-batch", "-"], input: """
                netns add \(ns)
                link add \(hostIF) type veth peer name eth0 netns \(ns)
                addr add \(slot.hostAddress)/30 dev \(hostIF)
                link set \(hostIF) up

                """)
            try await HostCommand.run(["ip", "-n", ns, "-batch", "-"], input: """
                addr add \(slot.sandboxAddress)/30 dev eth0
                link set eth0 up
                link set lo up
                route add default via \(slot.hostAddress)

                """)
        } catch {
            await destroy(sandboxID: sandboxID, policy: policy)
            throw error
        }
    }

    public func restoreAddresses(sandboxID: String, slot: NetworkSlot) async throws {
        try await HostCommand.run(["ip", "-n", namespaceName(sandboxID), "-batch", "-"], input: """
            addr replace \(slot.sandboxAddress)/30 dev eth0
            route replace default via \(slot.hostAddress)

            """)
    }

    public func closeConnections(to slot: NetworkSlot) async {
        _ = try? await HostCommand.capture(["ss", "-K", "-t", "dst", slot.sandboxAddress])
    }

    public func destroy(sandboxID: String, policy: NetworkPolicy) async {
        _ = try? await HostCommand.capture(["ip", "netns", "delete", namespaceName(sandboxID)])
        for interface in interfaceNames(sandboxID) { _ = try? await HostCommand.capture(["ip", "link", "delete", interface]) }
        // One command per set: a missing element must not keep the others.
        for command in policyCommands("delete", sandboxID: sandboxID, policy: policy) {
            _ = try? await HostCommand.capture(["nft", "-f", "-"], input: command + "\n")
        }
    }

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
