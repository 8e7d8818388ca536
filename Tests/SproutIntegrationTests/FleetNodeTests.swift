import Foundation
import Glibc
import Logging
import SproutAPI
import SproutClient
import SproutCluster
import SproutCore
import SproutSystem
import Testing

extension Integration {
    /// Servers as nodes of a fleet (`--role node`) on a real PostgreSQL
    /// (Debian's, initdb'd by the test): registration, leases, fencing.
    @Suite("fleet nodes")
    struct FleetNodeTests {
        @Test("two nodes register (3 s leases, renewed every second: a busy machine does not fence them); one stopped past its lease is marked lost within lease + 5 s; woken, it fences itself: its running sandbox ends (node lost), it rejoins under a new epoch")
        func leaseAndFence() async throws {
            try await withTestPostgres { postgres in try await run(catalog: postgres.url(), token: try clusterTokenFile(in: postgres.directory)) }
        }

        func run(catalog: String, token: String) async throws {
            func args(_ port: Int) -> [String] {
                ["--role", "node", "--catalog", catalog, "--cluster-token", token, "--advertise", "http://127.0.0.1:\(port)", "--lease-seconds", "3"]
            }
            try await ServerHarness.with(extraArgs: args(7001)) { a in
                try await ServerHarness.with(extraArgs: args(7002)) { b in
                    let (nodeA, nodeB) = ("node-" + a.instance, "node-" + b.instance)
                    let nodes = try await a.client.nodes()
                    #expect(Set(nodes.map(\.id)) == [nodeA, nodeB] && nodes.allSatisfy { $0.state == "ready" && $0.epoch == 1 }, "\(nodes)")
                    let listed = try #require(nodes.first { $0.id == nodeB })
                    #expect(listed.address == "http://127.0.0.1:7002" && listed.memoryMB > 0 && listed.cpuCapacity > 0 && listed.cpuFlags > 0)
                    #expect(listed.runtime.hasPrefix("gvisor"), "\(listed.runtime)")
                    // The control for what follows: a renewed lease stays ahead.
                    #expect(try await eventually { try await a.client.nodes().allSatisfy { $0.leaseSeconds > 0.5 } })

                    let sandbox = try await b.client.createSandbox(API.CreateSandbox(env: "empty"))
                    try await startCounterAndServer(b.client, sandbox.id)

                    // b stops (as a partitioned or frozen host would): a marks it lost once its lease has passed.
                    let stopped = monotonicSeconds()
                    kill(b.pid, SIGSTOP)
                    var continued = false
                    defer { if !continued { kill(b.pid, SIGCONT) } }
                    #expect(try await eventually { try await a.client.nodes().first { $0.id == nodeB }?.state == "lost" })
                    let lostAfter = monotonicSeconds() - stopped
                    #expect(lostAfter <= 3 + 5, "marked lost after \(lostAfter) s")
                    #expect(a.log.contains("node lost"))

                    // Woken, b finds its lease refused: it stops its running sandbox and joins again.
                    kill(b.pid, SIGCONT)
                    continued = true
                    #expect(try await eventually { try await b.client.sandbox(sandbox.id).state == .killed })
                    let ended = try await b.client.sandbox(sandbox.id)
                    #expect(ended.error?.hasPrefix("node lost") == true, "\(String(describing: ended.error))")
                    #expect(try await eventually {
                        let back = try await a.client.nodes().first { $0.id == nodeB }
                        return back?.state == "ready" && back?.epoch == 2
                    })
                    #expect(b.log.contains("fenced"))
                    // a was never fenced.
                    #expect(try await a.client.nodes().first { $0.id == nodeA }?.epoch == 1)

                    // Drain asked of a node: it stops taking placements and moves nothing (that is an API server's);
                    // what is left on it is listed. Again: the same.
                    let drained = try await a.client.drainNode(nodeA)
                    #expect(drained.node.state == "draining" && drained.moved.isEmpty && drained.failed.isEmpty, "\(drained)")
                    #expect(Set(drained.remaining) == Set(try await a.client.sandboxes().filter { $0.state == .running || $0.state == .paused }.map(\.id)))
                    #expect(try await a.client.drainNode(nodeA).node.state == "draining")
                    await expectNoLeftovers(b.data)
                }
            }
        }

        @Test("sprout fleet up 3 starts PostgreSQL, an S3 server, an API server and three nodes; creates spread one to each node and run there; fleet down stops every process and removes it all, leaving nothing on the host")
        func fleetUpDown() async throws {
            let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-fleet-test")
            try FileSystem.removeTree(directory)  // `fleet up` makes it, and refuses one that holds a fleet
            let env = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"]
            let fleet = [ServerHarness.binary, "fleet"]
            do {
                try await upAndDown(directory: directory, fleet: fleet, env: env)
            } catch {
                if FileSystem.exists(directory) { _ = try? await CLI.runProcess(fleet + ["down", "--directory", directory], env: env) }
                throw error
            }
        }

        func upAndDown(directory: String, fleet: [String], env: [String]) async throws {
            let up = try await CLI.runProcess(fleet + ["up", "3", "--directory", directory, "--cache", ServerHarness.cache, "--api-port", "0"], env: env)
            #expect(up.status == 0, "\(up.stdout)\n\(up.stderr)")
            func exported(_ name: String) -> String? {
                up.stdout.split(separator: "\n").first { $0.hasPrefix("export \(name)=") }.map { String($0.dropFirst("export \(name)=".count)) }
            }
            let url = try #require(exported("SPROUT_API_URL")), key = try #require(exported("SPROUT_API_KEY"))
            let instances = (1...3).map { HostResources.instance(of: directory + "/node-\($0)") }
            let api = try SproutAPIClient(url: url, apiKey: key)
            #expect(try await eventually { try await api.nodes().filter { $0.state == "ready" }.count == 3 })
            // Placement by free room: three creates, one on each node.
            var sandboxes: [String] = []
            for _ in 0..<3 { sandboxes.append(try await api.createSandbox(API.CreateSandbox(env: "empty")).id) }
            let nodes = try await api.nodes()
            #expect(nodes.map(\.sandboxes) == [1, 1, 1], "\(nodes)")
            #expect(Set(try await api.sandboxes().compactMap(\.node)).count == 3)
            for id in sandboxes { #expect(try await api.run(id, API.Exec(cmd: ["hostname"])).stdoutText == id + "\n") }

            let down = try await CLI.runProcess(fleet + ["down", "--directory", directory], env: env)
            #expect(down.status == 0 && !FileSystem.exists(directory), "\(down.stdout)\n\(down.stderr)")
            let running = ((try? FileSystem.children("/proc")) ?? []).filter { pid in
                Int(pid) != nil && ((try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? "").contains(directory)
            }
            #expect(running.isEmpty, "processes of the fleet still running: \(running)")
            for instance in instances {
                #expect(!instance.isEmpty)
                let left = await HostResources.leftovers(instance: instance, sandboxes: Set(sandboxes))
                #expect(left.isEmpty, "left on the host by node \(instance): \(left)")
            }
        }

        @Test("a host on its own with its catalog in PostgreSQL (--catalog): no SQLite file; a sandbox paused with its processes is there after kill -9 of the server and resumes where it was")
        func catalogOnPostgres() async throws {
            try await withTestPostgres { postgres in
                try await ServerHarness.with(extraArgs: ["--catalog", postgres.url()]) { server in
                    let api = server.client
                    let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                    try await startCounterAndServer(api, sandbox.id)
                    #expect(!FileSystem.exists(server.data + "/sprout.db"), "the catalog is not in SQLite")
                    let db = try await PostgresSQLDatabase(url: postgres.url(), logger: Logger(label: "test"))
                    defer { Task { await db.close() } }
                    let state = { try await db.read { try await $0.strings("SELECT state FROM sandbox WHERE id = ?", .text(sandbox.id)) } }
                    #expect(try await state() == ["running"], "the record is in PostgreSQL")
                    let before = try await counter(api, sandbox.id)
                    _ = try await api.pause(sandbox.id)
                    server.crash()
                    try server.start()
                    let after = server.client
                    #expect(try await after.sandbox(sandbox.id).state == .paused)
                    #expect(try await state() == ["paused"])
                    _ = try await after.resume(sandbox.id)
                    let resumed = try await counter(after, sandbox.id)
                    #expect(resumed >= before, "the counter goes on from where the pause left it (\(before) -> \(resumed))")
                    #expect(try await eventually { try await counter(after, sandbox.id) > resumed }, "and counts")
                    #expect(try await state() == ["running"])
                }
            }
        }

        @Test("a server alone answers that it is in no fleet; bad fleet settings stop the start with the reason")
        func refusals() async throws {
            try await ServerHarness.with { server in
                await #expect(throws: SproutError.self) { _ = try await server.client.nodes() }
            }
            let token = try clusterTokenFile(in: FileManager.default.temporaryDirectory.path)
            defer { unlink(token) }
            let short = token + "-short"
            try FileSystem.writeAtomically(short, "too short\n", mode: 0o600)
            defer { unlink(short) }
            for (args, reason) in [
                (["--role", "node"], "--role node needs --catalog"),
                (["--role", "node", "--catalog", "postgres://sprout@127.0.0.1:1/sprout"], "--role node needs --cluster-token"),
                (["--role", "node", "--catalog", "postgres://sprout@127.0.0.1:1/sprout", "--cluster-token", token], "--role node needs --advertise"),
                (["--role", "api"], "--role api needs --catalog"),
                (["--role", "api", "--catalog", "postgres://x@h/d"], "--role api needs --cluster-token"),
                (["--role", "api", "--catalog", "postgres://x@h/d", "--cluster-token", short], "16 characters or more"),
                (["--role", "edge"], "unknown role 'edge'"),
                (["--cache-gb", "1"], "give --store too"),
                (["--advertise", "http://127.0.0.1:1"], "are for --role node or api"),
                (["--catalog", "mysql://x@h/d"], "not a postgres:// address"),
                (["--catalog", "postgres://sprout@127.0.0.1:1/sprout"], "is not usable"),
                (["--role", "node", "--catalog", "postgres://sprout@127.0.0.1:1/sprout", "--cluster-token", token, "--advertise", "http://10.1.2.3:7070"],
                 "would send the cluster token to this node in clear text"),
                (["--role", "node", "--catalog", "postgres://sprout@127.0.0.1:1/sprout", "--cluster-token", token, "--advertise", "https://127.0.0.1:7070"],
                 "this node serves plain HTTP"),
                (["--role", "node", "--catalog", "mysql://x@h/d", "--cluster-token", token, "--advertise", "http://127.0.0.1:1"], "not a postgres:// address"),
            ] {
                do {
                    _ = try await ServerHarness.with(extraArgs: args) { _ in () }
                    Issue.record("started with \(args)")
                } catch {
                    #expect("\(error)".contains(reason), "\(args): \(error)")
                }
            }
        }
    }
}

/// A file holding a new cluster token, in `directory`.
func clusterTokenFile(in directory: String) throws -> String {
    let path = directory + "/cluster-token-\(Identifiers.random(length: 6))"
    try FileSystem.writeAtomically(path, Identifiers.random(length: 32) + "\n", mode: 0o600)
    return path
}
