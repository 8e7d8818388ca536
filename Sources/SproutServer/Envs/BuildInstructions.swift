import Foundation
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutStore
import SproutSystem

extension BuildRun {
    /// Runs step `number` of a push's `steps` (a Dockerfile's, a template's)
    /// on the chain so far; returns its cache key, which the next step's
    /// builds on. `run` and `copy` make a layer (cached by the key: the
    /// steps below and this one, as sent); `workdir` makes its directory;
    /// `env` and `user` change only what later steps and the env's processes get.
    func instruction(_ step: API.Push.Step, number: Int, below: String, _ progress: Locked<Progress>) async throws -> String {
        // Forced: a key no earlier build made, so this step and every one after it run again.
        let key = Self.stepKey(below, try Self.cacheText(step) + (step.force == true ? " forced by \(job.build.id)" : ""))
        let label = "\(number): " + (step.source.map { "\($0) " } ?? "") + Self.describe(step)
        var process = progress.current.process
        switch step.kind {
        case .env:
            process.env = (process.env ?? [:]).merging(step.env ?? [:]) { $1 }
            progress.withLock { $0.process = process }
            log.line("step \(label)")
            return key
        case .user:
            guard let user = step.user, !user.isEmpty else { throw Failure(step: label, exitCode: nil, message: "user names no one") }
            process.user = API.ProcessDefaults.nonRoot(user)
            progress.withLock { $0.process = process }
            log.line("step \(label)")
            return key
        case .workdir:
            let path = try Self.absolute(step.path ?? "", in: process.workdir, label: label)
            process.workdir = path
            progress.withLock { $0.process = process }
            let owner = process.user
            try await layerStep(key: key, label: label, progress) { agent in
                try await agent.makeDirectory(path, owner: owner)
                return 0
            }
        case .run:
            guard step.shell?.isEmpty == false || step.argv?.isEmpty == false else {
                throw Failure(step: label, exitCode: nil, message: "run names no command")
            }
            let env = job.environment(lifecycle.settings, process).merging(step.env ?? [:]) { $1 }
            let user = step.user.map(API.ProcessDefaults.nonRoot) ?? process.user
            let spec = ProcessSpec(cmd: step.argv, shell: step.argv == nil ? step.shell : nil, cwd: process.workdir ?? "/", env: env, user: user)
            let log = self.log
            try await layerStep(key: key, label: label, progress) { agent in try await Self.runLogged(agent, spec, log: log) }
        case .copy where step.fromEnv != nil:
            let destination = try Self.absolute(step.destination ?? "", in: process.workdir, label: label)
            let source = try await lifecycle.graph.resolve(step.fromEnv!, team: job.team)
            let (sources, owner, run) = (step.sources ?? [], step.owner, self)
            let intoDirectory = sources.count > 1 || LocalFiles.namesDirectory(step.destination ?? "")
            try await layerStep(key: key, label: label, progress) { agent in
                try await run.copy(sources, from: source, to: destination, intoDirectory: intoDirectory, owner: owner, into: agent, label: label)
                return 0
            }
        case .copy:
            let destination = try Self.absolute(step.destination ?? "", in: process.workdir, label: label)
            let files = step.files ?? []
            let blobs = lifecycle.stores.blobs
            let owner = step.owner
            try await layerStep(key: key, label: label, progress) { agent in
                for file in files {
                    let target = destination == "/" ? "/" + file.path : destination + "/" + file.path
                    try await agent.upload(localPath: blobs.path(file.sha256), to: target, mode: file.mode, owner: owner)
                }
                return 0
            }
        }
        return key
    }

