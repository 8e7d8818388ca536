import Foundation
import SproutAPI
import SproutClient
import SproutCore
import SproutSystem
import Testing

extension LongIntegration {
    @Suite("Code interpreter")
    struct CodeInterpreterTests {
        /// The stock `e2b-code-interpreter` SDK against a real server: its
        /// default template `code-interpreter-v1` is built in the background
        /// from the server's start, from envs/code-interpreter-v1 (apt
        /// packages: minutes, once; a create meanwhile is a prompt 503), then
        /// Tests/e2b/code_interpreter_test.py checks state, streams, rich
        /// results, errors, contexts, env vars, timeouts, bash and bad input.
        /// Sprout's own CLI and Swift client then run code in the same env.
        @Test("e2b-code-interpreter SDK, unchanged, on the built-in env the server builds from its start; sprout sandbox run-code; the Swift client")
        func sdk() async throws {
            try #require(FileManager.default.isExecutableFile(atPath: E2BTests.python), "no \(E2BTests.python): run `make test`")
            try await ServerHarness.with(extraArgs: ["--envs", Integration.OpenAPITests.root + "/envs", "--prebuild-envs"]) { (server: ServerHarness) async throws in
                let url = "http://127.0.0.1:\(server.port)"
                let out = try await CLI.runProcess(
                    [E2BTests.python, Integration.OpenAPITests.root + "/Tests/e2b/code_interpreter_test.py"],
                    env: ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(url)", "E2B_SANDBOX_URL=\(url)", "E2B_VOLUME_API_URL=\(url)",
                          "E2B_API_KEY=\(server.adminKey)"])
                let checks = out.stdout.split(separator: "\n").filter { $0.hasPrefix("ok ") }.count
                print("e2b-code-interpreter SDK: \(checks) checks passed; \(out.stdout.split(separator: "\n").last ?? "")")
                #expect(out.status == 0, "the SDK test failed:\n\(out.stdout.suffix(4000))\n\(out.stderr.suffix(6000))")
                #expect(checks >= 45, "only \(checks) checks ran")

                // The env exists now: Sprout's own create, CLI and client.
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: "code-interpreter-v1", envVars: ["WHO": "sprout"]))
                let first = try await server.client.runCode(sandbox.id, CodeRun(code: "import os\nn = 20\nos.environ['WHO']"))
                #expect(first.text == "sprout", "\(first)")
                let events = Locked<[CodeEvent]>([])
                let second = try await server.client.runCode(sandbox.id, CodeRun(code: "print('half', n // 2)\nn * 2")) { event in
                    events.withLock { $0.append(event) }
                }
                #expect(second.stdout == ["half 10\n"] && second.text == "40", "\(second)")
                #expect(events.current.last == .end, "\(events.current)")
                let failed = try await server.client.runCode(sandbox.id, CodeRun(code: "raise ValueError('no')"))
                #expect(failed.error?.name == "ValueError" && failed.error?.value == "no", "\(failed)")
                let context = try await server.client.createCodeContext(sandbox.id, language: "bash")
                #expect(try await server.client.codeContexts(sandbox.id).contains(context))
                let bash = try await server.client.runCode(sandbox.id, CodeRun(code: "echo $((6 * 7))", contextID: context.id))
                #expect(bash.stdout == ["42\n"], "\(bash)")
                await #expect(throws: SproutError.self) {
                    try await server.client.runCode(sandbox.id, CodeRun(code: "1", contextID: "no-such-context"))
                }
                let cli = try await CLI(server: server).run(["sandbox", "run-code", sandbox.id, "n + 1"])
                #expect(cli.status == 0 && cli.stdout == "21\n", "\(cli.stdout) \(cli.stderr)")
                let cliError = try await CLI(server: server).run(["sandbox", "run-code", sandbox.id, "1/0"])
                #expect(cliError.status == 1 && cliError.stderr.contains("ZeroDivisionError"), "\(cliError.stderr)")
                _ = try await server.client.killSandbox(sandbox.id)
                #expect(try await server.client.sandboxes().isEmpty, "sandboxes left running")
                await expectNoLeftovers(server.data)
            }
        }
    }
}
