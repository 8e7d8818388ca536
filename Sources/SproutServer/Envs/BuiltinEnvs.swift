import Foundation
import SproutAPI
import SproutConfig
import SproutCore
import SproutStore
import SproutSystem

/// Envs Sprout ships as `sprout.toml` folders (`envs/` in the source tree:
/// the code interpreter's `code-interpreter-v1`). A team that starts a
/// sandbox from one it has not built yet gets it built on first use, by the
/// same push and build `sprout env push` runs from that folder (so the two
/// make the same env id, and a push from the folder is a no-op after).
/// Concurrent first uses by one team wait for one build.
public actor BuiltinEnvs {
    let lifecycle: SandboxLifecycle
    let builder: EnvBuilder
    /// The folder holding one folder per env, named as the env; nil: none.
    public nonisolated let directory: String?
    private var building: [String: Task<Void, Error>] = [:]

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

    /// The names Sprout can build on first use.
    public nonisolated var names: [String] {
        guard let directory else { return [] }
        return ((try? FileSystem.children(directory)) ?? []).filter { configFile($0) != nil }.sorted()
    }

    /// Builds `reference` for the caller's team if it names a built-in env the
    /// team has no published env of; returns once it exists. Anything else
    /// (an env id, a name the team has, a name Sprout does not ship) returns at once.
    public func ensure(_ reference: String, for identity: Identity) async throws {
        guard let file = configFile(reference) else { return }
        if try await lifecycle.catalog.envs.lookup(reference, team: identity.team) != nil { return }
        let key = identity.team + "/" + reference
        if let running = building[key] { return try await running.value }
        let task = Task { try await self.build(file, for: identity) }
        building[key] = task
        defer { building[key] = nil }
        try await task.value
    }

    private func build(_ file: String, for identity: Identity) async throws {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            throw SproutError(.internal, "cannot read the built-in env's \(file): \(error.localizedDescription)")
        }
        let config = try EnvConfig.parse(text, file: file)
        let root = (file as NSString).deletingLastPathComponent
        let files = try config.files.map { try LocalFiles.collect(root: root + "/" + $0) } ?? []
        // Into the blob store, as an upload would put them, and owned by the team.
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
        let result = try await builder.push(request, for: identity)
        guard let started = result.build else { return }
        let log = lifecycle.logger
        log.notice("building a built-in env on first use", metadata: ["env": "\(result.envID)", "build": "\(started.id)", "team": "\(identity.team)"])
        var build = started
        while build.status == BuildStatus.running.rawValue || build.status == BuildStatus.cancelling.rawValue {
            try await Task.sleep(for: .milliseconds(250))
            build = try await builder.build(started.id, for: identity)
        }
        guard build.status == BuildStatus.succeeded.rawValue else {
            throw SproutError(.unavailable, "building the built-in env \(config.id) failed at \(build.failedStep ?? "?")"
                + (build.exitCode.map { " (exit \($0))" } ?? "") + ": \(build.error ?? "") (its log: sprout env logs \(build.id))")
        }
        log.notice("built-in env built", metadata: ["env": "\(result.envID)", "build": "\(build.id)"])
    }
}

private func writerSize(_ path: String) -> Int {
    (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
}
