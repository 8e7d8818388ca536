import Foundation
import SproutAPI
import SproutConfig
import SproutCore
import SproutStore
import SproutSystem

/// Envs Sprout ships as `sprout.toml` folders (`envs/` in the source tree:
/// the code interpreter's `code-interpreter-v1`). They belong to no team:
/// the server builds them once, as `BuiltinEnvs.team`, by the same push and
/// build `sprout env push` runs from their folder, and every team sees them
/// (a team's own env of the same name comes first).
///
/// A server builds the missing ones in the background from its start
/// (`--no-prebuild-envs` leaves that to first use). A create from one still
/// building answers at once, `not_ready` (503 with `Retry-After`) with the
/// build's progress, and never holds a request for the minutes a build takes.
public actor BuiltinEnvs {
    /// The owner of built-in envs: not a name a key's team can have.
    public static let team = "@builtin"
    static let identity = Identity(keyID: "", team: team, admin: false)

    let lifecycle: SandboxLifecycle
    let builder: EnvBuilder
    /// The folder holding one folder per env, named as the env; nil: none.
    public nonisolated let directory: String?
    /// Builds under way, by env name.
    private var building: [String: String] = [:]
    /// Why the last build of an env failed, by env name.
    private var failures: [String: String] = [:]

    init(lifecycle: SandboxLifecycle, builder: EnvBuilder, directory: String?) {
        self.lifecycle = lifecycle
        self.builder = builder
        self.directory = directory
    }

    /// `explicit`, then `$SPROUT_ENVS`, then `envs/` in a folder above the
    /// running executable (a source checkout), then `/usr/local/share/sprout/envs`.
    /// A found folder holds the env Sprout ships (`code-interpreter-v1`).
    public static func locate(explicit: String?) -> String? {
        SourceTree.locate("envs", explicit: explicit, variable: "SPROUT_ENVS", marker: "code-interpreter-v1/sprout.toml")
    }

    /// The config file of built-in env `name`, if Sprout ships one.
    public nonisolated func configFile(_ name: String) -> String? {
        guard let directory, !name.isEmpty, name.count <= 64,
            name.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") })
        else { return nil }
        let path = "\(directory)/\(name)/sprout.toml"
        return FileSystem.exists(path) ? path : nil
    }

    /// The names Sprout ships.
    public nonisolated var names: [String] {
        guard let directory else { return [] }
        return ((try? FileSystem.children(directory)) ?? []).filter { configFile($0) != nil }.sorted()
    }

    /// Starts a build of every built-in env that is not built yet (a server's start).
    public func prepareAll() async {
        for name in names {
            do {
                _ = try await start(name)
            } catch {
                lifecycle.logger.error("cannot build a built-in env", metadata: ["env": "\(name)", "error": "\(error)"])
            }
        }
    }

    /// Returns if `reference` is not a built-in env, or the caller's team
    /// has an env of that name, or the built-in one is built. Otherwise its
    /// build is started (unless under way) and this throws `notReady` at once.
    public func ensure(_ reference: String, for identity: Identity) async throws {
        guard configFile(reference) != nil else { return }
        if try await lifecycle.catalog.envs.lookup(reference, team: identity.team) != nil { return }
        guard let buildID = try await start(reference) else { return }
        var progress = ""
        if let build = try? await builder.build(buildID, for: Self.identity) {
            progress = " (\(build.steps) steps, started \(max(0, Int(lifecycle.clock.now - (build.createdAt ?? lifecycle.clock.now)))) s ago)"
        }
        let failed = failures[reference].map { "; the last build failed: \($0)" } ?? ""
        throw SproutError(.notReady, "the built-in env '\(reference)' is being built\(progress), build \(buildID): ask again in a minute (it takes a few minutes, once per server)\(failed)")
    }

    /// The running build of `name`, started if none runs; nil if it is built.
    private func start(_ name: String) async throws -> String? {
        if let running = building[name] { return running }
        guard let file = configFile(name) else { return nil }
        if try await lifecycle.catalog.envs.lookup(name, team: Self.team) != nil { return nil }
        guard let buildID = try await push(file) else { return nil }
        building[name] = buildID
        lifecycle.logger.notice("building a built-in env", metadata: ["env": "\(name)", "build": "\(buildID)"])
        Task { await self.follow(name, buildID) }
        return buildID
    }

    /// Waits for a build's end; logs it and keeps why it failed.
    private func follow(_ name: String, _ buildID: String) async {
        let done = await builder.finished(buildID)
        building[name] = nil
        if done?.status == BuildStatus.succeeded.rawValue {
            failures[name] = nil
            lifecycle.logger.notice("built-in env built", metadata: ["env": "\(name)", "build": "\(buildID)"])
        } else {
            let why = "\(done?.failedStep ?? "?")\(done?.exitCode.map { " (exit \($0))" } ?? ""): \(done?.error ?? "?") (its log: sprout env logs \(buildID))"
            failures[name] = why
            lifecycle.logger.error("building a built-in env failed", metadata: ["env": "\(name)", "build": "\(buildID)", "why": "\(why)"])
        }
    }

    /// Pushes the env of `file` as `BuiltinEnvs.team`; the build's id, or nil if nothing is to build.
    private func push(_ file: String) async throws -> String? {
        let identity = Self.identity
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw SproutError(.internal, "cannot read the built-in env's \(file): \(error.localizedDescription)")
        }
        let config = try EnvConfig.parse(text, file: file)
        let root = (file as NSString).deletingLastPathComponent
        let files = try config.files.map { try LocalFiles.collect(root: root + "/" + $0) } ?? []
        // Into the blob store, as an upload would put them.
        for entry in files {
            if !lifecycle.stores.blobs.contains(entry.sha256) {
                let writer = try lifecycle.stores.blobs.writer(for: entry.sha256)
                do {
                    let bytes = try Descriptor.readFile(entry.localPath, limit: 64 << 20)
                    try bytes.withUnsafeBytes { try writer.write($0) }
                    try writer.commit()
                } catch {
                    writer.abort()
                    throw error
                }
            }
            try await lifecycle.catalog.recordBlob(team: identity.team, digest: entry.sha256, size: Int64(writerSize(entry.localPath)))
        }
        let request = API.Push(
            id: config.id, from: config.from, run: config.run, start: config.start, ready: config.ready.map(\.text), cpu: config.cpu,
            memoryMB: config.memoryMB, files: files.map { API.Push.File(path: $0.path, mode: $0.mode, sha256: $0.sha256) },
            timeoutSeconds: config.timeoutSeconds)
        return try await builder.push(request, for: identity).build?.id
    }
}

private func writerSize(_ path: String) -> Int {
    (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
}
