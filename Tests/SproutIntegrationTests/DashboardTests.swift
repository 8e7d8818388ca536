import Foundation
import SproutAPI
import SproutClient
import SproutCore
import Testing

extension Integration {
    @Suite("Dashboard")
    struct DashboardTests {
        /// The web dashboard in a real headless Chromium (Debian's chromium and
        /// chromium-driver, driven by Selenium) against a real server:
        /// Tests/dashboard/dashboard_test.py signs in (a wrong key first), sees
        /// a sandbox appear, types in the browser terminal, uploads and
        /// downloads a file, pauses and resumes from the buttons, finds a
        /// three-deep env chain in the graph, starts a sandbox from an env,
        /// follows a build's log, creates and revokes a key, checks another
        /// team's sandbox never shows, runs axe-core on every page and checks
        /// phone width. Screenshots go to .build/dashboard-screenshots.
        @Test("the dashboard, in headless Chromium: terminal, files, pause/resume, env graph, builds, keys, accessibility")
        func browser() async throws {
            try #require(FileManager.default.isExecutableFile(atPath: LongIntegration.E2BTests.python), "no \(LongIntegration.E2BTests.python): run `make test`")
            try #require(FileManager.default.isExecutableFile(atPath: "/usr/bin/chromedriver"), "no chromium-driver: run `make test`")
            // The browser runs in a network namespace of its own, reaching the
            // server over a veth: Chromium ends requests under way with
            // ERR_NETWORK_CHANGED whenever the host's interfaces change, and
            // the other lane's sandboxes add and remove veths all the time.
            // (Plain HTTP on that link: it ends in a namespace of this test.)
            let browserNetwork = try await TestNetwork(defaultRoute: false)
            do {
                try await run(in: browserNetwork)
            } catch {
                await browserNetwork.remove()
                throw error
            }
            await browserNetwork.remove()
        }

        func run(in network: TestNetwork) async throws {
            try await ServerHarness.with(extraArgs: ["--host", network.hostAddress, "--insecure-http"]) { (server: ServerHarness) async throws in
                let shots = OpenAPITests.root + "/.build/dashboard-screenshots"
                let out = try await CLI.runProcess(
                    ["ip", "netns", "exec", network.namespace, LongIntegration.E2BTests.python, OpenAPITests.root + "/Tests/dashboard/dashboard_test.py"],
                    env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "SPROUT_URL=\(server.url)", "SPROUT_KEY=\(server.adminKey)",
                          "SCREENSHOTS=\(shots)"])
                let checks = out.stdout.split(separator: "\n").filter { $0.hasPrefix("ok ") }.count
                print("dashboard: \(checks) checks passed; \(out.stdout.split(separator: "\n").last ?? "")")
                #expect(out.status == 0, "the browser test failed:\n\(out.stdout.suffix(3000))\n\(out.stderr.suffix(6000))")
                #expect(checks >= 25, "only \(checks) checks ran")
                #expect(try await server.client.sandboxes().isEmpty, "sandboxes left running")
                await expectNoLeftovers(server.data)
            }
        }
    }
}
