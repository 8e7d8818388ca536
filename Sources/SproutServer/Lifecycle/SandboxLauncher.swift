import Foundation
import Logging
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem
import SproutBlocking

/// The host side of one sandbox: its container spec and identity files,
/// bringing it up (boot or restore) and tearing it down. Writes nothing to
/// the catalog: the services that call it own the state.
struct SandboxLauncher: Sendable {
    let settings: Settings
    let host: SandboxHost
    let layers: LayerStore
    let images: ImageStore
    /// With `--store`: where layers and images this host lacks are fetched from.
    let remote: RemoteStore?
    let watcher: ContainerWatch
    let agents: AgentConnector
    let volumes: VolumeStore
    let logger: Logger

    /// Files every sandbox gets of its own; never part of a layer.
    static let identityFiles = ["etc/hosts", "etc/hostname", "etc/resolv.conf", String(HostCertificates.sandboxPath.dropFirst())]

    func rootfs(_ id: String, layers: [String]) -> OverlayRootfs { OverlayRootfs(layers: layers, directory: settings.directory(id)) }

    /// Memory above the sandbox's limit that its cgroup may still use: under
    /// gVisor the limit is enforced by `MemoryGuard` (which ends the biggest
    /// process inside), and the headroom keeps the host's OOM killer (which
    /// would end the whole sandbox) out of reach while it acts.
    static func headroomMB(_ memoryMB: Int) -> Int { max(128, memoryMB / 4) }

