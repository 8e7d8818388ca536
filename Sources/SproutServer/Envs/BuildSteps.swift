import Foundation
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem
import SproutBlocking

extension BuildRun {
    /// A build sandbox on `chain`: no team (so no API key reaches it), the
    /// config's limits, and a lifetime that outlasts its step's timeout (the
    /// sandboxes' default lifetime, 300 s, is shorter than a long step).
    func startBuildSandbox(chain: [String], base: String? = nil) async throws -> SandboxRecord {
        let env = ResolvedEnv(id: "build:\(job.build.id)", base: base ?? job.from.base, layers: chain)
        var limits = job.limits
        limits.timeout = max(limits.timeout, stepTimeoutSeconds + 300)
        let request = CreateRequest(
            env: env.id, limits: limits, policy: .open, metadata: [:], envVars: [:], fromPool: false)
        return try await lifecycle.start(env: env, team: "", request: request, pooled: false)
    }

    /// How long one step may take.
    var stepTimeoutSeconds: Int { job.request.timeoutSeconds ?? EnvBuilder.defaultStepTimeoutSeconds }

    /// Kills a build sandbox whatever happened (detached: a cancelled build still cleans up).
    func removeBuildSandbox(_ sandbox: SandboxRecord) async {
        let lifecycle = self.lifecycle
        await Task.detached { _ = try? await lifecycle.kill(sandbox.id, reason: "build step done") }.value
    }

    /// Runs one step in a build sandbox on `chain` and freezes what it changed.
    func step(chain: [String], label: String, _ body: @escaping @Sendable (AgentClient) async throws -> Int32) async throws -> (String, Int64) {
        let sandbox = try await startBuildSandbox(chain: chain)
        do {
            let agent = lifecycle.agents.client(sandbox)
            let timeout = stepTimeoutSeconds
            let status = try await withTimeout(Double(timeout)) { try await body(agent) }
            guard let status else { throw Failure(step: label, exitCode: nil, message: "timed out after \(timeout) s") }
            guard status == 0 else { throw Failure(step: label, exitCode: Int(status), message: "exited with \(status)") }
            _ = try await agent.run(.sync)
            let frozen = try await lifecycle.stores.layers.freeze(upper: lifecycle.settings.directory(sandbox.id) + "/upper", excluding: SandboxLauncher.identityFiles)
            await removeBuildSandbox(sandbox)
            return (frozen.digest, frozen.addedBytes)
        } catch {
            await removeBuildSandbox(sandbox)
            throw error
        }
    }

    /// Starts `start` in a sandbox on the finished chain and waits for
    /// `ready`. On a runtime with memory snapshots, then checkpoints it: the
    /// layer `start` wrote, the memory image and the agent token in it make
    /// the env warm.
    func checkStart(chain: [String], command: String, process: API.ProcessDefaults)
        async throws -> (layer: String, bytes: Int64, image: ImageStore.Stored, token: String)?
    {
        let sandbox = try await startBuildSandbox(chain: chain)
        do {
            let captured = try await waitUntilReady(sandbox, command: command, process: process)
            await removeBuildSandbox(sandbox)
            return captured
        } catch {
            await removeBuildSandbox(sandbox)
            throw error
        }
    }

    private func waitUntilReady(_ sandbox: SandboxRecord, command: String, process: API.ProcessDefaults) async throws
        -> (layer: String, bytes: Int64, image: ImageStore.Stored, token: String)?
    {
        let start = EnvStart(command: command, ready: job.request.ready, timeoutSeconds: job.request.timeoutSeconds)
        do {
            try await start.run(agent: lifecycle.agents.client(sandbox), endpoint: lifecycle.network.agentEndpoint(NetworkSlot(index: sandbox.slot ?? 0)),
                                environment: job.environment(lifecycle.settings, process), defaults: process)
        } catch let failure as EnvStart.Failure {
            let code: Int? = if case .exited(let code) = failure { code } else { nil }
            throw Failure(step: "start", exitCode: code, message: "\(failure.sentence) (\(job.request.ready ?? "started"))")
        }
        guard lifecycle.runtime.capabilities.memorySnapshot else { return nil }
        do {
            return try await captureWarmStart(sandbox)
        } catch {
            throw Failure(step: "start", exitCode: nil, message: "ready, but its memory could not be saved: \(error.sentence)")
        }
    }

    /// Checkpoints a build's start sandbox once `ready` passed: its image and
    /// the layer of what `start` wrote (the build holds leases on both stores).
    private func captureWarmStart(_ sandbox: SandboxRecord) async throws -> (layer: String, bytes: Int64, image: ImageStore.Stored, token: String) {
        let checkpoint = lifecycle.checkpoint
        try await checkpoint.preflight(sandbox)
        let imageDirectory = lifecycle.settings.directory(sandbox.id) + "/image"
        try await checkpoint.take(sandbox, into: imageDirectory)
        defer { try? FileSystem.removeTree(imageDirectory) }
        // Timestamps kept: the restored processes expect the files as they were.
        let frozen = try await lifecycle.stores.layers.freeze(
            upper: lifecycle.settings.directory(sandbox.id) + "/upper", excluding: SandboxLauncher.identityFiles, keepTimes: true)
        let images = lifecycle.stores.images
        let image = try await onThread { try images.store(directory: imageDirectory) }
        return (frozen.digest, frozen.addedBytes, image, sandbox.agentToken)
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

    static func make(_ files: [API.Push.File], lock: [String: String], agent: AgentClient) async throws -> FilePlan {
        let listing = try await agent.run(ProcessSpec(shell: "mkdir -p /code && cd /code && find . -type f -exec sha256sum {} +"))
        var remote: [String: String] = [:]
        for line in listing.stdoutText.split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            guard parts.count == 2 else { continue }
            var path = String(parts[1]).trimmingCharacters(in: .whitespaces)
            if path.hasPrefix("./") { path.removeFirst(2) }
            remote[path] = String(parts[0])
        }
        return plan(files, lock: lock, remote: remote)
    }

    /// The plan for pushed `files` against what /code holds (`remote`: path -> sha256).
    static func plan(_ files: [API.Push.File], lock: [String: String], remote: [String: String]) -> FilePlan {
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
