import ArgumentParser
import Foundation
import SproutClient
import SproutCore
import SproutStore
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout env list|show`
struct EnvCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "env", abstract: "Envs: immutable roots to start sandboxes from.", subcommands: [
            EnvInit.self, EnvPush.self, EnvImport.self, EnvList.self, EnvShow.self, EnvLogs.self, EnvTree.self, EnvPublish.self, EnvUnpublish.self,
            EnvDelete.self,
        ])
}

struct EnvList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List envs.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let envs = try await client.client().envs()
        if json { return try Output.json(envs) }
        Output.table(["ID", "NAME", "PARENT", "STATUS", "LAYERS", "OWN SIZE", "TOTAL SIZE", "CREATED"], envs.map {
            [$0.id, $0.name, $0.parent ?? "-", $0.builtin ? "built-in" : ($0.published ? "published" : "unpublished"),
             String($0.layers.count), $0.builtin ? "-" : Output.bytes($0.ownBytes), $0.totalBytes.map(Output.bytes) ?? "-",
             Output.date($0.createdAt)]
        })
    }
}

struct EnvShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one env.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let env = try await client.client().env(id)
        if json { return try Output.json(env) }
        var rows: [(String, String)] = [
            ("id", env.id), ("name", env.name), ("parent", env.parent ?? "-"), ("base", env.base),
            ("layers", env.layers.map { String($0.prefix(12)) }.joined(separator: " ")), ("own size", "\(env.ownBytes) B"),
        ]
        if let image = env.image { rows.append(("image", image)) }
        if let start = env.start { rows.append(("start", start + (env.warm == true ? " (warm)" : ""))) }
        if let process = env.process {
            if let user = process.user { rows.append(("user", user)) }
            if let workdir = process.workdir { rows.append(("workdir", workdir)) }
            if let env = process.env { rows.append(("env", env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))) }
        }
        if let volumes = env.volumes {
            rows.append(("volumes", volumes.map(\.text).joined(separator: ", ")))
        }
        for (k, v) in rows {
            print("\(k.padding(toLength: 8, withPad: " ", startingAt: 0)) \(v)")
        }
    }
}

struct EnvImport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import", abstract: "Make an env of an image archive: `docker save` output or an OCI layout in a tar (no registry needed).")
    @OptionGroup var client: ClientOptions
    @Argument(help: "The archive (.tar).") var file: String
    @Option(help: "Which image of an archive of several (name:tag).") var image: String?
    @Option(help: "The env's name (default: image- and the image's name and tag).") var name: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let api = try client.client()
        let digest = try LocalFiles.sha256(file)
        if try await !api.missingBlobs([digest]).isEmpty {
            FileHandle.standardError.write(Data("uploading \(file)\n".utf8))
            try await api.uploadBlob(digest, localPath: file)
        }
        let env = try await api.importImage(API.ImportImage(blob: digest, reference: image, name: name))
        if json { return try Output.json(env) }
        print(env.id)
    }
}

struct EnvTree: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tree", abstract: "Show an env's ancestors and descendants.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let tree = try await client.client().envTree(id)
        if json { return try Output.json(tree) }
        for (i, ancestor) in tree.ancestors.reversed().enumerated() { print(String(repeating: "  ", count: i) + ancestor) }
        let indent = tree.ancestors.count
        print(String(repeating: "  ", count: indent) + tree.id + "  <")
        for node in tree.descendants { print(String(repeating: "  ", count: indent + node.depth) + node.id) }
    }
}

struct EnvDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete an env and the layers only it used.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Flag(help: "Also delete its descendants and kill sandboxes running from them.") var force = false

    func run() async throws {
        for deleted in try await client.client().deleteEnv(id, force: force) { print("\(deleted) deleted") }
    }
}

struct EnvPublish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "publish", abstract: "Point the env's name at it.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let env = try await client.client().setPublished(id, true)
        print("\(env.name) -> \(env.id)")
    }
}

struct EnvUnpublish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpublish", abstract: "Stop the env's name pointing at it.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let env = try await client.client().setPublished(id, false)
        print("\(env.id) unpublished; \(env.name) now means the newest other published \(env.name) env, if any")
    }
}

struct EnvLogs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "logs", abstract: "Show a build's log.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "A build id (env push prints it).") var id: String
    @Flag(help: "Keep streaming until the build ends.") var follow = false

    func run() async throws {
        try await client.client().buildLogs(id, follow: follow) { chunk in FileHandle.standardOutput.write(Data(chunk)) }
    }
}
