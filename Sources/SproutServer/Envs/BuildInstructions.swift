import Foundation
import SproutAPI
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutSystem

extension BuildRun {
    /// Runs step `number` of a push's `steps` (a Dockerfile's, a template's)
    /// on the chain so far; returns its cache key, which the next step's
    /// builds on. `run` and `copy` make a layer (cached by the key: the
    /// steps below and this one, as sent); `workdir` makes its directory;
    /// `env` and `user` change only what later steps and the env's processes get.
    func instruction(_ step: API.Push.Step, number: Int, below: String, _ progress: Locked<Progress>) async throws -> String {
        var keyed = step
        keyed.source = nil
        // Forced: a key no earlier build made, so this step and every one after it run again.
        let key = Self.stepKey(below, "step " + String(decoding: try JSONEncoder.sorted.encode(keyed), as: UTF8.self)
            + (step.force == true ? " forced by \(job.build.id)" : ""))
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
            process.user = user == "root" || user == "0" ? nil : user
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
            let user = step.user.map { $0 == "root" || $0 == "0" ? nil : $0 } ?? process.user
            let spec = ProcessSpec(cmd: step.argv, shell: step.argv == nil ? step.shell : nil, cwd: process.workdir ?? "/", env: env, user: user)
            let log = self.log
            try await layerStep(key: key, label: label, progress) { agent in try await Self.runLogged(agent, spec, log: log) }
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
        let full = path.hasPrefix("/") ? path : (workdir ?? "/") + "/" + path
        var parts: [Substring] = []
        for part in full.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func describe(_ step: API.Push.Step) -> String {
        switch step.kind {
        case .run: "RUN " + (step.shell ?? step.argv?.joined(separator: " ") ?? "")
        case .copy: "COPY \(step.files?.count ?? 0) file(s) to \(step.destination ?? "?")" + (step.owner.map { " (owner \($0))" } ?? "")
        case .env: "ENV " + (step.env ?? [:]).keys.sorted().joined(separator: " ")
        case .workdir: "WORKDIR \(step.path ?? "")"
        case .user: "USER \(step.user ?? "")"
        }
    }
}
