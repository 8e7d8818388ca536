import ArgumentParser
import Crypto
import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig
import SproutStore

/// `sprout env push`: hashes the files, uploads only the blobs the server
/// lacks (in parallel, with progress), and starts the build.
struct EnvPush: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push", abstract: "Build this repository's env from sprout.toml, or from a Dockerfile (--dockerfile).")
    @OptionGroup var client: ClientOptions
    @Option(help: "The config file.") var file = "sprout.toml"
    @Option(help: "Build this Dockerfile (no sprout.toml needed; the env is named by --name or the context's folder).") var dockerfile: String?
    @Option(help: "The env's name with --dockerfile.") var name: String?
    @Option(help: "The build context COPY reads from (default: the Dockerfile's folder).") var context: String?
    @Option(name: .customLong("build-arg"), help: "A Dockerfile ARG's value, NAME=value (repeatable).") var buildArgs: [String] = []
    @Flag(help: "Stream the build's log until it ends.") var follow = false
    @Flag(help: "Wait for the build to end.") var wait = false
    @Flag(help: "Print JSON (the push result, or the finished build with --wait/--follow).") var json = false
    @Flag(help: "Build without moving the name to the new env (publish it later).") var draft = false

    /// The config: sprout.toml, or one made for `--dockerfile`.
    func loadConfig() throws -> (EnvConfig, root: String) {
        if let dockerfile {
            let folder = (dockerfile as NSString).deletingLastPathComponent
            let contextName = ((LocalFiles.realPath(context ?? (folder.isEmpty ? "." : folder)) ?? "env") as NSString).lastPathComponent
            let id = name ?? EnvConfig.nameCharacters(contextName)
            var config = EnvConfig(id: id, from: "empty", files: nil, run: [], start: nil, ready: nil, cpu: nil, memoryMB: nil)
            config.dockerfile = dockerfile
            return (config, ".")
        }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw SproutError(.notFound, "no \(file) here (sprout env init writes one, or push a Dockerfile with --dockerfile)")
        }
        var config = try EnvConfig.parse(text, file: file)
        if let name { config.id = name }
        let root = (file as NSString).deletingLastPathComponent.isEmpty ? "." : (file as NSString).deletingLastPathComponent
        return (config, root)
    }

    func run() async throws {
        let (config, root) = try loadConfig()
        let files = try config.files.map { try LocalFiles.collect(root: root + "/" + $0) } ?? []
        var arguments: [String: String] = [:]
        for argument in buildArgs {
            guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
                throw SproutError(.invalidArgument, "--build-arg takes NAME=value, got '\(argument)'")
            }
            arguments[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
        }
        let api = try client.client()
        var built: DockerfilePush?
        if let path = config.dockerfile {
            let full = path.hasPrefix("/") || dockerfile != nil ? path : root + "/" + path
            let folder = (full as NSString).deletingLastPathComponent
            let contextDirectory = context ?? (folder.isEmpty ? "." : folder)
            let parsed = try DockerfilePush.read(full, arguments: arguments)
            let stages = try await DockerfilePush.buildStages(parsed, id: config.id, file: full, context: contextDirectory, api: api) { blobs in
                let missing = Set(try await api.missingBlobs(Array(blobs.keys)))
                let toSend = blobs.filter { missing.contains($0.key) }
                if !toSend.isEmpty { try await upload(toSend, api: api) }
            }
            built = try DockerfilePush(stage: parsed.final, file: full, context: contextDirectory, stages: stages)
        }
        if dockerfile == nil {
            for other in DuplicateConfigs.find(near: root, id: config.id, excluding: file) {
                FileHandle.standardError.write(Data("warning: \(other) also names the env '\(config.id)'; both pushes move the same name\n".utf8))
            }
        }

        var blobs = Dictionary(files.map { ($0.sha256, $0.localPath) }, uniquingKeysWith: { a, _ in a })
        blobs.merge(built?.blobs ?? [:]) { a, _ in a }
        let missing = Set(try await api.missingBlobs(Array(blobs.keys)))
        let toSend = blobs.filter { missing.contains($0.key) }
        if !toSend.isEmpty { try await upload(toSend, api: api) }

        var request = API.Push(
            id: config.id, from: built?.from ?? config.from, run: config.run, start: config.start ?? built?.start,
            ready: config.ready.map(\.text) ?? (config.start == nil ? built?.ready : nil), cpu: config.cpu,
            memoryMB: config.memoryMB, files: files.map { API.Push.File(path: $0.path, mode: $0.mode, sha256: $0.sha256) },
            draft: draft, timeoutSeconds: config.timeoutSeconds, lock: LockFile.load(root: root)?.files,
            volumes: config.volumes.isEmpty ? nil : config.volumes, steps: built?.steps)
        request.diskMB = config.diskMB
        let result = try await api.push(request)
        guard let build = result.build else {
            if json { try Output.json(result) } else { print("\(result.envID) is up to date: nothing to build") }
            if dockerfile == nil { try LockFile(envID: result.envID, files: files).save(root: root) }
            return
        }
        if !json { FileHandle.standardError.write(Data("building \(result.envID) (build \(build.id))\n".utf8)) }
        guard follow || wait else {
            if json { try Output.json(result) } else { print(build.id) }
            return
        }
        if follow {
            try await api.buildLogs(build.id, follow: true) { chunk in FileHandle.standardError.write(Data(chunk)) }
        }
        let final = try await api.build(build.id, wait: true)
        if json { try Output.json(final) }
        for warning in final.warnings ?? [] { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
        guard final.status == "succeeded" else {
            throw SproutError(.internal, "build \(final.id) failed at \(final.failedStep ?? "?")"
                + (final.exitCode.map { " (exit \($0))" } ?? "") + ": \(final.error ?? "")")
        }
        if dockerfile == nil { try LockFile(envID: final.envID, files: files).save(root: root) }
        if !json {
            print(final.envID)
            if draft {
                FileHandle.standardError.write(Data("note: \(final.envID) is unpublished: `\(config.id)` does not start it; use its id, or `sprout env publish \(final.envID)`\n".utf8))
            }
        }
    }

    /// Uploads blobs, four at a time, with a progress line.
    func upload(_ blobs: [String: String], api: SproutAPIClient) async throws {
        let total = blobs.count
        let done = Locked(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            var pending = Array(blobs)
            func next() {
                guard let (digest, path) = pending.popLast() else { return }
                group.addTask {
                    try await api.uploadBlob(digest, localPath: path)
                    let n = done.withLock { $0 += 1; return $0 }
                    FileHandle.standardError.write(Data("\ruploading files: \(n)/\(total)".utf8))
                }
            }
            for _ in 0..<4 { next() }
            while try await group.next() != nil { next() }
        }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

/// `.sprout/lock.json`: what was last pushed (env id, path -> sha256).
struct LockFile: Codable {
    var envID: String
    var files: [String: String]

    init(envID: String, files: [LocalFiles.Entry]) {
        self.envID = envID
        self.files = Dictionary(files.map { ($0.path, $0.sha256) }, uniquingKeysWith: { a, _ in a })
    }

    static func load(root: String) -> LockFile? {
        guard let data = FileManager.default.contents(atPath: root + "/.sprout/lock.json") else { return nil }
        return try? JSONDecoder().decode(LockFile.self, from: data)
    }

    func save(root: String) throws {
        let dir = root + "/.sprout"
        try FileSystem.makeDirectories(dir)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileSystem.writeAtomically(dir + "/lock.json", Array(try encoder.encode(self)))
    }
}

/// Other sprout.toml files in the same repository that name the same env.
enum DuplicateConfigs {
    static func find(near root: String, id: String, excluding file: String) -> [String] {
        // The repository: the nearest folder up with .git, else the config's folder.
        var top = URL(fileURLWithPath: root).standardizedFileURL.path
        var probe = top
        while probe != "/" && !probe.isEmpty {
            if FileManager.default.fileExists(atPath: probe + "/.git") { top = probe; break }
            probe = (probe as NSString).deletingLastPathComponent
        }
        let mine = URL(fileURLWithPath: file).standardizedFileURL.path
        var found: [String] = []
        guard let walker = FileManager.default.enumerator(atPath: top) else { return [] }
        var scanned = 0
        while let rel = walker.nextObject() as? String, scanned < 20_000 {
            scanned += 1
            if rel.hasPrefix(".git") || rel.contains("/.build") || rel.hasPrefix(".build") || rel.contains("node_modules") { continue }
            guard rel.hasSuffix("sprout.toml") else { continue }
            let path = top + "/" + rel
            guard URL(fileURLWithPath: path).standardizedFileURL.path != mine,
                let text = try? String(contentsOfFile: path, encoding: .utf8),
                let other = try? EnvConfig.parse(text, file: rel), other.id == id
            else { continue }
            found.append(rel)
        }
        return found
    }
}
