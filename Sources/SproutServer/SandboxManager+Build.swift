import Crypto
import Foundation
import GRDB
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem

/// `env push`: an env built from a config and files, step by step, each step
/// cached by the layer below it and what it does.
///
/// The chain is: the `from` env, then one layer per `run` step (in order),
/// then the files layer (`/code` holds exactly the pushed files), then `start`
/// is run and `ready` awaited to prove the env starts. Files come after the
/// steps so that editing code rebuilds only the files layer; `run` steps see
/// the parent env, not `/code`. Every step runs in a build sandbox of its own
/// (no team, killed afterwards) under the config's CPU and memory limits.
extension SandboxManager {
    static let defaultStepTimeoutSeconds = 900

    var buildsDirectory: String { settings.dataDirectory + "/builds" }
    func buildLogPath(_ id: String) -> String { "\(buildsDirectory)/\(id).log" }

    /// Starts building `request` (or answers with the env at once if this exact
    /// env exists: an unchanged push builds nothing).
    public func push(_ original: API.Push, for identity: Identity) async throws -> API.PushResult {
        var request = original
        try Self.validateEnvName(request.id)
        let limits = try validate(API.CreateSandbox(env: request.from, cpu: request.cpu, memoryMB: request.memoryMB))
        guard request.run.count <= 100, request.run.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 65536 }) else {
            throw SproutError(.invalidArgument, "at most 100 run steps, each a non-empty command")
        }
        if request.ready != nil && request.start == nil { throw SproutError(.invalidArgument, "ready needs start") }
        if let t = request.timeoutSeconds, !(1...86_400).contains(t) {
            throw SproutError(.invalidArgument, "timeoutSeconds must be 1-86400")
        }
        if let ready = request.ready, ready.hasPrefix("port:"), UInt16(ready.dropFirst(5)).map({ $0 > 0 }) != true {
            throw SproutError(.invalidArgument, "ready must be port:1-65535 or a command")
        }
        let from = try resolveEnv(request.from, for: identity)
        try await checkFiles(request.files, team: identity.team)

        let files = request.files.sorted { $0.path < $1.path }
        // Only lock entries that can change the outcome count (for the id and
        // the cache): a file pushed again with the bytes the lock names acts
        // exactly as if it had no entry. So an unchanged repo keeps its env id.
        var pushed: [String: String] = [:]
        for file in files { pushed[file.path] = file.sha256 }
        let relevant: [String: String] = (request.lock ?? [:]).filter { entry in pushed[entry.key] != entry.value }
        request.lock = relevant.isEmpty ? nil : relevant
        var hasher = SHA256()
        let normalized = ["from \(from.id)"] + request.run.map { "run \($0)" } + files.map { "file \($0.path) \(String($0.mode, radix: 8)) \($0.sha256)" }
            + ["start \(request.start ?? "")", "ready \(request.ready ?? "")", "cpu \(limits.cpu)", "memory \(limits.memoryMB)"]
            + (request.timeoutSeconds.map { ["timeout \($0)"] } ?? [])
            + (request.lock ?? [:]).sorted { $0.key < $1.key }.map { "lock \($0.key) \($0.value)" }
        hasher.update(data: Data(normalized.joined(separator: "\n").utf8))
        let envID = "\(request.id)-\(hexString(hasher.finalize()).prefix(8))"
        if let existing = try await catalog.db.read({ try EnvRecord.fetchOne($0, key: envID) }), existing.team == identity.team {
            // Unchanged: nothing to build; a non-draft push publishes it again.
            let env = request.draft == true || existing.published ? existing.api : try await setPublished(envID, true, for: identity)
            return API.PushResult(envID: envID, env: env, build: nil)
        }
        // The history parent: the previous push of this name, else the env it builds on.
        let name = request.id
        let previous = try await catalog.db.read { db in
            try EnvRecord.filter(Column("name") == name && Column("team") == identity.team).order(Column("createdAt").desc).fetchOne(db)
        }
        let build = BuildRecord(
            id: Identifiers.make(prefix: "bld", length: 12), team: identity.team, envID: envID, status: "running",
            failedStep: nil, exitCode: nil, error: nil, createdAt: now(), finishedAt: nil,
            steps: request.run.count + 1 + (request.start == nil ? 0 : 1), cachedSteps: 0, warnings: nil)
        try FileSystem.makeDirectories(buildsDirectory, mode: 0o700)
        try FileSystem.writeAtomically(buildLogPath(build.id), "build \(build.id) of \(envID) from \(from.id)\n")
        try await catalog.db.write { [build] in try build.insert($0) }
        let job = BuildJob(
            build: build, request: request, files: files, from: from, envID: envID, parent: previous?.id ?? from.id,
            team: identity.team, limits: limits)
        buildTasks[build.id] = Task { await self.runBuild(job) }
        return API.PushResult(envID: envID, env: nil, build: build.api)
    }

    struct BuildJob: Sendable {
        var build: BuildRecord
        var request: API.Push
        var files: [API.Push.File]
        var from: ResolvedEnv
        var envID: String
        var parent: String
        var team: String
        var limits: Limits
    }

    func checkFiles(_ files: [API.Push.File], team: String) async throws {
        guard files.count <= 100_000 else { throw SproutError(.tooLarge, "at most 100000 files") }
        var seen = Set<String>()
        for file in files {
            let parts = file.path.split(separator: "/", omittingEmptySubsequences: false)
            guard !file.path.isEmpty, !file.path.hasPrefix("/"), file.path.utf8.count <= 4096, !file.path.contains("\0"),
                parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." })
            else { throw SproutError(.invalidArgument, "bad file path '\(file.path.prefix(200))': relative, no '.' or '..' parts") }
            guard seen.insert(file.path).inserted else { throw SproutError(.invalidArgument, "file '\(file.path)' is listed twice") }
            guard file.mode <= 0o7777 else { throw SproutError(.invalidArgument, "bad mode for '\(file.path)'") }
            guard BlobStore.isDigest(file.sha256) else { throw SproutError(.invalidArgument, "bad sha256 for '\(file.path)'") }
        }
        let digests = Array(Set(files.map(\.sha256)))
        let owned = try await catalog.blobsOwned(by: team)
        if let missing = digests.first(where: { !owned.contains($0) || !blobs.contains($0) }) {
            throw SproutError(.invalidArgument, "blob \(missing) has not been uploaded (POST /v1/blobs/missing tells which)")
        }
    }

    // MARK: Running a build

    func runBuild(_ job: BuildJob) async {
        let log = BuildLog(path: buildLogPath(job.build.id))
        var record = job.build
        var chain = job.from.layers
        var key = "env \(job.from.id)"
        var added: Int64 = 0
        var cached = 0
        var made: [String] = []
        do {
            for (index, command) in job.request.run.enumerated() {
                key = Self.stepKey(key, "run \(command)")
                let label = "run[\(index + 1)]: \(command)"
                if let layer = try await cachedLayer(key) {
                    log.line("step \(label) (cached)")
                    chain.append(layer)
                    cached += 1
                    continue
                }
                log.line("step \(label)")
                let (layer, bytes) = try await buildStep(job, chain: chain, label: label, log: log) { agent in
                    try await Self.runLogged(agent, ProcessSpec(shell: command, cwd: "/"), log: log)
                }
                try await remember(key, layer)
                chain.append(layer)
                made.append(layer)
                added += bytes
            }
            let lock = job.request.lock ?? [:]
            key = Self.stepKey(key, "files " + job.files.map { "\($0.path) \($0.mode) \($0.sha256)" }.joined(separator: ";")
                + " lock " + lock.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ";"))
            if let layer = try await cachedLayer(key) {
                log.line("step files: \(job.files.count) file(s) (cached)")
                chain.append(layer)
                cached += 1
            } else {
                log.line("step files: \(job.files.count) file(s) to /code")
                let blobs = self.blobs
                let warnings = Locked<[String]>([])
                let (layer, bytes) = try await buildStep(job, chain: chain, label: "files", log: log) { agent in
                    let plan = try await Self.planFiles(job.files, lock: lock, agent: agent)
                    for path in plan.delete { try await agent.remove("/code/" + path) }
                    for file in plan.write {
                        try await agent.upload(localPath: blobs.path(file.sha256), to: "/code/" + file.path, mode: file.mode)
                    }
                    warnings.withLock { $0 = plan.warnings }
                    return 0
                }
                for warning in warnings.current { log.line("warning: \(warning)") }
                record.warnings = SandboxRecord.encodeList(warnings.current)
                try await remember(key, layer)
                chain.append(layer)
                made.append(layer)
                added += bytes
            }
            var warm: (image: String, token: String)?
            if let start = job.request.start {
                log.line("step start: \(start) (ready: \(job.request.ready ?? "when started"))")
                if let captured = try await checkStart(job, chain: chain, command: start, log: log) {
                    chain.append(captured.layer)
                    made.append(captured.layer)
                    added += captured.bytes
                    warm = (captured.image.id, captured.token)
                    log.line("memory image taken (\(captured.image.size >> 10) KiB, \(captured.image.newBytes >> 10) KiB new): sandboxes of this env start with start already running")
                }
            }
            let total = try await chainBytes(job.from) + added
            let env = EnvRecord(
                id: job.envID, name: job.request.id, parent: job.parent, team: job.team, base: job.from.base,
                layers: SandboxRecord.encodeList(chain), createdAt: now(), ownBytes: added, published: job.request.draft != true,
            publishedAt: job.request.draft == true ? nil : now(), totalBytes: total, memoryImage: warm?.image, memoryToken: warm?.token)
            try await catalog.db.write { db in
                if try EnvRecord.fetchOne(db, key: env.id) == nil { try env.insert(db) }
            }
            record.status = "succeeded"
            log.line("built \(job.envID) (\(cached) of \(record.steps) step(s) cached)")
        } catch let failure as BuildFailure {
            record.status = "failed"
            record.failedStep = failure.step
            record.exitCode = failure.exitCode
            record.error = failure.message
            log.line("failed at \(failure.step): \(failure.message)")
        } catch {
            record.status = Task.isCancelled ? "cancelled" : "failed"
            record.error = Task.isCancelled ? "cancelled" : "\(error)"
            log.line("\(record.status): \(record.error ?? "")")
        }
        if Task.isCancelled && record.status != "cancelled" && record.status != "succeeded" {
            record.status = "cancelled"
        }
        buildTasks[record.id] = nil
        if record.status != "succeeded" { await discard(made) }
        record.cachedSteps = cached
        record.finishedAt = now()
        // Recorded even when the build was cancelled (a cancelled task's GRDB calls throw).
        let catalog = self.catalog
        let final = record
        await Task.detached { _ = try? await catalog.db.write { try final.update($0) } }.value
        logger.info("build \(record.status)", metadata: ["build": "\(record.id)", "env": "\(job.envID)"])
    }

    /// What the files step does to /code, following the lock (the seeds'
    /// rules): a pushed file is written unless /code holds a version the lock
    /// does not explain (changed in the env: left alone, with a warning); a
    /// file the lock lists that is no longer pushed is deleted, unless it too
    /// changed in the env.
    struct FilePlan {
        var write: [API.Push.File] = []
        var delete: [String] = []
        var warnings: [String] = []
    }

    static func planFiles(_ files: [API.Push.File], lock: [String: String], agent: AgentClient) async throws -> FilePlan {
        let listing = try await agent.run(ProcessSpec(shell: "mkdir -p /code && cd /code && find . -type f -exec sha256sum {} +"))
        var remote: [String: String] = [:]
        for line in listing.stdoutText.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2 else { continue }
            var path = String(parts[1]).trimmingCharacters(in: .whitespaces)
            if path.hasPrefix("./") { path.removeFirst(2) }
            remote[path] = String(parts[0])
        }
        var plan = FilePlan()
        let pushed = Set(files.map(\.path))
        for file in files {
            switch (remote[file.path], lock[file.path]) {
            case (nil, _): plan.write.append(file)
            case (let now?, _) where now == file.sha256: plan.write.append(file)  // same bytes; mode may differ
            case (let now?, let last?) where now == last: plan.write.append(file)
            default: plan.warnings.append("/code/\(file.path) changed in the env since the last push; left alone")
            }
        }
        for (path, last) in lock.sorted(by: { $0.key < $1.key }) where !pushed.contains(path) {
            guard let now = remote[path] else { continue }
            if now == last {
                plan.delete.append(path)
            } else {
                plan.warnings.append("/code/\(path) was deleted locally but changed in the env; left alone")
            }
        }
        return plan
    }

    /// Removes the layers a failed or cancelled build made (and their cache
    /// entries), unless an env has come to use them meanwhile.
    func discard(_ made: [String]) async {
        guard !made.isEmpty else { return }
        let catalog = self.catalog
        let store = self.layers
        await Task.detached {
            let used = Set(((try? await catalog.db.read { db in try EnvRecord.fetchAll(db) }) ?? []).flatMap(\.layerList))
            let unused = made.filter { !used.contains($0) }
            _ = try? await catalog.db.write { db in
                for layer in unused { try db.execute(sql: "DELETE FROM stepCache WHERE layer = ?", arguments: [layer]) }
            }
            for layer in unused { try? FileSystem.removeTree(store.path(layer)) }
        }.value
    }

    struct BuildFailure: Error {
        var step: String
        var exitCode: Int?
        var message: String
    }

    static func stepKey(_ below: String, _ step: String) -> String {
        var hasher = SHA256()
        hasher.update(data: Data("\(below)\n\(step)".utf8))
        return hexString(hasher.finalize())
    }

    func cachedLayer(_ key: String) async throws -> String? {
        let layer = try await catalog.db.read { db in try String.fetchOne(db, sql: "SELECT layer FROM stepCache WHERE key = ?", arguments: [key]) }
        guard let layer, layers.contains(layer) else { return nil }
        return layer
    }

    func remember(_ key: String, _ layer: String) async throws {
        try await catalog.db.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO stepCache (key, layer) VALUES (?, ?)", arguments: [key, layer])
        }
    }

    /// Runs one step in a build sandbox on `chain` and freezes what it changed.
    func buildStep(
        _ job: BuildJob, chain: [String], label: String, log: BuildLog,
        _ body: @escaping @Sendable (AgentClient) async throws -> Int32
    ) async throws -> (String, Int64) {
        let env = ResolvedEnv(id: "build:\(job.build.id)", base: job.from.base, layers: chain)
        let sandbox = try await start(env: env, team: "", limits: job.limits, internet: true, metadata: [:], envVars: [:], state: .running)
        defer { Task { _ = try? await self.kill(sandbox, reason: "build step done") } }
        let agent = sandbox.agentClient
        let timeout = job.request.timeoutSeconds ?? Self.defaultStepTimeoutSeconds
        let status = try await withTimeout(Double(timeout)) { try await body(agent) }
        guard let status else {
            throw BuildFailure(step: label, exitCode: nil, message: "timed out after \(timeout) s")
        }
        guard status == 0 else { throw BuildFailure(step: label, exitCode: Int(status), message: "exited with \(status)") }
        _ = try await agent.run(ProcessSpec(cmd: ["sync"]))
        let store = layers
        let upper = directory(sandbox.id) + "/upper"
        let frozen = try await onThread { try store.freeze(upper: upper, excluding: Self.identityFiles) }
        return (frozen.digest, frozen.addedBytes)
    }

    /// Starts `start` in a sandbox on the finished chain and waits for
    /// `ready`. On a runtime with memory snapshots, then checkpoints it: the
    /// layer `start` wrote, the memory image and the agent token in it make
    /// the env warm.
    func checkStart(_ job: BuildJob, chain: [String], command: String, log: BuildLog) async throws
        -> (layer: String, bytes: Int64, image: ImageStore.Stored, token: String)?
    {
        let env = ResolvedEnv(id: "build:\(job.build.id)", base: job.from.base, layers: chain)
        let sandbox = try await start(env: env, team: "", limits: job.limits, internet: true, metadata: [:], envVars: [:], state: .running)
        defer { Task { _ = try? await self.kill(sandbox, reason: "build step done") } }
        let agent = sandbox.agentClient
        let process = try await agent.start(ProcessSpec(shell: command, cwd: "/code", tag: "start"))
        process.close()
        let limit = Double(job.request.timeoutSeconds ?? 60)
        let deadline = monotonicSeconds() + limit
        let address = NetworkSlot(index: sandbox.slot ?? 0).sandboxAddress
        while monotonicSeconds() < deadline {
            if let exit = try await agent.processes().first(where: { $0.id == process.info.id })?.exit {
                throw BuildFailure(step: "start", exitCode: exit.code.map(Int.init), message: "start exited before it was ready")
            }
            var ready: Bool
            switch job.request.ready {
            case nil:
                ready = true
            case let check? where check.hasPrefix("port:"):
                let port = UInt16(check.dropFirst(5)) ?? 0
                ready = (try? await onThread { Socket.answers(host: address, port: port, timeoutSeconds: 1) }) == true
            case let check?:
                ready = try await agent.run(ProcessSpec(shell: check, cwd: "/code")).exit == ProcessExit(code: 0)
            }
            if ready {
                guard runtime.capabilities.memorySnapshot else { return nil }
                do {
                    let captured = try await captureWarmStart(sandbox)
                    return (captured.layer, captured.bytes, captured.image, sandbox.agentToken)
                } catch {
                    throw BuildFailure(step: "start", exitCode: nil, message: "ready, but its memory could not be saved: \(error.sentence)")
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw BuildFailure(step: "start", exitCode: nil, message: "not ready after \(Int(limit)) s (\(job.request.ready ?? ""))")
    }

    static func runLogged(_ agent: AgentClient, _ spec: ProcessSpec, log: BuildLog) async throws -> Int32 {
        let session = try await agent.start(spec)
        defer { session.close() }
        for try await item in session {
            switch item {
            case .stdout(let bytes), .stderr(let bytes): log.append(bytes)
            case .error(let error): log.line("agent: \(error.message)")
            case .exit(let status): return status.code ?? (128 + (status.signal ?? 0))
            }
        }
        throw SproutError(.unavailable, "the step's process stream ended without an exit status")
    }

    /// Cancels a running build: its step is stopped, its sandboxes removed, no env made.
    public func cancelBuild(_ id: String, for identity: Identity) async throws -> API.Build {
        let current = try await build(id, for: identity)
        guard current.status == "running", let task = buildTasks[id] else {
            throw SproutError(.conflict, "build \(id) is \(current.status), not running")
        }
        task.cancel()
        _ = await task.value
        return try await build(id, for: identity)
    }

    public func build(_ id: String, for identity: Identity) async throws -> API.Build {
        guard let record = try await catalog.db.read({ try BuildRecord.fetchOne($0, key: id) }), record.team == identity.team else {
            throw SproutError(.notFound, "no build with id '\(id)'")
        }
        return record.api
    }
}

/// Runs `body`, or gives up (nil) after `seconds`.
func withTimeout<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        let first = try await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

/// A build's log: appended as steps run, streamed to clients.
struct BuildLog: Sendable {
    let path: String

    func append(_ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        try? Descriptor.writeAll(fd, bytes)
        close(fd)
    }

    func line(_ text: String) { append(Array("==> \(text)\n".utf8)) }
}

extension BuildRecord {
    var api: API.Build {
        API.Build(id: id, envID: envID, status: status, failedStep: failedStep, exitCode: exitCode, error: error, steps: steps,
                  cachedSteps: cachedSteps, warnings: warnings.map { SandboxRecord.decodeList($0) })
    }
}
