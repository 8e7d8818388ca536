import Crypto
import Foundation
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutRegistry
import SproutRuntime
import SproutStore
import SproutSystem
import SproutBlocking

/// One build, from its first step to its final status. Holds leases on the
/// layer and image stores throughout, so nothing it makes is swept before
/// an env names it (or the build discards it).
struct BuildRun: Sendable {
    let lifecycle: SandboxLifecycle
    let job: BuildJob
    let log: BuildLog

    struct Failure: Error {
        var step: String
        var exitCode: Int?
        var message: String
    }

    /// What the steps made, for the env or for discarding.
    struct Progress: Sendable {
        var chain: [String]
        var made: [String] = []
        var added: Int64 = 0
        var cached = 0
        var warnings: [String] = []
        var warm: (image: String, token: String)?
        /// What later steps and the env's processes get (`ENV`, `WORKDIR`, `USER` change it).
        var process: API.ProcessDefaults
    }

    func run() async {
        let collector = lifecycle.collector
        let outcome: Result<Progress, Error> = await collector.leasing(.layers) {
            await collector.leasing(.images) {
                let progress = Locked(Progress(chain: job.from.layers, process: job.process))
                do {
                    try await steps(progress)
                    try await publish(progress.current)
                    return .success(progress.current)
                } catch {
                    // What was made is discarded while the leases are still held.
                    await discard(progress.current.made)
                    return .failure(error)
                }
            }
        }
        await finish(outcome)
    }

    private func steps(_ progress: Locked<Progress>) async throws {
        if let image = job.pull {
            let layers = try await pull(image)
            progress.withLock { $0.chain = layers }
        }
        var key = "env \(job.from.id)"
        if let steps = job.request.steps {
            for (index, step) in steps.enumerated() { key = try await instruction(step, number: index + 1, below: key, progress) }
        } else {
            try await runAndFiles(key: key, progress)
        }
        if let start = job.request.start {
            log.line("step start: \(start) (ready: \(job.request.ready ?? "when started"))")
            if let captured = try await checkStart(chain: progress.current.chain, command: start, process: progress.current.process) {
                progress.withLock {
                    $0.chain.append(captured.layer)
                    $0.made.append(captured.layer)
                    $0.added += captured.bytes
                    $0.warm = (captured.image.id, captured.token)
                }
                log.line("memory image taken (\(captured.image.size >> 10) KiB, \(captured.image.newBytes >> 10) KiB new): sandboxes of this env start with start already running")
            }
        }
    }

