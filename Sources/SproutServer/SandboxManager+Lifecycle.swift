import Foundation
import GRDB
import Logging
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutSystem

extension SandboxManager {
    // MARK: Create

    /// Creates a sandbox and returns once its agent is ready: a pooled one if
    /// one fits (milliseconds), else a new one. A failure at any step removes
    /// everything made so far: no container, mount, namespace, veth, address
    /// or directory is left, and no record.
    public func create(_ request: API.CreateSandbox, for identity: Identity) async throws -> API.Sandbox {
        let started = monotonicSeconds()
        let limits = try validate(request)
        let env = try resolveEnv(request.env, for: identity)
        let internet = request.internet ?? true
        let egress = try Self.validateEgress(request.egress ?? [], internet: internet)
        let poolable = request.fromPool != false && internet && egress.isEmpty && limits.diskMB == settings.defaultDiskMB
            && limits.cpu == settings.defaultCPU
            && limits.memoryMB == settings.defaultMemoryMB
        if poolable {
            wantPool(for: env)
            if let claimed = try await claim(request, env: env.id, limits: limits, for: identity) {
                metrics.create(result: "pool", seconds: monotonicSeconds() - started)
                publishStateCounts()
                logger.withSandbox(claimed.id).info("running (from the pool)")
                return claimed.api
            }
        }
        let record = try await start(
            env: env, team: identity.team, limits: limits, internet: internet,
            metadata: request.metadata ?? [:], envVars: request.envVars ?? [:], state: .running, egress: egress)
        metrics.create(result: "ok", seconds: monotonicSeconds() - started)
        publishStateCounts()
        return record.api
    }

