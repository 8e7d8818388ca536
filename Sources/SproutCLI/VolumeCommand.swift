import ArgumentParser
import Foundation
import SproutAPI
import SproutClient
import SproutCore
import SproutSystem

/// `sprout volume create|list|show|delete|files`
struct VolumeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "volume", abstract: "Volumes: storage that outlives sandboxes and is shared between them.",
        subcommands: [VolumeCreate.self, VolumeList.self, VolumeShow.self, VolumeDelete.self, VolumeMove.self, VolumeFilesCommand.self])
}

struct VolumeCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a volume.")
    @OptionGroup var client: ClientOptions
    @Argument var name: String
    @Option(help: "Its size limit in GiB (default 1).") var sizeGb: Double?
    @Option(help: "Its size limit in MiB (instead of --size-gb).") var sizeMb: Int?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let size = sizeMb ?? sizeGb.map { Int(($0 * 1024).rounded()) }
        let volume = try await client.client().createVolume(API.CreateVolume(name: name, sizeMB: size))
        if json { try Output.json(volume) } else { print(volume.name) }
    }
}

struct VolumeList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List volumes.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let volumes = try await client.client().volumes()
        if json { return try Output.json(volumes) }
        Output.table(["NAME", "ID", "SIZE", "USED", "MOUNTED BY", "CREATED"], volumes.map {
            [$0.name, $0.id, "\($0.sizeMB) MiB", VolumeShow.used($0), $0.mountedBy.isEmpty ? "-" : $0.mountedBy.joined(separator: ","),
             Output.date($0.createdAt)]
        })
    }
}

struct VolumeShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one volume.")
    @OptionGroup var client: ClientOptions
    @Argument var name: String
    @Flag(help: "Print JSON.") var json = false

    static func used(_ volume: API.Volume) -> String {
        volume.usedBytes.map { String(format: "%.1f MiB", Double($0) / 1_048_576) } ?? "-"
    }

    func run() async throws {
        let v = try await client.client().volume(name)
        if json { return try Output.json(v) }
        for (k, value) in [("name", v.name), ("id", v.id), ("size", "\(v.sizeMB) MiB"), ("used", Self.used(v)),
                           ("mounted by", v.mountedBy.joined(separator: ", ")), ("created", Output.date(v.createdAt))] {
            print("\(k.padding(toLength: 10, withPad: " ", startingAt: 0)) \(value)")
        }
    }
}

struct VolumeMove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "move", abstract: "Move a volume to another node of a fleet (admin, through an API server; needs the fleet's object store).",
        discussion: "Refused while a sandbox mounts it: kill it first, or drain the node to move both (sprout node drain).")
    @OptionGroup var client: ClientOptions
    @Argument var name: String
    @Option(help: "The node to move it to (default: the ready node with the fewest volumes).") var node: String?
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let moved = try await client.client().moveVolume(name, to: node)
        if json { return try Output.json(moved) }
        print("\(name) moved")
    }
}

struct VolumeDelete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a volume and its files.")
    @OptionGroup var client: ClientOptions
    @Argument var name: String
    @Flag(help: "Kill the sandboxes that mount it first (otherwise that is refused).") var force = false

    func run() async throws {
        try await client.client().deleteVolume(name, force: force)
        print("\(name) deleted")
    }
}

struct VolumeFilesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "files", abstract: "A volume's files, without a sandbox.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "ls, stat, cat, put, rm or mkdir.") var action: String
    @Argument var name: String
    @Argument(help: "Path inside the volume.") var path: String
    @Argument(help: "put: the local file to copy in.") var local: String?
    @Flag(help: "mkdir: make parent directories too.") var parents = false
    @Flag(help: "ls, stat: print JSON.") var json = false

    func run() async throws {
        let api = try client.client()
        switch action {
        case "ls":
            try SandboxFiles.show(try await api.volumeList(name, path: path), json: json)
        case "stat":
            SandboxFiles.show(try await api.volumeStat(name, path: path), json: json)
        case "cat":
            FileHandle.standardOutput.write(Data(try await api.volumeRead(name, path: path, limit: 1 << 30)))
        case "put":
            guard let local else { throw SproutError(.invalidArgument, "put needs a local source file") }
            let bytes = try Descriptor.readFile(local, limit: 1 << 30)
            let n = try await api.volumeWrite(name, path: path, bytes: bytes)
            FileHandle.standardError.write(Data("\(n) bytes -> \(path)\n".utf8))
        case "rm":
            try await api.volumeRemove(name, path: path)
        case "mkdir":
            try await api.volumeMakeDirectory(name, path: path, parents: parents)
        default:
            throw SproutError(.invalidArgument, "unknown files action '\(action)' (use ls, stat, cat, put, rm or mkdir)")
        }
    }
}