    /// A `sprout.toml` build: its `run` steps, then the files layer (/code).
    private func runAndFiles(key start: String, _ progress: Locked<Progress>) async throws {
        var key = start
        for (index, command) in job.request.run.enumerated() {
            key = Self.stepKey(key, "run \(command)")
            let label = "run[\(index + 1)]: \(command)"
            if let layer = try await cachedLayer(key) {
                log.line("step \(label) (cached)")
                progress.withLock { $0.chain.append(layer); $0.cached += 1 }
                continue
            }
            log.line("step \(label)")
            let log = self.log
            // As the env's processes run: its variables, workdir and user (an image's, a Dockerfile's).
            let process = progress.current.process
            let env = job.environment(lifecycle.settings, process)
            let (layer, bytes) = try await step(chain: progress.current.chain, label: label) { agent in
                try await Self.runLogged(agent, ProcessSpec(shell: command, cwd: process.workdir ?? "/", env: env, user: process.user), log: log)
            }
            try await lifecycle.catalog.envs.rememberLayer(key, layer)
            progress.withLock { $0.chain.append(layer); $0.made.append(layer); $0.added += bytes }
        }
        let lock = job.request.lock ?? [:]
        key = Self.stepKey(key, "files " + job.files.map { "\($0.path) \($0.mode) \($0.sha256)" }.joined(separator: ";")
            + " lock " + lock.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ";"))
        if let layer = try await cachedLayer(key) {
            log.line("step files: \(job.files.count) file(s) (cached)")
            progress.withLock { $0.chain.append(layer); $0.cached += 1 }
        } else if job.files.isEmpty, lock.isEmpty, let code = codeDirectory(in: progress.current.chain) {
            // No files to write or delete: the step would only make /code, which needs no sandbox.
            if code {
                log.line("step files: no files (/code is there)")
            } else {
                log.line("step files: no files (makes /code)")
                let (layer, bytes) = try await lifecycle.stores.layers.directoriesLayer(["code"])
                try await lifecycle.catalog.envs.rememberLayer(key, layer)
                progress.withLock { $0.chain.append(layer); $0.made.append(layer); $0.added += bytes }
            }
        } else {
            log.line("step files: \(job.files.count) file(s) to /code")
            let blobs = lifecycle.stores.blobs
            let files = job.files
            let warnings = Locked<[String]>([])
            let (layer, bytes) = try await step(chain: progress.current.chain, label: "files") { agent in
                let plan = try await FilePlan.make(files, lock: lock, agent: agent)
                for path in plan.delete { try await agent.remove("/code/" + path) }
                for file in plan.write {
                    try await agent.upload(localPath: blobs.path(file.sha256), to: "/code/" + file.path, mode: file.mode)
                }
                warnings.withLock { $0 = plan.warnings }
                return 0
            }
            for warning in warnings.current { log.line("warning: \(warning)") }
            try await lifecycle.catalog.envs.rememberLayer(key, layer)
            progress.withLock { $0.chain.append(layer); $0.made.append(layer); $0.added += bytes; $0.warnings = warnings.current }
        }
    }

    /// Whether `chain` (its layers from the top, then the build's base)
    /// holds /code as a directory; nil when that is not plain to see (a
    /// file or a link there): a sandbox's `mkdir -p` then decides.
    func codeDirectory(in chain: [String]) -> Bool? {
        let roots = chain.reversed().map(lifecycle.stores.layers.path) + [lifecycle.host.bases.path(job.from.base)]
        for root in roots {
            var st = stat()
            if lstat(root + "/code", &st) == 0 {
                switch st.st_mode & S_IFMT {
                case S_IFDIR: return true
                case S_IFCHR where st.st_rdev == 0: return false  // a whiteout
                default: return nil
                }
            }
            guard errno == ENOENT else { return nil }
            if LayerDigest.isOpaque(root) { return false }
        }
        return false
    }

    /// Makes the env of the image the build starts from; its layers.
    private func pull(_ image: RegistryClient.Image) async throws -> [String] {
        log.line("step pull: \(image.reference) (\(image.layers.count) layer(s))")
        let images = ImageEnvs(lifecycle: lifecycle)
        let (log, team, disk) = (self.log, job.team, job.limits.diskMB)
        do {
            let env = try await images.withClient { client in
                try await images.pull(image, client: client, team: team, diskLimitMB: disk) { log.line("  \($0)") }
            }
            log.line("  image env \(env.id)")
            return env.layers
        } catch {
            throw Failure(step: "pull", exitCode: nil, message: error.sentence)
        }
    }

    /// Records the env (the leases are still held, so its layers and image are safe).
    private func publish(_ progress: Progress) async throws {
        let total = try await lifecycle.graph.chainBytes(job.from) + progress.added
        let draft = job.request.draft == true
        let env = EnvRecord(
            id: job.envID, name: job.request.id, parent: job.parent, team: job.team, base: job.from.base,
            layers: progress.chain, createdAt: lifecycle.clock.now, ownBytes: progress.added, published: !draft,
            publishedAt: draft ? nil : lifecycle.clock.now, totalBytes: total, memoryImage: progress.warm?.image, memoryToken: progress.warm?.token,
            start: job.request.start, ready: job.request.ready, startTimeout: job.request.timeoutSeconds, volumes: job.request.volumes,
            process: progress.process.isEmpty ? nil : progress.process)
        _ = try await lifecycle.recordEnv(env)
        log.line("built \(job.envID) (\(progress.cached) of \(job.build.steps) step(s) cached)")
    }

    /// The build's final status, recorded even when its task was cancelled
    /// (a cancelled task's GRDB calls throw, so this runs detached).
    private func finish(_ outcome: Result<Progress, Error>) async {
        let builds = lifecycle.catalog.builds
        let id = job.build.id
        let cancelled = Task.isCancelled
        let log = self.log
        let logger = lifecycle.logger
        let envID = job.envID
        await Task.detached {
            let current = try? await builds.find(id)
            switch outcome {
            case .success(let progress):
                let event: BuildMachine.Event = current?.status == .cancelling ? .stopped : .succeeded
                _ = try? await builds.transition(id, event) { record in
                    record.cachedSteps = progress.cached
                    record.warnings = progress.warnings.isEmpty ? nil : progress.warnings
                }
            case .failure(let failure as Failure):
                log.line("failed at \(failure.step): \(failure.message)")
                _ = try? await builds.transition(id, cancelled ? .stopped : .failed) { record in
                    record.failedStep = failure.step
                    record.exitCode = failure.exitCode
                    record.error = failure.message
                }
            case .failure(let error):
                let message = cancelled || current?.status == .cancelling ? "cancelled" : error.sentence
                log.line("\(cancelled ? "cancelled" : "failed"): \(message)")
                _ = try? await builds.transition(id, cancelled ? .stopped : .failed) { $0.error = message }
            }
            let final = try? await builds.find(id)
            logger.info("build \(final?.status.rawValue ?? "?")", metadata: ["build": "\(id)", "env": "\(envID)"])
        }.value
    }

    /// Removes the layers a failed or cancelled build made (and their cache
    /// entries), unless an env has come to use them meanwhile.
    private func discard(_ made: [String]) async {
        guard !made.isEmpty else { return }
        let lifecycle = self.lifecycle
        await Task.detached {
            let used = (try? await lifecycle.catalog.envs.referencedLayers()) ?? Set(made)
            let unused = made.filter { !used.contains($0) }
            try? await lifecycle.catalog.envs.forgetLayers(unused)
            let layers = lifecycle.stores.layers
            _ = try? await onThread { for layer in unused { try? FileSystem.removeTree(layers.path(layer)) } }
        }.value
    }

    static func stepKey(_ below: String, _ step: String) -> String {
        var hasher = SHA256()
        hasher.update(data: Data("\(below)\n\(step)".utf8))
        return hexString(hasher.finalize())
    }

    func cachedLayer(_ key: String) async throws -> String? {
        guard let layer = try await lifecycle.catalog.envs.cachedLayer(key), lifecycle.stores.layers.contains(layer) else { return nil }
        return layer
    }
}