    /// Starts a new sandbox, ending in `state` (`running`, or `pooled` for the pool).
    func start(
        env: ResolvedEnv, team: String, limits: Limits, internet: Bool, metadata: [String: String], envVars: [String: String],
        state: SandboxState, egress: [String] = []
    ) async throws -> SandboxRecord {
        let started = monotonicSeconds()
        if let free = FileSystem.freeBytes(settings.dataDirectory), free < settings.minimumFreeBytes {
            throw SproutError(.unavailable, "not enough disk space in \(settings.dataDirectory): \(free >> 20) MiB free, \(settings.minimumFreeBytes >> 20) MiB needed")
        }
        // Deep chains are squashed in blocks (cached) before anything is allocated.
        let lowers = try await lowerDirectories(env)
        // A warm env starts from its memory image, on a runtime that can restore one.
        let warmImage: String? = if let image = env.memoryImage, runtime.capabilities.memorySnapshot {
            try await materializedImage(image)
        } else {
            nil
        }

        createsInFlight += 1
        defer { createsInFlight -= 1 }
        let id = Identifiers.make(prefix: "sbx", length: 16)
        let token = warmImage != nil ? (env.memoryToken ?? "") : Identifiers.random(length: 40)
        let slot = try pool.allocate(owner: slotOwner(id))
        var record = SandboxRecord(
            id: id, team: team, env: env.id, runtime: runtime.kind.rawValue, state: .creating,
            createdAt: now(), expiresAt: state == .pooled ? nil : now() + Double(limits.timeout), endedAt: nil, cpu: limits.cpu,
            memoryMB: limits.memoryMB, internet: internet,
            metadata: SandboxRecord.encode(metadata), envVars: SandboxRecord.encode(envVars),
            slot: slot.index, agentToken: token, error: nil, egress: egress.isEmpty ? nil : SandboxRecord.encodeList(egress),
            diskMB: limits.diskMB)
        do {
            try await catalog.db.write { [record] in try record.insert($0) }
        } catch {
            pool.release(slot, owner: slotOwner(id))
            throw error
        }
        let log = logger.withSandbox(id)
        log.info("creating", metadata: ["env": "\(env.id)", "runtime": "\(runtime.kind.rawValue)", "for": "\(state.rawValue)"])

        let launch = try makeLaunch(record: record, slot: slot, layers: lowers)
        let network = self.network
        let runtime = self.runtime
        let preload = settings.statxShim.map { _ in Self.statxShimPath }
        do {
            let phases = try await onThread {
                let t0 = monotonicSeconds()
                try FileSystem.makeDirectories(launch.rootfs.directory, mode: 0o700)
                try Self.writeIdentityFiles(directory: launch.rootfs.directory, id: id, slot: slot, preload: preload)
                let t1 = monotonicSeconds()
                try network.create(sandboxID: id, slot: slot, internet: internet, egress: egress)
                let t2 = monotonicSeconds()
                if let warmImage {
                    try runtime.restore(launch, imageDirectory: warmImage)
                } else {
                    try runtime.start(launch)
                }
                let t3 = monotonicSeconds()
                return String(format: "files %.1f ms, network %.1f ms, runtime %.1f ms", (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)
            }
            if warmImage != nil { try await waitForAgent(record) }
            log.debug("started", metadata: ["phases": "\(phases)", "from": "\(warmImage != nil ? "memory" : "boot")"])
            record.state = try record.state.transition(to: state, id: id)
            if state == .running { record.expiresAt = now() + Double(limits.timeout) }
            try await catalog.db.write { [record] in try record.update($0) }
        } catch {
            log.error("create failed; rolling back", metadata: ["error": "\(error)"])
            metrics.runtimeError(operation: "create")
            metrics.create(result: "error", seconds: monotonicSeconds() - started)
            await removeHostResources(id: id, slot: slot)
            // Detached: the rollback must complete even if this task was cancelled.
            let catalog = self.catalog
            await Task.detached { _ = try? await catalog.db.write { try SandboxRecord.deleteOne($0, key: id) } }.value
            throw error
        }
        log.info("\(state.rawValue)", metadata: ["seconds": "\(String(format: "%.3f", monotonicSeconds() - started))", "address": "\(slot.sandboxAddress)"])
        return record
    }

    struct Limits {
        var cpu: Double
        var memoryMB: Int
        var timeout: Int
        var diskMB: Int
    }

    func validate(_ request: API.CreateSandbox) throws -> Limits {
        let cores = Double(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let cpu = request.cpu ?? settings.defaultCPU
        guard cpu >= 0.1 && cpu <= cores else {
            throw SproutError(.invalidArgument, "cpu must be between 0.1 and \(Int(cores)) (this host's cores), got \(cpu)")
        }
        let memory = request.memoryMB ?? settings.defaultMemoryMB
        guard memory >= 64 && memory <= 65536 else {
            throw SproutError(.invalidArgument, "memoryMB must be between 64 and 65536, got \(memory)")
        }
        let timeout = request.timeoutSeconds ?? settings.defaultTimeoutSeconds
        try validateTimeout(timeout)
        try Self.validateMetadata(request.metadata ?? [:])
        try Self.validateEnvVars(request.envVars ?? [:])
        let disk = request.diskMB ?? settings.defaultDiskMB
        guard disk >= 16 && disk <= 1 << 22 else {
            throw SproutError(.invalidArgument, "diskMB must be between 16 and \(1 << 22), got \(disk)")
        }
        return Limits(cpu: cpu, memoryMB: memory, timeout: timeout, diskMB: disk)
    }

    /// IPv4 CIDRs (`a.b.c.d/n`), at most 64, only with internet on; normalised.
    static func validateEgress(_ egress: [String], internet: Bool) throws -> [String] {
        guard !egress.isEmpty else { return [] }
        guard internet else { throw SproutError(.invalidArgument, "egress needs internet on (internet: false allows no outbound traffic at all)") }
        guard egress.count <= 64 else { throw SproutError(.invalidArgument, "at most 64 egress CIDRs") }
        return try egress.map { cidr in
            let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
            let octets = parts.first?.split(separator: ".", omittingEmptySubsequences: false) ?? []
            guard parts.count == 2, let bits = Int(parts[1]), (0...32).contains(bits), parts[1].count <= 2, octets.count == 4,
                octets.allSatisfy({ $0.count <= 3 && $0.allSatisfy(\.isASCII) && Int($0).map { (0...255).contains($0) } == true })
            else {
                throw SproutError(.invalidArgument, "egress entry '\(cidr.prefix(64))' is not an IPv4 CIDR like 10.0.0.0/8")
            }
            return "\(octets.map { String(Int($0)!) }.joined(separator: "."))/\(bits)"
        }
    }

    static func validateMetadata(_ metadata: [String: String]) throws {
        guard metadata.count <= 64 else { throw SproutError(.invalidArgument, "at most 64 metadata entries") }
        for (key, value) in metadata {
            guard !key.isEmpty, key.count <= 64, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                throw SproutError(.invalidArgument, "metadata key '\(key.prefix(64))' must be 1-64 characters of letters, digits, '.', '_' and '-'")
            }
            guard value.utf8.count <= 1024, !value.contains(where: { $0.isNewline || ($0.asciiValue.map { $0 < 32 || $0 == 127 } ?? false) }) else {
                throw SproutError(.invalidArgument, "metadata value for '\(key)' must be at most 1024 bytes without control characters")
            }
        }
    }

    static func validateEnvVars(_ vars: [String: String]) throws {
        guard vars.count <= 256 else { throw SproutError(.invalidArgument, "at most 256 environment variables") }
        for (key, value) in vars {
            let valid = !key.isEmpty && key.count <= 256 && (key.first.map { $0 == "_" || ($0.isASCII && $0.isLetter) } ?? false)
                && key.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            guard valid else { throw SproutError(.invalidArgument, "invalid environment variable name '\(key.prefix(64))'") }
            guard value.utf8.count <= 32768, !value.contains("\0") else {
                throw SproutError(.invalidArgument, "environment variable \(key) must be at most 32 KiB without NUL bytes")
            }
        }
    }

    func makeLaunch(record: SandboxRecord, slot: NetworkSlot, layers: [String]) throws -> ContainerLaunch {
        let dir = directory(record.id)
        // The sandbox's env vars are not given to the agent: the server adds
        // them to every process it starts, so pooled sandboxes can take them on.
        let args = ["/.sprout/sprout-agent", "--listen", "0.0.0.0:\(AgentProtocol.defaultPort)", "--workdir", "/"]
        let spec = ContainerSpec(
            id: record.id, hostname: record.id, rootfs: dir + "/rootfs", networkNamespace: network.namespacePath(record.id),
            args: args,
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SPROUT_AGENT_TOKEN=\(record.agentToken)",
                  "HOME=/root"],
            cpus: record.cpu, memoryMB: record.memoryMB, pidsLimit: settings.pidsLimit,
            // One directory bind: each extra bind mount costs runsc ~6 ms at start.
            readOnlyMounts: [(settings.agentDirectory, "/.sprout")],
            cgroupsPath: "/sprout/\(record.id)")
        return ContainerLaunch(
            spec: spec, rootfs: rootfs(record.id, layers: layers), logPath: dir + "/runtime.log",
            readyPrefix: "sprout-agent listening")
    }

