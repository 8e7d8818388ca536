import ArgumentParser
import Foundation
import SproutClient
import SproutCore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout sandbox files ls|stat|cat|put|get|rm|xattr ID PATH [LOCAL]`
struct SandboxFiles: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "files", abstract: "Work with a sandbox's files.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "ls, stat, cat, put, get, rm or xattr.") var action: String
    @Argument var id: String
    @Argument(help: "Path inside the sandbox.") var path: String
    @Argument(help: "Local file (put: source, get: destination).") var local: String?
    @Option(help: "ls: how deep to list.") var depth = 1
    @Flag(help: "rm: remove directories with their contents.") var recursive = false
    @Flag(help: "ls, stat: print JSON.") var json = false
    @Option(help: "put: the user of the sandbox who owns the file (default root).") var owner: String?
    @Option(name: .customLong("set"), help: "xattr: set user.NAME=VALUE (repeatable).") var setXattrs: [String] = []
    @Option(name: .customLong("remove"), help: "xattr: remove user.NAME (repeatable).") var removeXattrs: [String] = []

    func run() async throws {
        let api = try client.client()
        switch action {
        case "ls":
            try Self.show(try await api.list(id, path: path, depth: depth), json: json)
        case "cat":
            try await api.download(id, path: path, toDescriptor: 1)
        case "get":
            guard let local else { throw SproutError(.invalidArgument, "get needs a local destination") }
            let temp = local + ".sprout-part"
            guard FileManager.default.createFile(atPath: temp, contents: nil) , let handle = FileHandle(forWritingAtPath: temp) else {
                throw SproutError(.io, "cannot write \(local)")
            }
            do {
                let n = try await api.download(id, path: path, toDescriptor: handle.fileDescriptor)
                try handle.close()
                guard rename(temp, local) == 0 else { throw SproutError.system("rename to \(local)") }
                FileHandle.standardError.write(Data("\(n) bytes -> \(local)\n".utf8))
            } catch {
                try? FileManager.default.removeItem(atPath: temp)
                throw error
            }
        case "put":
            guard let local else { throw SproutError(.invalidArgument, "put needs a local source file") }
            let n = try await api.upload(id, localPath: local, to: path, owner: owner)
            FileHandle.standardError.write(Data("\(n) bytes -> \(path)\n".utf8))
        case "rm":
            try await api.remove(id, path: path, recursive: recursive)
        case "stat":
            Self.show(try await api.stat(id, path: path), json: json)
        case "xattr":
            let info = setXattrs.isEmpty && removeXattrs.isEmpty
                ? try await api.stat(id, path: path)
                : try await api.setXattrs(id, path: path, set: try keyValues(setXattrs, what: "--set"), remove: removeXattrs)
            for (name, value) in (info.xattrs ?? [:]).sorted(by: { $0.key < $1.key }) { print("\(name)=\(value)") }
        default:
            throw SproutError(.invalidArgument, "unknown files action '\(action)' (use ls, stat, cat, put, get, rm or xattr)")
        }
    }

    static func show(_ entries: [API.FileEntry], json: Bool) throws {
        if json { return try Output.json(entries) }
        Output.table(["TYPE", "MODE", "SIZE", "PATH"], entries.map {
            [$0.type.rawValue, String($0.mode, radix: 8), String($0.size), $0.path + ($0.target.map { " -> \($0)" } ?? "")]
        })
    }

    static func show(_ info: API.FileEntry, json: Bool) {
        if json {
            _ = try? Output.json(info)
            return
        }
        print("path: \(info.path)\ntype: \(info.type.rawValue)\nsize: \(info.size)\nmode: \(String(info.mode, radix: 8))")
        if let owner = info.owner { print("owner: \(owner) (\(info.uid ?? 0))\ngroup: \(info.group ?? "") (\(info.gid ?? 0))") }
        if let target = info.target { print("target: \(target)") }
        for (name, value) in (info.xattrs ?? [:]).sorted(by: { $0.key < $1.key }) { print("xattr \(name)=\(value)") }
    }
}
