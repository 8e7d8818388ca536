import ArgumentParser
import Foundation
import SproutClient
import SproutCore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout sandbox files ls|cat|put|get|rm ID PATH [LOCAL]`
struct SandboxFiles: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "files", abstract: "Work with a sandbox's files.")
    @OptionGroup var client: ClientOptions
    @Argument(help: "ls, cat, put, get or rm.") var action: String
    @Argument var id: String
    @Argument(help: "Path inside the sandbox.") var path: String
    @Argument(help: "Local file (put: source, get: destination).") var local: String?
    @Option(help: "ls: how deep to list.") var depth = 1
    @Flag(help: "rm: remove directories with their contents.") var recursive = false
    @Flag(help: "ls: print JSON.") var json = false

    func run() async throws {
        let api = try client.client()
        switch action {
        case "ls":
            let entries = try await api.list(id, path: path, depth: depth)
            if json { return try Output.json(entries) }
            Output.table(["TYPE", "MODE", "SIZE", "PATH"], entries.map {
                [$0.type.rawValue, String($0.mode, radix: 8), String($0.size), $0.path + ($0.target.map { " -> \($0)" } ?? "")]
            })
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
            let n = try await api.upload(id, localPath: local, to: path)
            FileHandle.standardError.write(Data("\(n) bytes -> \(path)\n".utf8))
        case "rm":
            try await api.remove(id, path: path, recursive: recursive)
        default:
            throw SproutError(.invalidArgument, "unknown files action '\(action)' (use ls, cat, put, get or rm)")
        }
    }
}