    /// Each sandbox's own /etc/hosts, /etc/hostname and /etc/resolv.conf
    /// (and, under gVisor, /etc/ld.so.preload naming the statx shim), written
    /// straight into its writable layer before start: no shared file, no
    /// lock, no bind mount.
    static func writeIdentityFiles(directory: String, id: String, slot: NetworkSlot, preload: String?) throws {
        let etc = directory + "/upper/etc"
        try FileSystem.makeDirectories(etc)
        if let preload { try FileSystem.writeAtomically(etc + "/ld.so.preload", preload + "\n") }
        try FileSystem.writeAtomically(etc + "/hosts", """
            127.0.0.1\tlocalhost
            ::1\tlocalhost ip6-localhost ip6-loopback
            \(slot.sandboxAddress)\t\(id)

            """)
        try FileSystem.writeAtomically(etc + "/hostname", id + "\n")
        let hostResolv = (try? Descriptor.readFile("/etc/resolv.conf", limit: 65536)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let servers = hostResolv.split(separator: "\n").filter { line in
            line.hasPrefix("nameserver") && !line.contains(" 127.") && !line.contains(" ::1")
        }
        try FileSystem.writeAtomically(etc + "/resolv.conf", servers.joined(separator: "\n") + "\n")
    }

    // MARK: Kill

    /// Kills a sandbox: stops its container and removes everything it held.
    public func kill(_ id: String, for identity: Identity) async throws -> API.Sandbox {
        let record = try record(id, for: identity)
        return try await kill(record, reason: "request")
    }

    func kill(_ current: SandboxRecord, reason: String) async throws -> API.Sandbox {
        let started = monotonicSeconds()
        let id = current.id
        if current.state == .killed { return current.api }
        if current.state == .killing {
            throw SproutError(.conflict, "sandbox \(id) is already being killed")
        }
        if current.state == .creating {
            throw SproutError(.conflict, "sandbox \(id) is still being created; kill it once it is running")
        }
        if current.state == .pausing || current.state == .resuming {
            throw SproutError(.conflict, "sandbox \(id) is \(current.state.rawValue); kill it once that has finished")
        }
        var record = current
        record.state = try record.state.transition(to: .killing, id: id)
        try await catalog.db.write { [record] in try record.update($0) }
        await removeHostResources(id: id, slot: record.slot.map { NetworkSlot(index: $0) })
        record.state = try record.state.transition(to: .killed, id: id)
        record.endedAt = now()
        try await catalog.db.write { [record] in try record.update($0) }
        if !record.imageList.isEmpty { await collectImages() }
        metrics.kill(reason: reason, seconds: monotonicSeconds() - started)
        publishStateCounts()
        logger.withSandbox(id).info("killed", metadata: ["reason": "\(reason)"])
        return record.api
    }

    /// Removes every host resource a sandbox may hold. Idempotent.
    func removeHostResources(id: String, slot: NetworkSlot?) async {
        let runtime = self.runtime
        let network = self.network
        let pool = self.pool
        let owner = slotOwner(id)
        let dir = directory(id)
        let layers = [dir]  // only the mount point matters for teardown
        let rootfs = OverlayRootfs(layers: layers, directory: dir)
        let log = logger.withSandbox(id)
        _ = try? await onThread {
            runtime.destroy(id: id, rootfs: rootfs)
            network.destroy(sandboxID: id)
            if let slot { pool.release(slot, owner: owner) }
            do { try FileSystem.removeTree(dir) } catch { log.error("cannot remove \(dir): \(error)") }
        }
    }

    // MARK: Timeouts

    /// Kills every sandbox whose timeout has passed. Returns how many.
    @discardableResult
    public func reapExpired() async -> Int {
        let expired = (try? await catalog.db.read { db in
            try SandboxRecord.filter(Column("state") == SandboxState.running.rawValue && Column("expiresAt") < now()).fetchAll(db)
        }) ?? []
        for record in expired where !busy.contains(record.id) {
            _ = try? await kill(record, reason: "timeout")
        }
        return expired.count
    }

    // MARK: Disk

    /// Stops every running sandbox that wrote more than its disk limit, and,
    /// when the data directory is nearly full, the one that wrote the most: a clear failure for that sandbox
    /// only, before the disk is full for everyone. (Checked every couple of
    /// seconds by `SandboxSupervisor`; the writable layer is a plain
    /// directory, so there is no quota the kernel enforces.)
    public func enforceDiskLimits() async {
        let running = (try? await catalog.db.read { db in
            try SandboxRecord.filter(Column("state") == SandboxState.running.rawValue && Column("team") != "").fetchAll(db)
        }) ?? []
        guard !running.isEmpty else { return }
        let directories = running.map { directory($0.id) + "/upper" }
        let used = (try? await onThread { directories.map { FileSystem.allocatedBytes($0) } }) ?? []
        guard used.count == running.count else { return }
        var victims: [(SandboxRecord, String)] = []
        for (record, bytes) in zip(running, used) {
            let limit = Int64(record.diskMB ?? settings.defaultDiskMB) << 20
            if bytes > limit {
                victims.append((record, "disk limit exceeded: wrote \(bytes >> 20) MiB, the limit is \(limit >> 20) MiB"))
            }
        }
        if victims.isEmpty, let free = FileSystem.freeBytes(settings.dataDirectory), free < Self.nearlyFull(settings.minimumFreeBytes),
            let (record, bytes) = zip(running, used).max(by: { $0.1 < $1.1 })
        {
            victims.append((record, "stopped: the host's disk is nearly full (\(free >> 20) MiB free) and this sandbox wrote the most (\(bytes >> 20) MiB)"))
        }
        for (record, reason) in victims where !busy.contains(record.id) {
            var stopped = record
            stopped.error = reason
            logger.withSandbox(record.id).warning("\(reason)")
            _ = try? await kill(stopped, reason: "disk")
        }
    }

    /// "Nearly full": half the create floor, and never more than 128 MiB, so
    /// a high floor (which only refuses creates) does not stop sandboxes.
    static func nearlyFull(_ floor: Int64) -> Int64 { min(floor / 2, 128 << 20) }

    /// Cancels every build and kills every live sandbox (graceful server shutdown).
    public func killAll() async {
        // Builds first: a cancelled build stops starting build sandboxes.
        for task in buildTasks.values { task.cancel() }
        for task in buildTasks.values { _ = await task.value }
        while createsInFlight > 0 { try? await Task.sleep(for: .milliseconds(20)) }
        let live = (try? await catalog.db.read { db in
            try SandboxRecord.filter([SandboxState.running.rawValue, SandboxState.pooled.rawValue].contains(Column("state"))).fetchAll(db)
        }) ?? []
        await withTaskGroup(of: Void.self) { group in
            for record in live {
                group.addTask { _ = try? await self.kill(record, reason: "shutdown") }
            }
        }
    }
}

extension Logger {
    /// A logger that tags every line with the sandbox id.
    func withSandbox(_ id: String) -> Logger {
        var copy = self
        copy[metadataKey: "sandbox"] = "\(id)"
        return copy
    }
}
