import ArgumentParser
import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig
import SproutRuntime

/// `sprout env init [--from ENV] [--id NAME]`: writes a commented sprout.toml.
struct EnvInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init", abstract: "Write a commented sprout.toml here.")
    @OptionGroup var client: ClientOptions
    @Option(help: "The parent env: a name or id (default: pick one on a terminal, else empty).") var from: String?
    @Option(help: "The env's name (default: this folder's name).") var id: String?
    @Option(help: "Where to write it.") var file = "sprout.toml"

    func run() async throws {
        guard !FileManager.default.fileExists(atPath: file) else {
            throw SproutError(.alreadyExists, "\(file) already exists; edit it or remove it first")
        }
        let folder = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).lastPathComponent
        let name = id ?? Self.envName(from: folder)
        var parent = from ?? "empty"
        if from == nil, isatty(0) == 1, isatty(1) == 1 {
            parent = try await pick()
        } else if let from {
            _ = try await client.client().env(from)  // an unknown parent is an error now, not at push
        }
        let text = EnvConfig.template(id: name, from: parent)
        _ = try EnvConfig.parse(text, file: file)
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        print("wrote \(file): id \(name), from \(parent)")
    }

    /// Offers the server's envs and reads a choice.
    func pick() async throws -> String {
        let envs = try await client.client().envs()
        print("Start from which env?")
        for (i, env) in envs.enumerated() { print("  \(i + 1)) \(env.id)\(env.builtin ? "  (built-in)" : "")") }
        print("number [1]: ", terminator: "")
        let answer = (readLine() ?? "").trimmingCharacters(in: .whitespaces)
        guard !answer.isEmpty else { return envs.first?.id ?? "empty" }
        guard let n = Int(answer), (1...envs.count).contains(n) else {
            throw SproutError(.invalidArgument, "'\(answer)' is not one of 1-\(envs.count)")
        }
        return envs[n - 1].id
    }

    /// A valid env name from a folder name.
    static func envName(from folder: String) -> String {
        let mapped = folder.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") ? $0 : "-" }
        let name = String(mapped.prefix(64))
        return name.isEmpty || BaseImages.names.contains(name) ? "my-env" : name
    }
}