    /// `COPY --from`: `sources` (paths in env `env`) read through a sandbox
    /// of that env and written through `agent`, as Docker copies: a
    /// directory's contents into `destination`, a file into it when it ends
    /// in `/` or there are several sources, else to it. Files and their
    /// modes are copied; symlinks and special files are not.
    func copy(_ sources: [String], from env: ResolvedEnv, to destination: String, intoDirectory: Bool, owner: String?, into agent: AgentClient,
              label: String) async throws {
        let sandbox = try await startBuildSandbox(chain: env.layers, base: env.base)
        let scratch = "\(lifecycle.stores.layers.root)/.copy-\(Identifiers.random(length: 8))"
        do {
            try FileSystem.makeDirectories(scratch, mode: 0o700)
            let from = lifecycle.agents.client(sandbox)
            for source in sources {
                let path = try Self.absolute(source, in: "/", label: label)
                let info: FileInfo
                do { info = try await from.stat(path) } catch {
                    throw Failure(step: label, exitCode: nil, message: "\(source) is not in \(env.id): \(error.sentence)")
                }
                var files: [(FileInfo, String)] = []
                if info.type == .dir {
                    for entry in try await from.list(path, depth: 64) where entry.type == .file {
                        files.append((entry, (destination == "/" ? "" : destination) + "/" + entry.path.dropFirst(path == "/" ? 1 : path.count + 1)))
                    }
                } else {
                    files.append((info, intoDirectory ? (destination == "/" ? "" : destination) + "/" + info.name : destination))
                }
                for (file, target) in files where file.type == .file {
                    let local = scratch + "/file"
                    _ = try await from.download(file.path, to: local)
                    try await agent.upload(localPath: local, to: target, mode: file.mode, owner: owner)
                    unlink(local)
                }
            }
        } catch {
            try? FileSystem.removeTree(scratch)
            await removeBuildSandbox(sandbox)
            throw error
        }
        try? FileSystem.removeTree(scratch)
        await removeBuildSandbox(sandbox)
    }

    /// What a step is to the cache and the env id: the step as sent, without
    /// where it came from (a moved Dockerfile line is the same step).
    static func cacheText(_ step: API.Push.Step) throws -> String {
        var keyed = step
        keyed.source = nil
        return "step " + String(decoding: try JSONEncoder.sorted.encode(keyed), as: UTF8.self)
    }

    /// A step that makes a layer: from the cache, or run in a build sandbox and frozen.
    private func layerStep(key: String, label: String, _ progress: Locked<Progress>,
                           _ body: @escaping @Sendable (AgentClient) async throws -> Int32) async throws {
        if let layer = try await cachedLayer(key) {
            log.line("step \(label) (cached)")
            progress.withLock { $0.chain.append(layer); $0.cached += 1 }
            return
        }
        log.line("step \(label)")
        let (layer, bytes) = try await step(chain: progress.current.chain, label: label, body)
        try await lifecycle.catalog.envs.rememberLayer(key, layer)
        progress.withLock { $0.chain.append(layer); $0.made.append(layer); $0.added += bytes }
    }

    /// `path`, absolute, or relative to `workdir` (or /); `.` and `..` resolved.
    static func absolute(_ path: String, in workdir: String?, label: String) throws -> String {
        guard !path.isEmpty, !path.contains("\0") else { throw Failure(step: label, exitCode: nil, message: "no path given") }
        return resolvedPath(path, in: workdir ?? "/")
    }

    static func describe(_ step: API.Push.Step) -> String {
        switch step.kind {
        case .run: "RUN " + (step.shell ?? step.argv?.joined(separator: " ") ?? "")
        case .copy where step.fromEnv != nil: "COPY --from=\(step.fromEnv!) \((step.sources ?? []).joined(separator: " ")) \(step.destination ?? "?")"
        case .copy: "COPY \(step.files?.count ?? 0) file(s) to \(step.destination ?? "?")" + (step.owner.map { " (owner \($0))" } ?? "")
        case .env: "ENV " + (step.env ?? [:]).keys.sorted().joined(separator: " ")
        case .workdir: "WORKDIR \(step.path ?? "")"
        case .user: "USER \(step.user ?? "")"
        }
    }
}
