import Foundation
import Glibc
import SproutAPI
import SproutClient
import SproutConfig
import SproutCore
import SproutStore
import SproutSystem

/// A Dockerfile made into a push: its parent, its steps with the context's
/// files each `COPY` takes (hashed here, uploaded as blobs), and `start` and
/// `ready` from `CMD`/`ENTRYPOINT` and `EXPOSE` (a command is the env's
/// start only when a port is exposed, ready once it answers).
struct DockerfilePush {
    var from: String
    var steps: [API.Push.Step]
    var start: String?
    var ready: String?
    /// Every file the steps copy: sha256 → local path.
    var blobs: [String: String] = [:]

    /// The Dockerfile at `path`, read.
    static func read(_ path: String, arguments: [String: String]) throws -> Dockerfile {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SproutError(.notFound, "cannot read the Dockerfile \(path)")
        }
        return try Dockerfile.parse(text, file: (path as NSString).lastPathComponent, arguments: arguments)
    }

    /// Builds the stages before the last as envs of their own (drafts named
    /// `ID--STAGE`, each an ordinary push: unchanged, it builds nothing), so
    /// the last can start from them and copy from them. Returns each stage's
    /// env id by its name and its number.
    static func buildStages(_ dockerfile: Dockerfile, id: String, file: String, context: String, api: SproutAPIClient,
                            upload: ([String: String]) async throws -> Void) async throws -> [String: String] {
        var envs: [String: String] = [:]
        for (index, stage) in dockerfile.stages.dropLast().enumerated() {
            let label = stage.name ?? String(index)
            let push = try DockerfilePush(stage: stage, file: file, context: context, stages: envs)
            try await upload(push.blobs)
            let name = String(EnvConfig.nameCharacters("\(id)--\(label)").prefix(64))
            let result = try await api.push(API.Push(id: name, from: push.from, run: [], start: nil, ready: nil, cpu: nil, memoryMB: nil,
                                                     files: [], draft: true, steps: push.steps))
            if let build = result.build {
                FileHandle.standardError.write(Data("building stage \(label) as \(result.envID) (build \(build.id))\n".utf8))
                let final = try await api.build(build.id, wait: true)
                guard final.status == "succeeded" else {
                    throw SproutError(.internal, "stage \(label)'s build \(final.id) failed at \(final.failedStep ?? "?"): \(final.error ?? "")")
                }
            }
            envs[label] = result.envID
            envs[String(index)] = result.envID
        }
        return envs
    }

    /// `stage` as a push: `stages` gives the env ids of the stages before it.
    init(stage: Dockerfile.Stage, file path: String, context: String, stages: [String: String]) throws {
        let name = (path as NSString).lastPathComponent
        guard let root = LocalFiles.realPath(context) else { throw SproutError(.notFound, "the build context \(context) does not exist") }
        from = stages[stage.from] ?? stage.from
        steps = []
        var blobs: [String: String] = [:]
        for step in stage.steps {
            switch step {
            case .run(let shell, let argv, let env, let line):
                steps.append(API.Push.Step(kind: .run, shell: shell, argv: argv, env: env.isEmpty ? nil : env, source: "\(name):\(line)"))
            case .copy(let sources, let destination, let owner, let line):
                let (directory, files) = try LocalFiles.copied(sources, to: destination, context: root, where: "\(name):\(line)")
                for file in files { blobs[file.sha256] = file.localPath }
                steps.append(API.Push.Step(kind: .copy, files: files.map { API.Push.File(path: $0.path, mode: $0.mode, sha256: $0.sha256) },
                                           destination: directory, owner: owner, source: "\(name):\(line)"))
            case .copyFrom(let stageName, let sources, let destination, let owner, let line):
                guard let env = stages[stageName] else { throw SproutError(.invalidArgument, "\(name):\(line): no stage \(stageName) before this one") }
                steps.append(API.Push.Step(kind: .copy, destination: destination, owner: owner, fromEnv: env, sources: sources, source: "\(name):\(line)"))
            case .env(let values, let line):
                steps.append(API.Push.Step(kind: .env, env: values, source: "\(name):\(line)"))
            case .workdir(let path, let line):
                steps.append(API.Push.Step(kind: .workdir, path: path, source: "\(name):\(line)"))
            case .user(let user, let line):
                steps.append(API.Push.Step(kind: .user, user: user, source: "\(name):\(line)"))
            }
        }
        self.blobs = blobs
        // As for an image: a Dockerfile that exposes a port runs its command as the env's start, ready
        // at that port; a command alone (a shell, an interpreter) is what `docker run` would start, and
        // would end at once here, where no one is attached.
        if let command = stage.command, let port = stage.ports.first {
            // The shell form's command as it is; the exec form's words quoted for the shell.
            start = command.count == 3 && command[0] == "/bin/sh" && command[1] == "-c" ? command[2] : command.map(shellQuote).joined(separator: " ")
            ready = "port:\(port)"
        }
    }
}
