import ArgumentParser
import Foundation
import SproutClient
import SproutCore
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout keys create|list|revoke`
struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage API keys (admin).", subcommands: [KeysCreate.self, KeysList.self, KeysRevoke.self])
}

struct KeysCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create", abstract: "Create a key; its secret is shown once.")
    @OptionGroup var client: ClientOptions
    @Option(help: "A name to recognise the key by.") var name: String?
    @Option(help: "The team the key belongs to (default: yours).") var team: String?
    @Flag(help: "Allow the key to manage keys.") var admin = false
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let created = try await client.client().createKey(API.CreateKey(name: name, team: team, admin: admin))
        if json { return try Output.json(created) }
        print(created.secret)
        FileHandle.standardError.write(Data("key \(created.key.id) for team \(created.key.team); the secret above is not shown again\n".utf8))
    }
}

struct KeysList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List keys.")
    @OptionGroup var client: ClientOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let keys = try await client.client().keys()
        if json { return try Output.json(keys) }
        Output.table(["ID", "NAME", "TEAM", "PREFIX", "ADMIN", "CREATED", "REVOKED"], keys.map {
            [$0.id, $0.name, $0.team, $0.prefix + "…", $0.admin ? "yes" : "no", Output.date($0.createdAt), Output.date($0.revokedAt)]
        })
    }
}

struct KeysRevoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a key; it stops working at once.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String

    func run() async throws {
        let key = try await client.client().revokeKey(id)
        print("\(key.id) revoked")
    }
}
