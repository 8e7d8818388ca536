import Foundation
import GRDB
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// Memory snapshots (gVisor checkpoint/restore): pause and resume, live
/// forks, and sandboxes restored from a warm env's image.
///
/// Two facts about runsc shape this code. It cannot save a TCP endpoint in
/// any connected state (TIME_WAIT included), so before a checkpoint the
/// server refuses if a process inside holds a connection, and ends every
/// host-side connection itself. And a failed save ends the sandbox, so a
/// refused pause restarts the sandbox from its files and says so.
extension SandboxManager {
    /// Pause images kept per sandbox (each later one stores only the chunks it does not share).
    static let imageHistory = 10
    /// The most sandboxes one fork request may start.
    static let maxForks = 32
    /// Restores run this many at a time: each is mostly one busy runsc
    /// process, so more than the host's cores only adds contention.
    static var restoreWidth: Int { max(2, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    func requireMemorySnapshots() throws {
        guard runtime.capabilities.memorySnapshot else {
            throw SproutError(.unsupported,
                "the \(runtime.kind.rawValue) runtime cannot snapshot memory on this host (CRIU fails on this kernel): pause, resume and live fork need a server started with --runtime gvisor")
        }
    }

    /// The running sandbox `id`, once everything a checkpoint needs is
    /// there: the runtime can do it, and `checkBeforeCheckpoint` passes.
    /// `verb` names the operation in the error ("paused", "forked").
    func checkpointable(_ id: String, for identity: Identity, verb: String) async throws -> SandboxRecord {
        let record = try record(id, for: identity)
        try requireMemorySnapshots()
        guard record.state == .running else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue); only a running sandbox can be \(verb)")
        }
        try await checkBeforeCheckpoint(record)
        return record
    }

    // MARK: Pause

    public func pause(_ id: String, autoResume: Bool, for identity: Identity) async throws -> API.Sandbox {
        var record = try await checkpointable(id, for: identity, verb: "paused")
        let started = monotonicSeconds()
        record.state = try record.state.transition(to: .pausing, id: id)
        try await save(record)
        let image: ImageStore.Stored
        do {
            image = try await checkpointIntoStore(record)
        } catch {
            try await recoverFromFailedCheckpoint(&record, error: error)
            throw SproutError(.internal, "cannot pause sandbox \(id): \(error.sentence); it was restarted from its files (its processes were lost)")
        }
        record.images = SandboxRecord.encodeList(Array((record.imageList + [image.id]).suffix(Self.imageHistory)))
        record.remainingSeconds = max(1, (record.expiresAt ?? now()) - now())
        record.expiresAt = nil
        record.autoResume = autoResume
        record.error = nil
        record.state = try record.state.transition(to: .paused, id: id)
        try await save(record)
        await collectImages()
        metrics.memoryOperation("pause", seconds: monotonicSeconds() - started)
        publishStateCounts()
        logger.withSandbox(id).info("paused", metadata: [
            "image": "\(image.id)", "bytes": "\(image.size)", "new": "\(image.newBytes)",
            "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))",
        ])
        return record.api(images: self.images)
    }

    /// Refuses (before anything changes) what would make the checkpoint fail:
    /// too little disk for the image, or a TCP connection a process inside
    /// holds open (runsc cannot save one, and a failed save ends the sandbox).
    func checkBeforeCheckpoint(_ record: SandboxRecord) async throws {
        let usage = Self.memoryUsage(record.id) ?? Int64(record.memoryMB) << 20
        if let free = FileSystem.freeBytes(settings.dataDirectory), free < usage + settings.minimumFreeBytes {
            throw SproutError(.unavailable,
                "not enough disk space to save sandbox \(record.id)'s memory: \(free >> 20) MiB free, \((usage + settings.minimumFreeBytes) >> 20) MiB needed; it keeps running")
        }
        let host = NetworkSlot(index: record.slot ?? 0).hostAddress
        // Connections that are closing (the host hung up, the process has
        // not closed yet) get two seconds to finish.
        let deadline = monotonicSeconds() + 2
        while true {
            var open: [(endpoint: String, closing: Bool)] = []
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                guard let bytes = try? await record.agentClient.read(table, limit: 1 << 20) else { continue }
                open += Self.connectedEndpoints(String(decoding: bytes, as: UTF8.self), host: host)
            }
            if open.isEmpty { return }
            if open.allSatisfy(\.closing) && monotonicSeconds() < deadline {
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            throw SproutError(.conflict,
                "sandbox \(record.id) has open TCP connections (\(open.prefix(4).map(\.endpoint).joined(separator: ", "))); gVisor cannot save them: close them and retry")
        }
    }