    func launch(_ record: SandboxRecord, layers: [String]) -> ContainerLaunch {
        let dir = settings.directory(record.id)
        // The sandbox's env vars are not given to the agent: the server adds
        // them to every process it starts, so pooled sandboxes can take them on.
        let args = ["/.sprout/sprout-agent", "--listen", "0.0.0.0:\(AgentProtocol.defaultPort)", "--workdir", "/"]
            + (settings.sudoLayer == nil ? [] : ["--sudo"])
        let memory = host.watchesMemory ? record.memoryMB + Self.headroomMB(record.memoryMB) : record.memoryMB
        let spec = ContainerSpec(
            id: record.id, hostname: record.id, rootfs: dir + "/rootfs", networkNamespace: host.network.namespacePath(record.id),
            args: args,
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SPROUT_AGENT_TOKEN=\(record.agentToken)",
                  "HOME=/root"],
            cpus: record.cpu, memoryMB: memory, pidsLimit: settings.pidsLimit,
            // One directory bind (and the volumes): each extra bind mount costs runsc ~6 ms at start.
            mounts: [BindMount(source: settings.agentDirectory, destination: "/.sprout", readOnly: true)]
                + record.volumeList.map { BindMount(source: volumes.mountPoint($0.volume), destination: $0.path, readOnly: $0.readOnly) },
            cgroupsPath: "/sprout/\(record.id)")
        return ContainerLaunch(
            spec: spec, rootfs: rootfs(record.id, layers: layers), slot: NetworkSlot(index: record.slot ?? 0),
            logPath: dir + "/runtime.log", readyPrefix: "sprout-agent listening")
    }

    /// The overlay lower directories of an env: its (squashed) layers, then the base.
    func lowerDirectories(_ env: ResolvedEnv) async throws -> [String] {
        let logger = logger
        let base = env.base
        let baseLayer = try await host.bases.ensure(base) { line in logger.info("\(line)", metadata: ["env": "\(base)"]) }
        if let remote {
            // Each layer used now (the least recently used copies are evicted first, with --cache-gb); one the host lacks fetched.
            for digest in env.layers where try await remote.fetchLayer(digest, into: layers) {
                logger.info("layer fetched from the store", metadata: ["env": "\(env.id)", "layer": "\(digest.prefix(20))"])
            }
        }
        let mountable = try await layers.mountable(env.layers)
        let lowers = mountable.reversed().map { layers.path($0) } + [baseLayer]
        if let sudo = settings.sudoLayer, Self.hasFile("usr/bin/sudo", in: lowers) { return [sudo] + lowers }
        return lowers
    }

    /// Whether the overlay of `lowers` (topmost first) shows `path`: the
    /// topmost layer that has it decides (a whiteout, a 0/0 character device,
    /// means deleted; an opaque directory above it is not looked for).
    static func hasFile(_ path: String, in lowers: [String]) -> Bool {
        for dir in lowers {
            var st = stat()
            guard lstat(dir + "/" + path, &st) == 0 else { continue }
            return !((st.st_mode & S_IFMT) == S_IFCHR && st.st_rdev == 0)
        }
        return false
    }

    /// Where a warm env's image is kept reassembled, ready for `runsc restore`.
    func materializedImage(_ image: String) async throws -> String {
        let directory = "\(settings.readyImagesDirectory)/\(image)"
        if let remote { try await remote.fetchImage(image) }
        let images = images
        try await onThread {
            guard !FileSystem.isDirectory(directory) else { return }
            // Whole or not at all: written beside, then renamed into place.
            let temp = directory + ".tmp-\(Identifiers.random(length: 6))"
            do {
                try images.materialize(image, to: temp)
                try sysCall("rename \(directory)") { rename(temp, directory) }
            } catch {
                try? FileSystem.removeTree(temp)
                if FileSystem.isDirectory(directory) { return }  // another create put it there first
                throw error
            }
        }
        return directory
    }

    /// Makes the sandbox's directory, identity files and network, then boots
    /// its container (or restores it from `image`) and waits for its agent.
    /// On failure, removes what it made. Returns the phases' timings.
    func bringUp(_ record: SandboxRecord, layers: [String], image: String?) async throws -> String {
        let slot = NetworkSlot(index: record.slot ?? 0)
        let launch = launch(record, layers: layers)
        let t0 = monotonicSeconds()
        do {
            // Mounted on the host before the runtime binds them (after a restart, at the first use).
            for mount in record.volumeList { try await volumes.mount(mount.volume) }
            try FileSystem.makeDirectories(launch.rootfs.directory, mode: 0o700)
            try Self.writeIdentityFiles(directory: launch.rootfs.directory, id: record.id, slot: slot, address: host.network.address(slot),
                                        certificates: settings.hostCABundle)
            let t1 = monotonicSeconds()
            try await host.network.create(sandboxID: record.id, slot: slot, policy: record.policy)
            let t2 = monotonicSeconds()
            let runtime: String
            if let image {
                try await host.runtime.restore(launch, imageDirectory: image)
                let restored = monotonicSeconds()
                try await waitForAgent(record)
                runtime = String(format: "restore %.1f ms, agent %.1f ms", (restored - t2) * 1000, (monotonicSeconds() - restored) * 1000)
            } else {
                try await host.runtime.start(launch)
                runtime = String(format: "runtime %.1f ms", (monotonicSeconds() - t2) * 1000)
            }
            return String(format: "files %.1f ms, network %.1f ms, ", (t1 - t0) * 1000, (t2 - t1) * 1000) + runtime
        } catch {
            await teardown(record)
            throw error
        }
    }

    /// Starts a sandbox again from its own files (after a failed checkpoint,
    /// or a pause that kept no memory): same namespace and address, fresh processes.
    func bootAgain(_ record: SandboxRecord, layers: [String]) async throws {
        let slot = NetworkSlot(index: record.slot ?? 0)
        try? FileSystem.removeTree(settings.directory(record.id) + "/image")
        if host.network.hasNamespace(sandboxID: record.id) {
            try await host.network.restoreAddresses(sandboxID: record.id, slot: slot)
        } else {
            try await host.network.create(sandboxID: record.id, slot: slot, policy: record.policy)
        }
        try await host.runtime.start(launch(record, layers: layers))
    }

    /// Restores the sandbox's container from `imageDirectory`: `newNetwork`
    /// makes its namespace first (a fork), else its addresses are put back
    /// (its own pause; a host reboot emptied /run, so the namespace may need making again).
    /// Returns the phases' timings.
    @discardableResult
    func restore(_ record: SandboxRecord, layers: [String], imageDirectory: String, newNetwork: Bool) async throws -> String {
        let slot = NetworkSlot(index: record.slot ?? 0)
        let t0 = monotonicSeconds()
        if newNetwork || !host.network.hasNamespace(sandboxID: record.id) {
            try await host.network.create(sandboxID: record.id, slot: slot, policy: record.policy)
        } else {
            try await host.network.restoreAddresses(sandboxID: record.id, slot: slot)
        }
        let t1 = monotonicSeconds()
        try await host.runtime.restore(launch(record, layers: layers), imageDirectory: imageDirectory)
        let t2 = monotonicSeconds()
        try await waitForAgent(record)
        return String(format: "network %.1f ms, restore %.1f ms, agent %.1f ms", (t1 - t0) * 1000, (t2 - t1) * 1000, (monotonicSeconds() - t2) * 1000)
    }

    /// Removes every host resource a sandbox may hold. Idempotent.
    func teardown(_ record: SandboxRecord) async {
        await teardown(id: record.id, slot: record.slot.map { NetworkSlot(index: $0) }, policy: record.policy)
    }

    /// Runs to its end even when the calling task is cancelled (a cancelled
    /// build rolling back its sandbox's create): the host commands it runs
    /// would otherwise stop at the cancellation and leave what they were to remove.
    func teardown(id: String, slot: NetworkSlot?, policy: NetworkPolicy) async {
        await Task.detached { await self.removeAll(id: id, slot: slot, policy: policy) }.value
    }

    private func removeAll(id: String, slot: NetworkSlot?, policy: NetworkPolicy) async {
        unwatch(id)
        let dir = settings.directory(id)
        await host.runtime.destroy(id: id, rootfs: OverlayRootfs(layers: [dir], directory: dir))
        await host.network.destroy(sandboxID: id, policy: policy)
        if let slot { host.addresses.release(slot, owner: settings.slotOwner(id)) }
        let log = logger.withSandbox(id)
        do {
            try await onThread { try FileSystem.removeTree(dir) }
        } catch {
            log.error("cannot remove \(dir): \(error)")
        }
    }

    /// Stops and deletes a container, keeping the sandbox's files, network
    /// and address. Connections into it end too: nothing at its address
    /// answers any more, so a request that reached its agent meanwhile
    /// would wait for a reply that never comes.
    func removeContainer(_ record: SandboxRecord) async {
        unwatch(record.id)
        await host.runtime.destroy(id: record.id, rootfs: rootfs(record.id, layers: []))
        await host.network.closeConnections(to: NetworkSlot(index: record.slot ?? 0))
    }

    /// Waits until a restored sandbox's agent answers (it was already listening when the image was taken).
    func waitForAgent(_ record: SandboxRecord) async throws {
        let client = agents.client(record, connectTimeout: 1)
        let deadline = monotonicSeconds() + 10
        while true {
            do {
                _ = try await client.health()
                return
            } catch {
                if monotonicSeconds() > deadline {
                    throw SproutError(.timeout, "the restored sandbox's agent did not answer: \(error.sentence)")
                }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
    }

    /// Starts watching a running sandbox: its container process (for
    /// noticing a death) and its memory (for `MemoryGuard`).
    func watch(_ record: SandboxRecord) async { await watcher.watch(record) }

    func unwatch(_ id: String) { watcher.unwatch(id) }

    /// Each sandbox's own /etc/hosts, /etc/hostname and /etc/resolv.conf
    /// (with `--trust-host-ca`, the host's certificates), written
    /// straight into its writable layer before start: no shared file, no
    /// lock, no bind mount.
    static func writeIdentityFiles(directory: String, id: String, slot: NetworkSlot, address: String, certificates: [UInt8]?) throws {
        let etc = directory + "/upper/etc"
        try FileSystem.makeDirectories(etc)
        if let certificates { try FileSystem.writeAtomically(directory + "/upper" + HostCertificates.sandboxPath, certificates) }
        try FileSystem.writeAtomically(etc + "/hosts", """
            127.0.0.1\tlocalhost
            ::1\tlocalhost ip6-localhost ip6-loopback
            \(address)\t\(id)

            """)
        try FileSystem.writeAtomically(etc + "/hostname", id + "\n")
        let hostResolv = (try? Descriptor.readFile("/etc/resolv.conf", limit: 65536)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let servers = hostResolv.split(separator: "\n").filter { line in
            line.hasPrefix("nameserver") && !line.contains(" 127.") && !line.contains(" ::1")
        }
        try FileSystem.writeAtomically(etc + "/resolv.conf", servers.joined(separator: "\n") + "\n")
    }
}

extension SandboxRecord {
    var policy: NetworkPolicy { NetworkPolicy(internet: internet, egress: egressList) }
}
