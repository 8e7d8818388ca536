import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

/// Runs the real `sprout` binary.
struct CLI {
    let server: ServerHarness
    var key: String?

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    func run(_ args: [String], env extra: [String] = [], input: String? = nil) async throws -> Result {
        let env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=\(server.data)", "SPROUT_API_URL=http://127.0.0.1:\(server.port)",
                   "SPROUT_API_KEY=\(key ?? server.adminKey)"] + extra
        return try await Self.runProcess([ServerHarness.binary] + args, env: env, input: input)
    }

    /// Runs a program (argv[0] a path) with `env` and collects its output.
    static func runProcess(_ argv: [String], env: [String]? = nil, input: String? = nil) async throws -> Result {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        let output = try await HostCommand.capture(argv, input: input, environment: env ?? ["PATH=\(path)", "HOME=/root"], timeout: .seconds(1200))
        return Result(status: output.status, stdout: output.stdout, stderr: output.stderr)
    }
}

extension Integration {
    @Suite("CLI")
    struct CLITests {
        @Test("sandbox create/list/show/exec/files/timeout/kill and keys through the sprout binary")
        func workflow() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let cli = CLI(server: server)
                let created = try await cli.run(["sandbox", "create", "empty", "--json", "--meta", "purpose=cli", "--env", "A=1"])
                #expect(created.status == 0, "\(created.stderr)")
                let sandbox = try JSONDecoder().decode(API.Sandbox.self, from: Data(created.stdout.utf8))
                #expect(sandbox.metadata == ["purpose": "cli"])

                let list = try await cli.run(["sandbox", "list", "--json"])
                #expect(try JSONDecoder().decode([API.Sandbox].self, from: Data(list.stdout.utf8)).map(\.id) == [sandbox.id])
                #expect(try await cli.run(["sandbox", "show", sandbox.id]).stdout.contains("state     running"))

                let exec = try await cli.run(["sandbox", "exec", sandbox.id, "--", "sh", "-c", "echo out $A; echo err >&2; exit 9"])
                #expect(exec.status == 9)
                #expect(exec.stdout == "out 1\n")
                #expect(exec.stderr == "err\n")
                // Piped input is the process's standard input; its end closes it.
                let piped = try await cli.run(["sandbox", "exec", sandbox.id, "--", "sh", "-c", "cat; echo done"], input: "a\nb\n")
                #expect(piped.status == 0, "\(piped.stderr)")
                #expect(piped.stdout == "a\nb\ndone\n")

                let local = server.data + "/local.txt"
                try "from the host\n".write(toFile: local, atomically: true, encoding: .utf8)
                #expect(try await cli.run(["sandbox", "files", "put", sandbox.id, "/code/a.txt", local]).status == 0)
                #expect(try await cli.run(["sandbox", "files", "cat", sandbox.id, "/code/a.txt"]).stdout == "from the host\n")
                #expect(try await cli.run(["sandbox", "files", "ls", sandbox.id, "/code"]).stdout.contains("/code/a.txt"))
                let back = server.data + "/back.txt"
                #expect(try await cli.run(["sandbox", "files", "get", sandbox.id, "/code/a.txt", back]).status == 0)
                #expect(try String(contentsOfFile: back, encoding: .utf8) == "from the host\n")
                #expect(try await cli.run(["sandbox", "files", "rm", sandbox.id, "/code/a.txt"]).status == 0)
                #expect(try await cli.run(["sandbox", "timeout", sandbox.id, "600"]).status == 0)

                let missing = try await cli.run(["sandbox", "show", "sbx_nope"])
                #expect(missing.status != 0)
                #expect(missing.stderr == "sprout: no sandbox with id 'sbx_nope'\n")

                let key = try await cli.run(["keys", "create", "--name", "ci", "--team", "ci", "--json"])
                let createdKey = try JSONDecoder().decode(API.CreatedKey.self, from: Data(key.stdout.utf8))
                #expect(createdKey.secret.hasPrefix("sk_"))
                #expect(try await cli.run(["keys", "list"]).stdout.contains(createdKey.key.id))
                let otherTeam = CLI(server: server, key: createdKey.secret)
                let otherList = try await otherTeam.run(["sandbox", "list", "--json"]).stdout
                #expect(try JSONDecoder().decode([API.Sandbox].self, from: Data(otherList.utf8)).isEmpty)
                #expect(try await cli.run(["keys", "revoke", createdKey.key.id]).status == 0)
                #expect(try await otherTeam.run(["sandbox", "list"]).stderr == "sprout: invalid or revoked API key\n")

                // `sprout login` saves the settings that later commands use.
                let login = try await CLI(server: server, key: "").run(
                    ["login", "--api-url", "http://127.0.0.1:\(server.port)", "--api-key", server.adminKey])
                #expect(login.status == 0, "\(login.stderr)")
                #expect(FileManager.default.fileExists(atPath: server.data + "/.config/sprout/config.json"))

                #expect(try await cli.run(["sandbox", "kill", sandbox.id]).stdout == "\(sandbox.id) killed\n")
            }
        }
    }
}
