import Foundation
import Glibc
import SproutAPI
import SproutConfig
import SproutCore
import SproutStore
import SproutSystem

/// A Dockerfile made into a push: its parent, its steps with the context's
/// files each `COPY` takes (hashed here, uploaded as blobs), and `start` and
/// `ready` from `CMD`/`ENTRYPOINT` and `EXPOSE`.
struct DockerfilePush {
    var from: String
    var steps: [API.Push.Step]
    var start: String?
    var ready: String?
    /// Every file the steps copy: sha256 → local path.
    var blobs: [String: String] = [:]

    init(path: String, context: String, arguments: [String: String]) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SproutError(.notFound, "cannot read the Dockerfile \(path)")
        }
        let name = (path as NSString).lastPathComponent
        let dockerfile = try Dockerfile.parse(text, file: name, arguments: arguments)
        guard let root = LocalFiles.realPath(context) else { throw SproutError(.notFound, "the build context \(context) does not exist") }
        from = dockerfile.from
        steps = []
        var blobs: [String: String] = [:]
        for step in dockerfile.steps {
            switch step {
            case .run(let shell, let argv, let env, let line):
                steps.append(API.Push.Step(kind: .run, shell: shell, argv: argv, env: env.isEmpty ? nil : env, source: "\(name):\(line)"))
            case .copy(let sources, let destination, let owner, let line):
                let (directory, files) = try LocalFiles.copied(sources, to: destination, context: root, where: "\(name):\(line)")
                for file in files { blobs[file.sha256] = file.localPath }
                steps.append(API.Push.Step(kind: .copy, files: files.map { API.Push.File(path: $0.path, mode: $0.mode, sha256: $0.sha256) },
                                           destination: directory, owner: owner, source: "\(name):\(line)"))
            case .env(let values, let line):
                steps.append(API.Push.Step(kind: .env, env: values, source: "\(name):\(line)"))
            case .workdir(let path, let line):
                steps.append(API.Push.Step(kind: .workdir, path: path, source: "\(name):\(line)"))
            case .user(let user, let line):
                steps.append(API.Push.Step(kind: .user, user: user, source: "\(name):\(line)"))
            }
        }
        self.blobs = blobs
        if let command = dockerfile.command {
            // The shell form's command as it is; the exec form's words quoted for the shell.
            start = command.count == 3 && command[0] == "/bin/sh" && command[1] == "-c" ? command[2] : command.map(shellQuote).joined(separator: " ")
            ready = dockerfile.ports.first.map { "port:\($0)" }
        }
    }
}
