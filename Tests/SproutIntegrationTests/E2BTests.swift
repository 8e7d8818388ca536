import Foundation
import SproutAPI
import SproutClient
import Testing

extension LongIntegration {
    @Suite("E2B SDK")
    struct E2BTests {
        /// The venv `make test` installs the pinned `e2b` package into.
        static var python: String { Integration.OpenAPITests.root + "/.venv-e2b/bin/python" }

        /// The stock `e2b` Python SDK (sync and async clients) against a real
        /// server through one base URL: Tests/e2b/sdk_test.py checks every
        /// control-plane route and daemon call it makes, one line per check.
        @Test("the e2b SDK, unchanged: control plane, commands, PTY, stdin, files, pause/connect, pagination, teams, bad input, the base env's user, metadata, pip, volumes")
        func sdk() async throws {
            try #require(FileManager.default.isExecutableFile(atPath: Self.python), "no \(Self.python): run `make test` (scripts/install-deps.sh makes it)")
            // --trust-host-ca: `pip install` inside works where the host's own does.
            try await ServerHarness.with(extraArgs: ["--trust-host-ca"]) { (server: ServerHarness) async throws in
                let other = try await server.client.createKey(API.CreateKey(name: "e2b-other", team: "e2b-other"))
                let url = "http://127.0.0.1:\(server.port)"
                let out = try await CLI.runProcess(
                    [Self.python, Integration.OpenAPITests.root + "/Tests/e2b/sdk_test.py"],
                    env: ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(url)", "E2B_SANDBOX_URL=\(url)", "E2B_VOLUME_API_URL=\(url)",
                          "E2B_API_KEY=\(server.adminKey)", "SPROUT_OTHER_TEAM_KEY=\(other.secret)"])
                let checks = out.stdout.split(separator: "\n").filter { $0.hasPrefix("ok ") }.count
                print("e2b SDK: \(checks) checks passed; \(out.stdout.split(separator: "\n").last ?? "")")
                #expect(out.status == 0, "the SDK test failed:\n\(out.stdout.suffix(4000))\n\(out.stderr.suffix(6000))")
                #expect(checks >= 40, "only \(checks) checks ran")
                #expect(try await server.client.sandboxes().isEmpty, "the SDK test left sandboxes running")
                await expectNoLeftovers(server.data)
            }
        }
    }
}
