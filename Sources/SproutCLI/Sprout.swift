import ArgumentParser
import Foundation
import SproutCore
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// The `sprout` command line.
public struct Sprout: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sprout",
        abstract: "Self-hostable sandbox environments.",
        subcommands: [ServerCommand.self, LoginCommand.self, SandboxCommand.self, EnvCommand.self, VolumeCommand.self, KeysCommand.self, NodeCommand.self, StoreCommand.self, FleetCommand.self, BenchCommand.self])

    public init() {}

    /// Runs the command line: errors are one clear line on stderr and a
    /// non-zero exit status.
    public static func runMain() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let error as SproutError {
            FileHandle.standardError.write(Data("sprout: \(error.message)\n".utf8))
            Foundation.exit(error.code == .notFound ? 4 : 1)
        } catch {
            exit(withError: error)
        }
    }
}
