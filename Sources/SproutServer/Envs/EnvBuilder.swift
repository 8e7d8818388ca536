import Crypto
import Foundation
import SproutAPI
import SproutCore
import SproutRegistry
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
///
/// A build's status changes only through `BuildMachine`; this actor holds
/// the tasks of running builds, so they can be cancelled.
public actor EnvBuilder {
    let lifecycle: SandboxLifecycle
    private var tasks: [String: Task<Void, Never>] = [:]

    init(lifecycle: SandboxLifecycle) { self.lifecycle = lifecycle }

    static let defaultStepTimeoutSeconds = 900

    nonisolated func logPath(_ id: String) -> String { "\(lifecycle.settings.buildsDirectory)/\(id).log" }
    /// What was pushed, kept beside the log for `GET /v1/builds/{id}`.
    nonisolated func configPath(_ id: String) -> String { "\(lifecycle.settings.buildsDirectory)/\(id).json" }

    /// Starts building `request` (or answers with the env at once if this exact
    /// env exists: an unchanged push builds nothing).
    public func push(_ original: API.Push, for identity: Identity) async throws -> API.PushResult {
        var request = original
        try EnvGraph.validateName(request.id)
        let limits = try CreateRequest.limits(cpu: request.cpu, memoryMB: request.memoryMB, timeout: nil, diskMB: request.diskMB,
                                              settings: lifecycle.settings)
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
        let (from, pull) = try await parent(request.from, team: identity.team)
        // An env on an image that runs a server runs it too, unless it says what to start.
        if request.start == nil, from.image != nil, let start = from.start {
            (request.start, request.ready, request.timeoutSeconds) = (start.command, start.ready, request.timeoutSeconds ?? start.timeoutSeconds)
        }
        // Each must name one of the team's volumes now; a create finds it again by name.
        request.volumes = try await lifecycle.resolveVolumes(request.volumes ?? [], team: identity.team)
            .map { API.VolumeMount(volume: $0.name, path: $0.path, readOnly: $0.readOnly ? true : nil) }
        if request.volumes?.isEmpty == true { request.volumes = nil }
        try await checkFiles(request.files, team: identity.team)
        if let steps = request.steps {
            guard request.run.isEmpty, request.files.isEmpty else {
                throw SproutError(.invalidArgument, "a push gives either steps or run and files, not both")
            }
            guard steps.count <= 1000 else { throw SproutError(.invalidArgument, "at most 1000 steps") }
            for (index, step) in steps.enumerated() where step.kind == .copy {
                if let env = step.fromEnv {
                    // Another env's files (a Dockerfile's earlier stage): the team's, named by id.
                    _ = try await lifecycle.graph.resolve(env, team: identity.team)
                    guard let sources = step.sources, !sources.isEmpty, sources.allSatisfy({ !$0.isEmpty && !$0.contains("\0") }),
                        step.files == nil
                    else { throw SproutError(.invalidArgument, "step \(index + 1): a copy from an env names its sources, and no files") }
                } else {
                    try await checkFiles(step.files ?? [], team: identity.team)
                }
            }
        }

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
            + (request.diskMB.map { ["disk \($0)"] } ?? [])
            + (request.lock ?? [:]).sorted { $0.key < $1.key }.map { "lock \($0.key) \($0.value)" }
            + (request.volumes ?? []).map { "volume \($0.text)" }
            + (try (request.steps ?? []).map(BuildRun.cacheText))
            // A forced step makes a new env every time.
            + ((request.steps ?? []).contains { $0.force == true } ? ["forced \(Identifiers.random(length: 12))"] : [])
        hasher.update(data: Data(normalized.joined(separator: "\n").utf8))
        let envID = "\(request.id)-\(hexString(hasher.finalize()).prefix(8))"
        if let builtin = try await lifecycle.catalog.envs.find(envID), builtin.team == BuiltinEnvs.team, identity.team != BuiltinEnvs.team {
            // The same content as a built-in env, which every team already has.
            return API.PushResult(envID: envID, env: builtin.api, build: nil)
        }
        if var existing = try await lifecycle.catalog.envs.find(envID), existing.team == identity.team {
            if existing.deletedAt != nil {
                // Deleted while sandboxes still ran from it: the same push brings it back.
                existing.published = request.draft != true
                existing.publishedAt = existing.published ? lifecycle.clock.now : nil
                existing = try await lifecycle.recordEnv(existing)
            }
            // Unchanged: nothing to build; a non-draft push publishes it again.
            let env = request.draft == true || existing.published
                ? existing.api : try await lifecycle.graph.setPublished(envID, true, for: identity)
            return API.PushResult(envID: envID, env: env, build: nil)
        }
        // The history parent: the previous push of this name, else the env it builds on.
        let previous = try await lifecycle.catalog.envs.newest(named: request.id, team: identity.team)
        let build = BuildRecord(
            id: Identifiers.make(prefix: "bld", length: 12), team: identity.team, envID: envID,
            steps: (pull == nil ? 0 : 1) + (request.steps?.count ?? (request.run.count + 1)) + (request.start == nil ? 0 : 1))
        try FileSystem.makeDirectories(lifecycle.settings.buildsDirectory, mode: 0o700)
        try FileSystem.writeAtomically(logPath(build.id), "build \(build.id) of \(envID) from \(from.id)\n")
        try FileSystem.writeAtomically(configPath(build.id), String(decoding: try JSONEncoder.sorted.encode(request), as: UTF8.self))
        try await lifecycle.catalog.builds.insert(build)
        let job = BuildJob(
            build: build, request: request, files: files, from: from, pull: pull, envID: envID, parent: previous?.id ?? from.id,
            team: identity.team, limits: limits)
        let lifecycle = self.lifecycle
        tasks[build.id] = Task {
            await BuildRun(lifecycle: lifecycle, job: job, log: BuildLog(path: self.logPath(build.id))).run()
            self.forget(build.id)
        }
        return API.PushResult(envID: envID, env: nil, build: build.api)
    }

    private func forget(_ id: String) { tasks[id] = nil }

    /// The env a push builds on: an env, or an image (`python:3.12-slim`,
    /// `ghcr.io/org/app@sha256:…`): the env made of it before, or the one
    /// the build's first step pulls. The image's manifest is read now, so
    /// the push's env id follows what the tag names today.
    private func parent(_ reference: String, team: String) async throws -> (ResolvedEnv, RegistryClient.Image?) {
        // An env's tag (`name:tag`) before an image of that name.
        if let tagged = try await lifecycle.graph.tagged(reference, team: team) { return (try await lifecycle.graph.resolve(tagged, team: team), nil) }
        guard ImageReference.looksLikeImage(reference) else { return (try await lifecycle.graph.resolve(reference, team: team), nil) }
        let parsed = try ImageReference(parsing: reference)
        let images = ImageEnvs(lifecycle: lifecycle)
        let image = try await images.withClient { try await $0.resolve(parsed) }
        let (env, pulled) = try await images.planned(image, team: team)
        return (env, pulled ? nil : image)
    }

    /// Waits for build `id` to end (at once if it is not running); its record then.
    func finished(_ id: String) async -> API.Build? {
        if let task = tasks[id] { await task.value }
        return try? await lifecycle.catalog.builds.find(id)?.api
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
        if let missing = try await Self.notUploaded(Array(Set(files.map(\.sha256))), team: team, lifecycle: lifecycle) {
            throw SproutError(.invalidArgument, "blob \(missing) has not been uploaded (POST /v1/blobs/missing tells which)")
        }
    }

    /// The first of `digests` the team has not uploaded itself (or the store no longer holds), if any.
    static func notUploaded(_ digests: [String], team: String, lifecycle: SandboxLifecycle) async throws -> String? {
        let owned = try await lifecycle.catalog.blobsOwned(by: team)
        return digests.first { !owned.contains($0) || !lifecycle.stores.blobs.contains($0) }
    }

    /// Cancels a running build: its step is stopped, its sandboxes removed, no env made.
    public func cancel(_ id: String, for identity: Identity) async throws -> API.Build {
        let current = try await build(id, for: identity)
        guard current.status == BuildStatus.running.rawValue, let task = tasks[id] else {
            throw SproutError(.conflict, "build \(id) is \(current.status), not running")
        }
        let (_, action) = try await lifecycle.catalog.builds.transition(id, .cancel)
        if action == .cancelTask { task.cancel() }
        _ = await task.value
        return try await build(id, for: identity)
    }

    /// Cancels every build and waits for them (graceful shutdown).
    func cancelAll() async {
        for (id, task) in tasks {
            _ = try? await lifecycle.catalog.builds.transition(id, .cancel)
            task.cancel()
        }
        for task in tasks.values { _ = await task.value }
    }

    public nonisolated func build(_ id: String, for identity: Identity) async throws -> API.Build {
        guard let record = try await lifecycle.catalog.builds.find(id), record.team == identity.team else {
            throw SproutError(.notFound, "no build with id '\(id)'")
        }
        var build = record.api
        if let bytes = try? Descriptor.readFile(configPath(id)) { build.config = try? JSONDecoder().decode(API.Push.self, from: Data(bytes)) }
        return build
    }

    /// The team's builds, newest first; only `env`'s if given.
    public nonisolated func list(for identity: Identity, env: String?, limit: Int) async throws -> [API.Build] {
        guard (1...1000).contains(limit) else { throw SproutError(.invalidArgument, "limit must be 1-1000") }
        return try await lifecycle.catalog.builds.list(team: identity.team, env: env, limit: limit).map(\.api)
    }
}

struct BuildJob: Sendable {
    var build: BuildRecord
    var request: API.Push
    var files: [API.Push.File]
    var from: ResolvedEnv
    /// The image to pull first, when `from` is an image not made into an env yet.
    var pull: RegistryClient.Image?
    var envID: String
    var parent: String
    var team: String
    var limits: CreateRequest.Limits

    /// What the env's processes get unless told otherwise (its parent's).
    var process: API.ProcessDefaults { from.process ?? API.ProcessDefaults() }

    /// The variables a step or `start` runs with: the server's, then the env's (`process`, as the steps so far left it).
    func environment(_ settings: Settings, _ process: API.ProcessDefaults) -> [String: String] {
        settings.serverEnvironment.merging(process.env ?? [:]) { $1 }
    }
}

extension BuildRecord {
    var api: API.Build {
        API.Build(id: id, envID: envID, status: status.rawValue, failedStep: failedStep, exitCode: exitCode, error: error, steps: steps,
                  cachedSteps: cachedSteps, warnings: warnings, createdAt: createdAt, finishedAt: finishedAt)
    }
}