    /// "local -> remote" of every connected endpoint in a /proc/net/tcp
    /// table, and whether it is closing. Left out: listeners, closed
    /// endpoints, and connections the host holds open (state ESTABLISHED
    /// with `host`): the server resets those itself before the checkpoint.
    static func connectedEndpoints(_ table: String, host: String) -> [(endpoint: String, closing: Bool)] {
        table.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 3 else { return nil }
            let state = fields[3]
            guard state != "0A" && state != "07" else { return nil }  // LISTEN, CLOSE
            let local = decodeProcAddress(fields[1])
            let remote = decodeProcAddress(fields[2])
            if state == "01" && remote.hasPrefix(host + ":") { return nil }
            return ("\(local) -> \(remote)", state != "01" && state != "02" && state != "03")
        }
    }

    /// `0100007F:1F90` → `127.0.0.1:8080` (IPv4; IPv6 is shown as it is).
    static func decodeProcAddress(_ field: Substring) -> String {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1], radix: 16) else { return String(field) }
        // IPv4, or IPv4 mapped into IPv6 (the last 32 bits after ::ffff).
        let hex = parts[0].count == 32 && parts[0].hasPrefix("0000000000000000FFFF0000") ? parts[0].suffix(8) : parts[0]
        guard hex.count == 8, let raw = UInt32(hex, radix: 16) else { return "[\(parts[0])]:\(port)" }
        return "\(raw & 0xFF).\(raw >> 8 & 0xFF).\(raw >> 16 & 0xFF).\(raw >> 24):\(port)"
    }

    /// The sandbox's memory use from its cgroup, if known.
    static func memoryUsage(_ id: String) -> Int64? {
        guard let bytes = try? Descriptor.readFile("/sys/fs/cgroup/memory/sprout/\(id)/memory.usage_in_bytes", limit: 64) else { return nil }
        return Int64(String(decoding: bytes, as: UTF8.self).trimmed)
    }

    /// Checkpoints the sandbox into `directory` (its container ends).
    func checkpoint(_ record: SandboxRecord, into directory: String) async throws {
        let runtime = self.runtime
        let rootfs = rootfs(record.id, layers: [])
        let slot = NetworkSlot(index: record.slot ?? 0)
        try await onThread {
            SandboxNetwork.closeConnections(to: slot)
            // Let the sandbox's side of those connections finish closing.
            usleep(30_000)
            try runtime.checkpoint(id: record.id, rootfs: rootfs, imageDirectory: directory)
        }
    }

    /// Checkpoints the sandbox and stores its image in the chunk store.
    func checkpointIntoStore(_ record: SandboxRecord) async throws -> ImageStore.Stored {
        let imageDirectory = directory(record.id) + "/image"
        try await checkpoint(record, into: imageDirectory)
        let images = self.images
        return try await onThread {
            defer { try? FileSystem.removeTree(imageDirectory) }
            return try images.store(file: imageDirectory + "/checkpoint.img")
        }
    }

    /// gVisor ends a sandbox whose save failed: start it again from its
    /// files (the writable layer is intact) so it stays usable, and record why.
    func recoverFromFailedCheckpoint(_ record: inout SandboxRecord, error: Error) async throws {
        let id = record.id
        logger.withSandbox(id).error("checkpoint failed; restarting from files", metadata: ["error": "\(error)"])
        metrics.runtimeError(operation: "checkpoint")
        let env = try resolveEnv(record.env, team: record.team)
        let lowers = try await lowerDirectories(env)
        let slot = NetworkSlot(index: record.slot ?? 0)
        let launch = try makeLaunch(record: record, slot: slot, layers: lowers)
        let network = self.network
        let runtime = self.runtime
        do {
            try await onThread {
                try? FileSystem.removeTree(launch.rootfs.directory + "/image")
                try network.restoreAddresses(sandboxID: id, slot: slot)
                try runtime.start(launch)
            }
            record.state = .running
            record.error = "pause failed (\(error.sentence)); restarted from its files, processes were lost"
            try await save(record)
        } catch {
            logger.withSandbox(id).error("restart after a failed checkpoint failed", metadata: ["error": "\(error)"])
            _ = try? await kill(record, reason: "failed checkpoint")
        }
        publishStateCounts()
    }

    // MARK: Resume

    public func resume(_ id: String, for identity: Identity) async throws -> API.Sandbox {
        let record = try record(id, for: identity)
        try requireMemorySnapshots()
        guard record.state == .paused else {
            throw SproutError(.conflict, "sandbox \(id) is \(record.state.rawValue); only a paused sandbox can be resumed")
        }
        return try await resume(record).api(images: images)
    }

    func resume(_ current: SandboxRecord) async throws -> SandboxRecord {
        var record = current
        let id = record.id
        guard let image = record.imageList.last else {
            throw SproutError(.internal, "sandbox \(id) is paused but has no memory image")
        }
        let started = monotonicSeconds()
        record.state = try record.state.transition(to: .resuming, id: id)
        try await save(record)
        var phases = ""
        do {
            let env = try resolveEnv(record.env, team: record.team)
            let lowers = try await lowerDirectories(env)
            let slot = NetworkSlot(index: record.slot ?? 0)
            let launch = try makeLaunch(record: record, slot: slot, layers: lowers)
            let images = self.images
            let network = self.network
            let runtime = self.runtime
            let imageDirectory = directory(id) + "/image"
            let internet = record.internet
            let egress = record.egressList
            phases = try await onThread {
                defer { try? FileSystem.removeTree(imageDirectory) }
                let t0 = monotonicSeconds()
                try FileSystem.makeDirectories(imageDirectory, mode: 0o700)
                try images.materialize(image, to: imageDirectory + "/checkpoint.img")
                let t1 = monotonicSeconds()
                if FileSystem.exists(network.namespacePath(id)) {
                    try network.restoreAddresses(sandboxID: id, slot: slot)
                } else {
                    // /run is empty after a host reboot: make the namespace again.
                    try network.create(sandboxID: id, slot: slot, internet: internet, egress: egress)
                }
                let t2 = monotonicSeconds()
                try runtime.restore(launch, imageDirectory: imageDirectory)
                let t3 = monotonicSeconds()
                return String(format: "image %.1f ms, network %.1f ms, runtime %.1f ms", (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000)
            }
            let t = monotonicSeconds()
            try await waitForAgent(record)
            phases += String(format: ", agent %.1f ms", (monotonicSeconds() - t) * 1000)
        } catch {
            logger.withSandbox(id).error("resume failed; still paused", metadata: ["error": "\(error)"])
            metrics.runtimeError(operation: "restore")
            record.state = .paused
            record.error = "resume failed: \(error.sentence)"
            await removeContainer(id)
            try? await save(record)
            publishStateCounts()
            throw SproutError(.unavailable, "cannot resume sandbox \(id): \(error.sentence); it stays paused and its files are intact")
        }
        record.state = try record.state.transition(to: .running, id: id)
        record.expiresAt = now() + (record.remainingSeconds ?? Double(settings.defaultTimeoutSeconds))
        record.remainingSeconds = nil
        record.autoResume = false
        record.error = nil
        try await save(record)
        metrics.memoryOperation("resume", seconds: monotonicSeconds() - started)
        publishStateCounts()
        clockCheckLater(record)
        logger.withSandbox(id).info("resumed", metadata: ["seconds": "\(String(format: "%.3f", monotonicSeconds() - started))", "phases": "\(phases)"])
        return record
    }

    /// Stops and deletes a container whose restore went wrong, keeping the
    /// sandbox's files, network and address.
    func removeContainer(_ id: String) async {
        let runtime = self.runtime
        let rootfs = rootfs(id, layers: [])
        _ = try? await onThread { runtime.destroy(id: id, rootfs: rootfs) }
    }

    /// Waits until a restored sandbox's agent answers (it was already
    /// listening when the image was taken).
    func waitForAgent(_ record: SandboxRecord) async throws {
        var client = record.agentClient
        client.connectTimeoutSeconds = 1
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

    /// Checks the clock off the request's path (a process start in gVisor costs ≈ 10 ms).
    nonisolated func clockCheckLater(_ record: SandboxRecord) {
        Task { await self.correctClock(record) }
    }

    /// After a restore the sandbox's wall clock must match the host's. gVisor
    /// reads the host's clock, so it does; if it ever does not (another
    /// runtime, an old image), set it through the agent.
    func correctClock(_ record: SandboxRecord) async {
        let client = record.agentClient
        guard let bytes = try? await client.run(ProcessSpec(cmd: ["date", "+%s.%N"])).stdout,
            let inside = Double(String(decoding: bytes, as: UTF8.self).trimmed)
        else { return }
        let skew = inside - now()
        metrics.clockSkew(skew)
        guard abs(skew) > 1 else { return }
        logger.withSandbox(record.id).warning("clock off after restore; setting it", metadata: ["skew": "\(skew)"])
        try? await client.setClock(unixNanos: Int64(now() * 1e9))
    }

    // MARK: Live fork

    public func fork(_ id: String, count: Int, for identity: Identity) async throws -> [API.Sandbox] {
        guard count >= 1 && count <= Self.maxForks else {
            throw SproutError(.invalidArgument, "count must be between 1 and \(Self.maxForks), got \(count)")
        }
        var source = try await checkpointable(id, for: identity, verb: "forked")
        let started = monotonicSeconds()
        let env = try resolveEnv(source.env, team: source.team)
        let lowers = try await lowerDirectories(env)
        source.state = try source.state.transition(to: .pausing, id: id)
        try await save(source)
        let imageDirectory = "\(sandboxesDirectory)/.fork-\(Identifiers.random(length: 10))"
        defer { try? FileSystem.removeTree(imageDirectory) }
        do {
            try await checkpoint(source, into: imageDirectory)
        } catch {
            try await recoverFromFailedCheckpoint(&source, error: error)
            throw SproutError(.internal, "cannot fork sandbox \(id): \(error.sentence); it was restarted from its files (its processes were lost)")
        }

        // The forks' records and writable layers, copied while the source is stopped.
        createsInFlight += 1
        defer { createsInFlight -= 1 }
        var forks: [(SandboxRecord, NetworkSlot)] = []
        var failure: Error?
        for _ in 0..<count {
            let forkID = Identifiers.make(prefix: "sbx", length: 16)
            do {
                let slot = try pool.allocate(owner: slotOwner(forkID))
                var fork = source
                fork.id = forkID
                fork.state = .creating
                fork.createdAt = now()
                fork.slot = slot.index
                fork.images = nil
                fork.error = nil
                try await catalog.db.write { [fork] in try fork.insert($0) }
                forks.append((fork, slot))
            } catch {
                failure = error
                break
            }
        }
        let sourceUpper = directory(id) + "/upper"
        let copies = forks.map { ($0.0.id, $0.1) }
        let sandboxesDirectory = self.sandboxesDirectory
        let preload = settings.statxShim.map { _ in Self.statxShimPath }
        if failure == nil {
            do {
                try await onThread {
                    for (forkID, slot) in copies {
                        let dir = "\(sandboxesDirectory)/\(forkID)"
                        try FileSystem.makeDirectories(dir, mode: 0o700)
                        // cp -a keeps timestamps, whiteouts and opaque-dir xattrs: the image expects the files as they were.
                        try HostCommand.run(["cp", "-a", "--reflink=auto", sourceUpper, dir + "/upper"])
                        try Self.writeIdentityFiles(directory: dir, id: forkID, slot: slot, preload: preload)
                    }
                }
            } catch {
                failure = error
            }
        }

        // The source and the forks restore together, the source first in line
        // (it was running a moment ago), `restoreWidth` at a time.
        var made: [SandboxRecord] = []
        let pending = (failure == nil ? forks.map(\.0) : [])
        let results = await withTaskGroup(of: (SandboxRecord, Error?).self) { group in
            var results: [(SandboxRecord, Error?)] = []
            group.addTask { [source] in (source, await self.restoreFromImage(source, layers: lowers, imageDirectory: imageDirectory, newNetwork: false)) }
            var next = 0
            var running = 1
            while running > 0 {
                while next < pending.count && running < Self.restoreWidth {
                    let fork = pending[next]
                    next += 1
                    running += 1
                    group.addTask { (fork, await self.restoreFromImage(fork, layers: lowers, imageDirectory: imageDirectory, newNetwork: true)) }
                }
                if let result = await group.next() {
                    results.append(result)
                    running -= 1
                }
            }
            return results
        }
        if let error = results.first(where: { $0.0.id == id })?.1 {
            logger.withSandbox(id).error("restoring the fork source failed", metadata: ["error": "\(error)"])
            try? await recoverFromFailedCheckpoint(&source, error: error)
        } else {
            source.state = try source.state.transition(to: .running, id: id)
            try await save(source)
            clockCheckLater(source)
        }
        if failure == nil {
            for (fork, error) in results where fork.id != id {
                if let error {
                    failure = failure ?? error
                    continue
                }
                var running = fork
                running.state = try running.state.transition(to: .running, id: running.id)
                running.createdAt = now()
                try await save(running)
                made.append(running)
            }
        }
        // Roll back every fork that did not start.
        for (fork, slot) in forks where !made.contains(where: { $0.id == fork.id }) {
            await removeHostResources(id: fork.id, slot: slot)
            let catalog = self.catalog
            await Task.detached { _ = try? await catalog.db.write { try SandboxRecord.deleteOne($0, key: fork.id) } }.value
        }
        publishStateCounts()
        if let failure, made.count < count {
            for fork in made { _ = try? await kill(fork, reason: "fork failed") }
            throw SproutError(.internal, "cannot fork sandbox \(id): \(failure.sentence)")
        }
        metrics.memoryOperation("fork", seconds: monotonicSeconds() - started)
        logger.withSandbox(id).info("forked", metadata: [
            "count": "\(count)", "seconds": "\(String(format: "%.3f", monotonicSeconds() - started))",
        ])
        let order = forks.map(\.0.id)
        return made.sorted { order.firstIndex(of: $0.id)! < order.firstIndex(of: $1.id)! }.map { $0.api(images: images) }
    }

    /// Restores `record`'s container from the image in `imageDirectory`:
    /// `newNetwork` makes its namespace and veth first (a fork, a warm
    /// start), else its stripped addresses are put back (its own image).
    func restoreFromImage(_ record: SandboxRecord, layers: [String], imageDirectory: String, newNetwork: Bool) async -> Error? {
        let slot = NetworkSlot(index: record.slot ?? 0)
        let network = self.network
        let runtime = self.runtime
        do {
            let launch = try makeLaunch(record: record, slot: slot, layers: layers)
            try await onThread {
                if newNetwork {
                    try network.create(sandboxID: record.id, slot: slot, internet: record.internet, egress: record.egressList)
                } else {
                    try network.restoreAddresses(sandboxID: record.id, slot: slot)
                }
                try runtime.restore(launch, imageDirectory: imageDirectory)
            }
            try await waitForAgent(record)
            return nil
        } catch {
            return error
        }
    }

    // MARK: Warm envs

    /// Where a warm env's image is kept reassembled, ready for `runsc restore`.
    func materializedImage(_ image: String) async throws -> String {
        let directory = "\(settings.dataDirectory)/images/ready/\(image)"
        let images = self.images
        try await onThread {
            guard !FileSystem.exists(directory + "/checkpoint.img") else { return }
            try FileSystem.makeDirectories(directory, mode: 0o700)
            try images.materialize(image, to: directory + "/checkpoint.img")
        }
        return directory
    }

    /// Checkpoints a build's start sandbox once `ready` passed: its image
    /// and the layer of what `start` wrote make the env warm.
    func captureWarmStart(_ sandbox: SandboxRecord) async throws -> (layer: String, bytes: Int64, image: ImageStore.Stored) {
        try await checkBeforeCheckpoint(sandbox)
        let imageDirectory = directory(sandbox.id) + "/image"
        try await checkpoint(sandbox, into: imageDirectory)
        let store = layers
        let images = self.images
        let upper = directory(sandbox.id) + "/upper"
        return try await onThread {
            defer { try? FileSystem.removeTree(imageDirectory) }
            // Timestamps kept: the restored processes expect the files as they were.
            let frozen = try store.freeze(upper: upper, excluding: Self.identityFiles, keepTimes: true)
            let image = try images.store(file: imageDirectory + "/checkpoint.img")
            return (frozen.digest, frozen.addedBytes, image)
        }
    }

    // MARK: Bookkeeping

    func save(_ record: SandboxRecord) async throws {
        try await catalog.db.write { [record] in try record.update($0) }
    }

    /// Drops every stored image no sandbox and no env refers to.
    func collectImages() async {
        let referenced = (try? await catalog.db.read { db -> Set<String> in
            var ids: Set<String> = []
            for text in try String.fetchAll(db, sql: "SELECT images FROM sandbox WHERE images IS NOT NULL AND state != 'killed'") {
                ids.formUnion(SandboxRecord.decodeList(text))
            }
            ids.formUnion(try String.fetchAll(db, sql: "SELECT memoryImage FROM env WHERE memoryImage IS NOT NULL"))
            return ids
        }) ?? nil
        guard let referenced else { return }
        let images = self.images
        let ready = settings.dataDirectory + "/images/ready"
        _ = try? await onThread {
            images.collect(keep: referenced)
            for name in (try? FileSystem.children(ready)) ?? [] where !referenced.contains(name) {
                try? FileSystem.removeTree("\(ready)/\(name)")
            }
        }
    }

    /// The overlay lower directories of an env: its (squashed) layers, then the base.
    func lowerDirectories(_ env: ResolvedEnv) async throws -> [String] {
        let bases = self.bases
        let baseName = env.base
        let logger = self.logger
        let baseLayer = try await onThread {
            try bases.ensure(baseName) { line in logger.info("\(line)", metadata: ["env": "\(baseName)"]) }
        }
        let store = self.layers
        let chain = env.layers
        let mountable = try await onThread { try store.mountable(chain) }
        return mountable.reversed().map { store.path($0) } + [baseLayer]
    }
}

extension SandboxRecord {
    func api(images store: ImageStore) -> API.Sandbox {
        var api = self.api
        let list = imageList
        if !list.isEmpty {
            let usage = store.usage(list)
            api.memory = API.MemoryImages(count: list.count, logicalBytes: usage.logical, storedBytes: usage.stored)
        }
        return api
    }
}
