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
                let (directory, files) = try Self.copied(sources, to: destination, context: root, where: "\(name):\(line)")
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

    /// What `COPY sources destination` writes, as Docker does: a destination
    /// ending in `/` (or several sources) is a directory the sources go
    /// into (a directory's contents, not the directory itself); otherwise a
    /// single file is written at the destination. Returns the directory and
    /// the files, relative to it.
    static func copied(_ sources: [String], to destination: String, context root: String, where location: String) throws
        -> (String, [LocalFiles.Entry])
    {
        var matches: [String] = []
        for source in sources {
            let found = try glob(source, in: root, where: location)
            guard !found.isEmpty else {
                throw SproutError(.invalidArgument, "\(location): COPY source '\(source)' is not in the build context \(root)")
            }
            matches += found
        }
        let isDirectory = destination.hasSuffix("/") || destination == "." || destination.hasSuffix("/.") || matches.count > 1
            || matches.contains(where: FileSystem.isDirectory)
        var files: [LocalFiles.Entry] = []
        for match in matches {
            if FileSystem.isDirectory(match) {
                files += try LocalFiles.collect(root: match)
            } else {
                var st = stat()
                guard stat(match, &st) == 0 else { throw SproutError.system(match) }
                let name = isDirectory ? (match as NSString).lastPathComponent : (destination as NSString).lastPathComponent
                files.append(LocalFiles.Entry(path: name, localPath: match, mode: UInt32(st.st_mode & 0o7777), sha256: try LocalFiles.sha256(match)))
            }
        }
        let trimmed = destination.count > 1 && destination.hasSuffix("/") ? String(destination.dropLast()) : destination
        let directory = isDirectory ? trimmed : ((trimmed as NSString).deletingLastPathComponent.isEmpty ? "." : (trimmed as NSString).deletingLastPathComponent)
        return (directory, files)
    }

    /// `pattern` (`*`, `?`, `[…]`) matched in the context; nothing outside it.
    static func glob(_ pattern: String, in root: String, where location: String) throws -> [String] {
        let relative = pattern.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        let full = relative.isEmpty ? root : root + "/" + relative
        var result = glob_t()
        defer { globfree(&result) }
        guard Glibc.glob(full, 0, nil, &result) == 0 else { return [] }
        var paths: [String] = []
        for i in 0..<Int(result.gl_pathc) {
            guard let cString = result.gl_pathv[i] else { continue }
            let path = String(cString: cString)
            guard let real = LocalFiles.realPath(path), real == root || real.hasPrefix(root + "/") else {
                throw SproutError(.invalidArgument, "\(location): COPY source '\(pattern)' is outside the build context \(root)")
            }
            paths.append(path)
        }
        return paths.sorted()
    }

}
