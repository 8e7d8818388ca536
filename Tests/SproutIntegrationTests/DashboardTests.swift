import Foundation
import Glibc
import SproutHost
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
            let browserNetwork = try await BrowserNetwork()
            do {
                try await run(in: browserNetwork)
            } catch {
                await browserNetwork.remove()
                throw error
            }
            await browserNetwork.remove()
        }

        func run(in network: BrowserNetwork) async throws {
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

        /// A namespace with a veth to the host (a test subnet of its own: .1
        /// on the host, where the server listens, .2 inside) and loopback.
        struct BrowserNetwork {
            typealias TestHost = IsolationTests.TestHost
            let namespace = "\(HostResources.testHostPrefix)\(Identifiers.random(length: 6))"
            let link = "stv\(Identifiers.random(length: 8))"
            let subnet: Int
            var hostAddress: String { "198.18.\(subnet).1" }

            init() async throws {
                subnet = try TestHost.takeSubnet()
                let namespace = namespace
                HostResources.testHosts.withLock { _ = $0.insert(namespace) }
                do {
                    try await HostCommand.run(["ip", "-batch", "-"], input: """
                        netns add \(namespace)
                        link add \(link) type veth peer name eth0 netns \(namespace)
                        addr add \(hostAddress)/30 dev \(link)
                        link set \(link) up

                        """)
                    try await HostCommand.run(["ip", "-n", namespace, "-batch", "-"], input: """
                        addr add 198.18.\(subnet).2/30 dev eth0
                        link set eth0 up
                        link set lo up

                        """)
                } catch {
                    await remove()
                    throw error
                }
            }

            func remove() async {
                _ = try? await HostCommand.capture(["ip", "link", "delete", link])
                _ = try? await HostCommand.capture(["ip", "netns", "delete", namespace])
                unlink("\(TestHost.subnets)/\(subnet)")
                let namespace = namespace
                HostResources.testHosts.withLock { _ = $0.remove(namespace) }
            }
        }
    }
}
