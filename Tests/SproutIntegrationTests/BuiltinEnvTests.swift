import Foundation
import SproutAPI
import SproutClient
import SproutCore
import Testing

extension Integration {
    /// Built-in envs (the server's `--envs` folders): built once per server,
    /// seen by every team, never built inside a request.
    @Suite("built-in envs")
    struct BuiltinEnvTests {
        /// A folder of one built-in env, `tiny`, that builds in seconds.
        static func envsFolder() throws -> String {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("sprout-envs-\(Identifiers.random(length: 6))").path
            try FileManager.default.createDirectory(atPath: root + "/tiny", withIntermediateDirectories: true)
            try """
                id = "tiny"
                [template]
                from = "empty"
                [build]
                run = ["echo built > /built.txt"]

                """.write(toFile: root + "/tiny/sprout.toml", atomically: true, encoding: .utf8)
            return root
        }

        /// Creates from `env` until it is built (a `not_ready` answer meanwhile).
        static func createWhenBuilt(_ api: SproutAPIClient, _ env: String) async throws -> API.Sandbox? {
            var made: API.Sandbox?
            try await eventually(300, every: .milliseconds(500)) {
                do {
                    made = try await api.createSandbox(API.CreateSandbox(env: env))
                    return true
                } catch let error as SproutError where error.code == .notReady {
                    return false
                }
            }
            return made
        }

        @Test("a create from a built-in env that is not built answers not_ready at once and starts its build; once built every team starts from it; it cannot be deleted; pushing its folder builds nothing")
        func firstUse() async throws {
            let envs = try Self.envsFolder()
            defer { try? FileManager.default.removeItem(atPath: envs) }
            try await ServerHarness.with(extraArgs: ["--envs", envs]) { (server: ServerHarness) async throws in
                let api = server.client
                do {
                    _ = try await api.createSandbox(API.CreateSandbox(env: "tiny"))
                    Issue.record("a create from an unbuilt built-in env was answered with a sandbox")
                } catch let error as SproutError {
                    #expect(error.code == .notReady && error.message.contains("being built"), "\(error)")
                }
                let sandbox = try #require(try await Self.createWhenBuilt(api, "tiny"))
                #expect(try await api.run(sandbox.id, API.Exec(cmd: ["cat", "/built.txt"])).stdoutText == "built\n")

                // Another team sees it, built: no build of its own.
                let other = server.client(key: try await api.createKey(API.CreateKey(name: "b", team: "team-b")).secret)
                let theirs = try await other.createSandbox(API.CreateSandbox(env: "tiny"))
                #expect(theirs.env == sandbox.env)
                #expect(try await other.envs().contains { $0.name == "tiny" && $0.builtin }, "listed to every team, as built-in")
                await #expect(throws: SproutError.self) { _ = try await other.deleteEnv("tiny") }
                // The same folder pushed by a team is the built-in env itself.
                let pushed = try await other.push(API.Push(id: "tiny", from: "empty", run: ["echo built > /built.txt"], start: nil, ready: nil,
                                                          cpu: nil, memoryMB: nil, files: []))
                #expect(pushed.build == nil && pushed.envID == sandbox.env, "\(pushed)")
                _ = try await api.killSandbox(sandbox.id)
                _ = try await other.killSandbox(theirs.id)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("with --prebuild-envs the server builds its built-in envs from its start, before any request asks")
        func prebuild() async throws {
            let envs = try Self.envsFolder()
            defer { try? FileManager.default.removeItem(atPath: envs) }
            try await ServerHarness.with(extraArgs: ["--envs", envs, "--prebuild-envs"]) { (server: ServerHarness) async throws in
                let built = try await eventually(300, every: .milliseconds(500)) { (try? await server.client.env("tiny")) != nil }
                #expect(built, "tiny was not built in the background")
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: "tiny"))
                _ = try await server.client.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }
    }
}
