import Foundation
import Glibc
import Logging
import SproutAPI
import SproutClient
import SproutCluster
import SproutCore
import SproutServer
import SproutSystem
import Testing

extension Integration {
    /// A fleet on this machine: API servers (`--role api`) and nodes
    /// (`--role node`) on a real PostgreSQL, requests routed through the API.
    @Suite("fleet API")
    struct FleetAPITests {
        @Test("through an API server: creates spread over two nodes (one plain HTTP on loopback, one HTTPS with the certificate it made, pinned from the catalog), each request reaches its sandbox's node, lists merge by team, a kill frees the reservation; a node serving another certificate than it registered is refused; a second API server serves when the first stops; a wrong cluster token is refused")
        func routed() async throws {
            try await withTestPostgres { postgres in
                let token = try clusterTokenFile(in: postgres.directory)
                let catalog = postgres.url()
                let apiArgs = ["--role", "api", "--catalog", catalog, "--cluster-token", token]
                // Advertised without a port: each node registers the one it listens on.
                let nodeArgs = ["--role", "node", "--catalog", catalog, "--cluster-token", token]
                try await ServerHarness.with(extraArgs: apiArgs) { first in
                    try await ServerHarness.with(extraArgs: nodeArgs + ["--advertise", "http://127.0.0.1"]) { a in
                        // Listening beyond loopback, b serves HTTPS with a certificate it made for itself.
                        try await ServerHarness.with(extraArgs: nodeArgs + ["--advertise", "https://127.0.0.1", "--host", "0.0.0.0"]) { b in
                            #expect(b.scheme == "https")
                            #expect(try await eventually { try await first.client.nodes().count == 2 })
                            #expect(Set(try await first.client.nodes().map(\.address)) == ["http://127.0.0.1:\(a.port)", "https://127.0.0.1:\(b.port)"])
                            try await routes(first: first, a: a, b: b, apiArgs: apiArgs, token: token, catalog: catalog)
                        }
                    }
                }
            }
        }

        func routes(first: ServerHarness, a: ServerHarness, b: ServerHarness, apiArgs: [String], token: String, catalog: String) async throws {
            let api = first.client  // the fleet's admin key, made by the first API server
            let nodes = try await api.nodes()
            #expect(nodes.count == 2 && nodes.allSatisfy { $0.state == "ready" }, "\(nodes)")

            var ids: [String] = []
            for _ in 0..<4 { ids.append(try await api.createSandbox(API.CreateSandbox(env: "empty")).id) }
            // Each node holds what it was given, and together all four.
            let onA = Set(try await a.client.sandboxes().map(\.id)), onB = Set(try await b.client.sandboxes().map(\.id))
            #expect(!onA.isEmpty && !onB.isEmpty && onA.union(onB) == Set(ids) && onA.isDisjoint(with: onB), "a: \(onA), b: \(onB)")
            #expect(try await api.nodes().map(\.sandboxes).reduce(0, +) == 4)
            // Each says which node holds it, alone and in the list.
            let node = { (id: String) in onA.contains(id) ? "node-\(a.instance)" : "node-\(b.instance)" }
            for id in ids { #expect(try await api.sandbox(id).node == node(id)) }
            #expect(try await api.sandboxes().allSatisfy { $0.node == node($0.id) })
            for id in ids {
                #expect(try await api.run(id, API.Exec(cmd: ["hostname"])).stdoutText == id + "\n", "the request reached \(id)'s node")
                #expect(try await api.sandbox(id).state == .running)
            }
            #expect(Set(try await api.sandboxes().map(\.id)) == Set(ids))
            // A streamed exec: a WebSocket upgraded by the API server and relayed to the node, stdin in, output and exit out.
            let fed = Locked(false)
            let output = Locked<[UInt8]>([])
            // On b: the WebSocket to the node is TLS.
            let streamed = try await api.execStreaming(try #require(onB.first), API.Exec(cmd: ["sh", "-c", "cat; echo done >&2; exit 3"]), input: {
                fed.withLock { let first = !$0; $0 = true; return first } ? Array("fed through the fleet\n".utf8) : nil
            }) { event in
                if let text = event.stdout, let bytes = Data(base64Encoded: text) { output.withLock { $0 += bytes } }
            }
            #expect(streamed == API.Exit(code: 3) && String(decoding: output.current, as: UTF8.self) == "fed through the fleet\n")

            try await pinnedCertificate(api: api, b: b, sandbox: try #require(onB.first), catalog: catalog)

            // A port by host, `{port}-{id}.localhost`, through the API server to the node (b: over TLS), with the fleet's key.
            let served = try #require(onB.first)
            try await startCounterAndServer(api, served)
            #expect(try Self.preview(port: first.port, sandbox: served, key: first.adminKey) == (200, "served\n"))
            #expect(try Self.preview(port: first.port, sandbox: served, key: "sk_wrong").0 == 401, "the control: a wrong key")
            // A WebSocket by host too: the busybox echo server of the single-host test, reached through the API server.
            try await api.write(served, bytes: Array(Integration.GVisorSandboxTests.echoServer.utf8), to: "/ws-echo.sh")
            _ = try await api.run(served, API.Exec(shell: "chmod +x /ws-echo.sh; (nc -ll -p 8081 -e /ws-echo.sh >/dev/null 2>&1 &)"))
            try await eventually { try await api.run(served, API.Exec(shell: "netstat -ltn | grep -q ':8081 '")).exit == API.Exit(code: 0) }
            let byHost = try WebSocketConnection(host: "127.0.0.1", port: first.port, target: "/any/path", headers: [("X-API-Key", first.adminKey)],
                                                 authority: "8081-\(served).localhost:\(first.port)")
            try await byHost.send(.text("ping through the fleet by host"))
            #expect(try await byHost.receive() == .text("ping through the fleet by host"))
            byHost.close()

            // Volumes live on one node (the first ready by id), and sandboxes that mount them are placed there.
            let home = "node-\(a.instance)" < "node-\(b.instance)" ? a : b
            _ = try await api.createVolume(API.CreateVolume(name: "shared-data", sizeMB: 64))
            _ = try await api.volumeWrite("shared-data", path: "/hello.txt", bytes: Array("kept in the volume\n".utf8))
            #expect(try await home.client.volumes().map(\.name) == ["shared-data"], "the volume is on the first node")
            var mounting: [String] = []
            for _ in 0..<2 {
                mounting.append(try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "shared-data", path: "/data")])).id)
            }
            for id in mounting {
                #expect(try await api.sandbox(id).node == "node-\(home.instance)", "placed where its volume is")
                #expect(try await api.run(id, API.Exec(cmd: ["cat", "/data/hello.txt"])).stdoutText == "kept in the volume\n")
                _ = try await api.killSandbox(id)
            }
            // A second volume goes to the node with fewer, and its sandboxes there; a sandbox cannot mount volumes of two nodes.
            let elsewhere = home.data == a.data ? b : a
            _ = try await api.createVolume(API.CreateVolume(name: "other-data", sizeMB: 64))
            _ = try await api.volumeWrite("other-data", path: "/hello.txt", bytes: Array("kept on the other node\n".utf8))
            #expect(try await elsewhere.client.volumes().map(\.name) == ["other-data"], "the second volume is on the other node")
            #expect(Set(try await api.volumes().map(\.name)) == ["shared-data", "other-data"], "the list has both nodes' volumes")
            await #expect(throws: SproutError.self) { try await api.createVolume(API.CreateVolume(name: "other-data", sizeMB: 64)) }
            let onOther = try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "other-data", path: "/data")])).id
            #expect(try await api.sandbox(onOther).node == "node-\(elsewhere.instance)", "placed where its volume is")
            #expect(try await api.run(onOther, API.Exec(cmd: ["cat", "/data/hello.txt"])).stdoutText == "kept on the other node\n")
            _ = try await api.killSandbox(onOther)
            await #expect(throws: SproutError.self) {
                try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "shared-data", path: "/a"),
                                                                                      API.VolumeMount(volume: "other-data", path: "/b")]))
            }
            try await api.deleteVolume("other-data")
            try await api.deleteVolume("shared-data")
            #expect(try await api.volumes().isEmpty)
            _ = try await api.createVolume(API.CreateVolume(name: "other-data", sizeMB: 64))
            #expect(try await api.volumes().map(\.name) == ["other-data"], "a deleted volume's name is free again")
            try await api.deleteVolume("other-data")

            // An env is recorded where it is made; the list through the API server has every node's, each env once.
            let made = try #require(ids.first { node($0) == "node-\(elsewhere.instance)" })
            let snapshot = try await api.snapshot(made, name: "made-elsewhere")
            #expect(try await elsewhere.client.envs().contains { $0.id == snapshot.id }, "recorded on its sandbox's node")
            #expect(!(try await home.client.envs().contains { $0.id == snapshot.id }), "the control: the builder does not have it")
            let listed = try await api.envs()
            #expect(listed.contains { $0.id == snapshot.id }, "\(listed.map(\.id))")
            #expect(listed.filter { $0.id == "empty" }.count == 1, "a built-in env once: \(listed.map(\.id))")
            // Its delete through the API server reaches the node that has it (not the builder, which answers 404).
            #expect(try await api.deleteEnv(snapshot.id) == [snapshot.id])
            #expect(!(try await elsewhere.client.envs().contains { $0.id == snapshot.id }), "deleted on its node")
            #expect(!(try await api.envs().contains { $0.id == snapshot.id }))
            await #expect(throws: SproutError.self) { _ = try await api.createSandbox(API.CreateSandbox(env: snapshot.id)) }

            // Keys live in the fleet: a team's key sees only its team's sandboxes, whichever node holds them.
            let teamKey = try await api.createKey(API.CreateKey(name: "t2", team: "t2"))
            let team = first.client(key: teamKey.secret)
            let theirs = try await team.createSandbox(API.CreateSandbox(env: "empty"))
            #expect(try await team.sandboxes().map(\.id) == [theirs.id])
            await #expect(throws: SproutError.self) { _ = try await team.sandbox(ids[0]) }
            #expect(!(try await api.sandboxes().map(\.id).contains(theirs.id)))
            await #expect(throws: SproutError(.notFound, "no sandbox with id 'sbx_nope'")) { _ = try await api.sandbox("sbx_nope") }

            // A kill frees the reservation.
            _ = try await team.killSandbox(theirs.id)
            #expect(try await api.nodes().map(\.sandboxes).reduce(0, +) == 4)

            // A node takes a fleet request only with the cluster token: the control with it, then a wrong one.
            let secret = (try String(contentsOfFile: token, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try Self.clusterRequest(port: a.port, token: secret) == 200)
            #expect(try Self.clusterRequest(port: a.port, token: String(secret.reversed())) == 401)

            // The stock E2B SDK through the API server: its control plane placed and forwarded, envd forwarded by E2b-Sandbox-Id.
            let url = "http://127.0.0.1:\(first.port)"
            let sdk = try await CLI.runProcess(
                [LongIntegration.E2BTests.python, Integration.OpenAPITests.root + "/Tests/e2b/sdk_fleet.py"],
                env: ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(url)", "E2B_SANDBOX_URL=\(url)", "E2B_VOLUME_API_URL=\(url)",
                      "E2B_API_KEY=\(first.adminKey)", "FLEET_VOLUMES=1"])
            #expect(sdk.status == 0 && sdk.stdout.contains("fleet SDK checks passed") && sdk.stdout.contains("fleet volume checks passed"),
                    "\(sdk.stdout.suffix(3000))\n\(sdk.stderr.suffix(3000))")

            // A second API server: the first stops, the second serves the same fleet with the same key.
            try await ServerHarness.with(extraArgs: apiArgs) { second in
                first.stopServer()
                let other = second.client(key: first.adminKey)
                #expect(Set(try await other.sandboxes().map(\.id)) == Set(ids))
                let late = try await other.createSandbox(API.CreateSandbox(env: "empty"))
                #expect(try await other.run(late.id, API.Exec(cmd: ["echo", "through the second"])).stdoutText == "through the second\n")
                for id in ids + [late.id] { _ = try await other.killSandbox(id) }
                #expect(try await other.nodes().map(\.sandboxes).reduce(0, +) == 0)
            }
            await expectNoLeftovers(a.data)
            await expectNoLeftovers(b.data)
        }

        /// The API server trusts an HTTPS node by the certificate it
        /// registered: with another certificate in the catalog (the node is
        /// not who it says), requests for its sandboxes are refused; the
        /// right one back, they pass again.
        func pinnedCertificate(api: SproutAPIClient, b: ServerHarness, sandbox: String, catalog url: String) async throws {
            let catalog = try await ClusterCatalog(url: url, logger: Logger(label: "test"))
            do {
                let node = try #require(try await catalog.nodes().first { $0.id == "node-\(b.instance)" })
                #expect(node.registration.certificate == (try String(contentsOfFile: b.data + "/tls/server.crt", encoding: .utf8)))
                let other = try TLSTests.scratch()
                defer { try? FileSystem.removeTree(other) }
                try SelfSignedCertificate.ensure(dataDirectory: other, listenHost: "127.0.0.1")
                let impostor = try String(contentsOfFile: SelfSignedCertificate.paths(dataDirectory: other).certificate, encoding: .utf8)
                let membership = ClusterCatalog.Membership(node: node.id, epoch: node.epoch)
                try await catalog.updateCertificate(impostor, of: membership)
                do {
                    _ = try await api.run(sandbox, API.Exec(cmd: ["true"]))
                    Issue.record("the API server talked to a node whose certificate is not the one registered")
                } catch let error as SproutError {
                    #expect(error.code == .unavailable && error.message.contains("cannot be reached"), "\(error)")
                }
                try await catalog.updateCertificate(node.registration.certificate, of: membership)
                #expect(try await api.run(sandbox, API.Exec(cmd: ["hostname"])).stdoutText == sandbox + "\n", "the control: the registered certificate")
            } catch {
                await catalog.shutdown()
                throw error
            }
            await catalog.shutdown()
        }

        @Test("pause on one node, kill -9 it and remove its state: the resume through the API lands on the other node, files and a running counter intact; once the node is lost, a sandbox paused to wake wakes on the other node at its next request and one that ran there is gone (not brought back from an older pause); the first node, back, drops its stale copy; a drain moves every sandbox off a node with its processes")
        func resumeElsewhere() async throws {
            try await withTestPostgres { postgres in
                try await withTestS3(bucket: "sprout-fleet") { s3, store in
                    let token = try clusterTokenFile(in: postgres.directory)
                    let credentials = s3.directory + "/credentials"
                    try FileSystem.writeAtomically(credentials, "AWS_ACCESS_KEY_ID=\(s3.credentials.accessKey)\nAWS_SECRET_ACCESS_KEY=\(s3.credentials.secretKey)\n", mode: 0o600)
                    let catalog = postgres.url()
                    // The move does not wait for the dead node to be marked lost (its connection is refused); the wake does (3 s leases).
                    let nodeArgs = ["--role", "node", "--catalog", catalog, "--cluster-token", token, "--advertise", "http://127.0.0.1", "--lease-seconds", "3",
                                    "--store", store.location.description, "--store-credentials", credentials]
                    try await ServerHarness.with(extraArgs: ["--role", "api", "--catalog", catalog, "--cluster-token", token]) { apiServer in
                        try await ServerHarness.with(extraArgs: nodeArgs) { a in
                            try await ServerHarness.with(extraArgs: nodeArgs) { b in
                                #expect(try await eventually { try await apiServer.client.nodes().count == 2 })
                                try await move(api: apiServer.client, apiPort: apiServer.port, key: apiServer.adminKey, a: a, b: b)
                            }
                        }
                    }
                }
            }
        }

        func move(api: SproutAPIClient, apiPort: UInt16, key: String, a: ServerHarness, b: ServerHarness) async throws {
            // Made through E2B's control plane: its envd access token must still open envd after the move.
            let (id, envdToken) = try Self.e2bCreate(port: apiPort, key: key)
            let sandbox = try await api.sandbox(id)
            #expect(try Self.envdHealth(port: apiPort, sandbox: id, token: envdToken) / 100 == 2)
            #expect(try Self.envdHealth(port: apiPort, sandbox: id, token: "ea_wrong") == 401, "the control: a wrong token is refused")
            let onA = try await a.client.sandboxes().contains { $0.id == sandbox.id }
            let (source, target) = onA ? (a, b) : (b, a)
            try await startCounterAndServer(api, sandbox.id)
            #expect(try await api.run(sandbox.id, API.Exec(shell: "echo moved-with-it > /root/note.txt")).exit == API.Exit(code: 0))
            // Two more on the source: one paused to wake at its next request, one paused and resumed (running; its pause left the store).
            let two = try await Self.placed(on: source, count: 2, env: "empty", api: api)
            let (waker, runner) = (two[0], two[1])
            try await startCounterAndServer(api, waker)
            let wakerBefore = try await counter(api, waker)
            #expect(try await api.pause(waker, autoResume: true).state == .paused)
            _ = try await api.pause(runner)
            #expect(try await api.resume(runner).state == .running)
            var clock = CounterClock()
            let before = try await counter(api, sandbox.id)
            #expect(try await api.pause(sandbox.id).state == .paused)
            clock.paused()

            // The source node dies, and its disk's copy of the pause with it.
            source.crash()
            do {
                try await afterCrash(api: api, apiPort: apiPort, envdToken: envdToken, sandbox: sandbox, before: before, clock: clock,
                                     source: source, target: target)
                try await afterLost(api: api, waker: waker, wakerBefore: wakerBefore, runner: runner, source: source, target: target)
                // The source comes back: it rejoins, and its stale paused copies end (their host resources with them).
                try source.start()
                #expect(try await eventually { try await source.client.sandbox(sandbox.id).state == .killed })
                #expect(try await source.client.sandbox(sandbox.id).error == "moved to node node-\(target.instance)")
                // What still ran here when the fleet counted the node lost ends as it rejoins.
                #expect(try await source.client.sandbox(runner).state == .killed)
                #expect(try await source.client.sandbox(runner).error == "node lost: the fleet counted this node lost while it was away")
                #expect(source.log.components(separatedBy: "fenced").count == 1, "back, it was never fenced: its renewals ran while it ended what it had")
                for id in [sandbox.id, waker] { _ = try await api.killSandbox(id) }
                try await sharedEnv(api: api, a: source, b: target)
                try await drainMoves(api: api, a: source, b: target)
                await expectNoLeftovers(source.data)
                await expectNoLeftovers(target.data)
            } catch {
                // Back up, so that its harness can clear what it holds (the paused copy's network) on the way out.
                if !source.isRunning { try? source.start() }
                throw error
            }
        }

        func afterCrash(
            api: SproutAPIClient, apiPort: UInt16, envdToken: String, sandbox: API.Sandbox, before: Int, clock: CounterClock, source: ServerHarness,
            target: ServerHarness
        ) async throws {
            var clock = clock
            try FileSystem.removeTree(source.data + "/images")
            try FileSystem.removeTree(source.data + "/sandboxes/\(sandbox.id)/upper")

            clock.resumed()
            let resumed = try await api.resume(sandbox.id)
            #expect(resumed.state == .running)
            #expect(try await target.client.sandboxes().contains { $0.id == sandbox.id }, "it runs on the other node now")
            let after = try await counter(api, sandbox.id)
            #expect(after >= before && after <= clock.most(from: before), "the counter was \(before) before the pause and \(after) after the move")
            #expect(try await eventually { try await counter(api, sandbox.id) > after }, "the counter keeps counting")
            #expect(try await api.run(sandbox.id, API.Exec(cmd: ["cat", "/root/note.txt"])).stdoutText == "moved-with-it\n")
            #expect(try await api.run(sandbox.id, API.Exec(cmd: ["hostname"])).stdoutText == sandbox.id + "\n")
            // Nodes derive envd tokens from the cluster token: the one E2B gave at the create opens envd on the new node.
            #expect(try Self.envdHealth(port: apiPort, sandbox: sandbox.id, token: envdToken) / 100 == 2)

        }

        /// Once the fleet counts the source lost: the sandbox paused there to
        /// wake is taken in by the other node at its next request and woken,
        /// its processes intact; the one that was running there is gone.
        func afterLost(api: SproutAPIClient, waker: String, wakerBefore: Int, runner: String, source: ServerHarness, target: ServerHarness) async throws {
            #expect(try await eventually { try await api.nodes().first { $0.id == "node-\(source.instance)" }?.state == "lost" })
            let woken = try await counter(api, waker)
            #expect(woken >= wakerBefore, "its counter went on from \(wakerBefore): \(woken)")
            #expect(try await target.client.sandbox(waker).state == .running, "woken on the other node")
            let gone = "sandbox \(runner) was running on node node-\(source.instance), which the fleet lost: it ended with its node (node lost)"
            await #expect(throws: SproutError(.notFound, gone)) { _ = try await api.sandbox(runner) }
            await #expect(throws: SproutError(.notFound, "no sandbox with id '\(runner)'")) { _ = try await api.resume(runner) }
        }

        /// `count` new sandboxes of `env` placed on `node` (others made on the way are killed).
        static func placed(on node: ServerHarness, count: Int, env: String, api: SproutAPIClient) async throws -> [String] {
            var (mine, others): ([String], [String]) = ([], [])
            for _ in 0..<12 where mine.count < count {
                let id = try await api.createSandbox(API.CreateSandbox(env: env)).id
                if try await node.client.sandboxes().contains(where: { $0.id == id }) { mine.append(id) } else { others.append(id) }
            }
            // Killed only now: kept, they fill the other node, so placement turns to this one.
            for id in others { _ = try await api.killSandbox(id) }
            guard mine.count == count else { throw SproutError(.internal, "placement put no \(count) of 12 sandboxes on node-\(node.instance)") }
            return mine
        }

        /// An env pushed through the API server is built on one node (the
        /// first ready by id) and recorded in the store; a sandbox of it
        /// placed on the other node finds it there by name, layers fetched.
        func sharedEnv(api: SproutAPIClient, a: ServerHarness, b: ServerHarness) async throws {
            let repo = try TLSTests.scratch()
            defer { try? FileSystem.removeTree(repo) }
            /// `sprout env push` of `toml` through the API server.
            func push(_ toml: String) async throws {
                try toml.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                let cli = try await CLI.runProcess(
                    [ServerHarness.binary, "env", "push", "--file", repo + "/sprout.toml", "--wait"],
                    env: ["PATH=/usr/bin:/bin", "HOME=/root", "SPROUT_API_URL=\(api.baseURL)", "SPROUT_API_KEY=\(api.apiKey ?? "")"])
                #expect(cli.status == 0, "\(cli.stdout)\n\(cli.stderr)")
            }
            try await push("""
                id = "fleetenv"
                [template]
                from = "empty"
                [build]
                run = ["mkdir -p /opt/app && echo built once > /opt/app/out.txt"]
                """)
            let (builder, other) = "node-\(a.instance)" < "node-\(b.instance)" ? (a, b) : (b, a)
            #expect(builder.log.contains("env stored") && !other.log.contains("env stored"), "built on the first ready node")
            #expect(try await api.envs().contains { $0.name == "fleetenv" }, "listed through the API")
            let there = try await Self.placed(on: other, count: 1, env: "fleetenv", api: api)[0]
            #expect(try await api.run(there, API.Exec(cmd: ["cat", "/opt/app/out.txt"])).stdoutText == "built once\n")
            #expect(other.log.contains("layer fetched from the store"))
            _ = try await api.killSandbox(there)

            // An env that mounts a volume by default: its sandboxes go where volumes live (the builder),
            // also those placement first gave the other node, which sends them back.
            _ = try await api.createVolume(API.CreateVolume(name: "env-data", sizeMB: 64))
            _ = try await api.volumeWrite("env-data", path: "/hello.txt", bytes: Array("mounted by default\n".utf8))
            try await push("""
                id = "withvolume"
                [template]
                from = "empty"
                [sandbox]
                volumes = ["env-data:/data"]
                """)
            let (holder, lacking) = try await a.client.volumes().contains { $0.name == "env-data" } ? (a, b) : (b, a)
            let sentBack = { try await lacking.client.metrics().split(separator: "\n").first {
                $0.hasPrefix("sprout_http_requests_total{") && $0.contains("route=\"/v1/sandboxes\"") && $0.contains("status=\"404\"")
            }.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0 }
            var mounting: [String] = []
            for _ in 0..<12 where try await sentBack() == 0 {
                mounting.append(try await api.createSandbox(API.CreateSandbox(env: "withvolume")).id)
            }
            #expect(try await sentBack() >= 1, "placement gave the other node one of them (and it sent it back)")
            for id in mounting {
                #expect(try await api.sandbox(id).node == "node-\(holder.instance)", "placed where the volume is")
                #expect(try await api.run(id, API.Exec(cmd: ["cat", "/data/hello.txt"])).stdoutText == "mounted by default\n")
                _ = try await api.killSandbox(id)
            }
            try await api.deleteVolume("env-data")

            // The store's collection asked of the API server: each node collects (within the grace nothing goes).
            let collected = try await api.collectStore()
            #expect(collected.roots >= 2 && collected.deleted.isEmpty, "\(collected)")
            for node in [a, b] { #expect(try await node.client.metrics().contains("sprout_store_collections_total 1"), "node-\(node.instance) collected") }

            // A delete through the API server: the builder records it in the store, and the other node, which took the env from there, forgets it too.
            let fleetenv = try await api.env("fleetenv")
            #expect(try await other.client.envs().contains { $0.id == fleetenv.id }, "the control: the other node has it")
            #expect(try await api.deleteEnv("fleetenv") == [fleetenv.id])
            for node in [builder, other] {
                #expect(!(try await node.client.envs().contains { $0.id == fleetenv.id }), "node-\(node.instance) forgot it")
                for reference in ["fleetenv", fleetenv.id] {
                    await #expect(throws: SproutError.self) { _ = try await node.client.createSandbox(API.CreateSandbox(env: reference)) }
                }
            }
            // A node that missed a delete (made on the builder directly) forgets the env at its next collection.
            try await push("""
                id = "missed"
                [template]
                from = "empty"
                [build]
                run = ["echo missed > /missed.txt"]
                """)
            let missed = try await api.env("missed")
            _ = try await api.killSandbox(try await Self.placed(on: other, count: 1, env: "missed", api: api)[0])
            #expect(try await builder.client.deleteEnv("missed") == [missed.id])
            #expect(try await other.client.envs().contains { $0.id == missed.id }, "the control: the other node still has it")
            _ = try await other.client.collectStore()
            #expect(!(try await other.client.envs().contains { $0.id == missed.id }), "forgotten at the collection")
            #expect(other.log.contains("envs deleted elsewhere in the fleet were forgotten here"))

            // E2B's template builder, stock SDK, through the API server: built on the builder, started anywhere.
            let sdk = try await CLI.runProcess(
                [LongIntegration.E2BTests.python, Integration.OpenAPITests.root + "/Tests/e2b/sdk_fleet.py"],
                env: ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(api.baseURL)", "E2B_SANDBOX_URL=\(api.baseURL)",
                      "E2B_API_KEY=\(api.apiKey ?? "")", "FLEET_TEMPLATES=1"])
            #expect(sdk.status == 0 && sdk.stdout.contains("fleet template checks passed"), "\(sdk.stdout.suffix(3000))\n\(sdk.stderr.suffix(3000))")
            // The template's sandboxes, by name and by tag, ran on both nodes: the one that did not build it found it in the store.
            for kind in ["template (", ":stable ("] {
                let ids = sdk.stdout.split(separator: "\n").filter { $0.contains(kind) }.compactMap { $0.split(separator: "(").last?.split(separator: ")").first }
                #expect(ids.count == 2 && ids.contains { other.log.contains(String($0)) }, "\(kind) \(ids)")
            }
        }

        /// Drain through the API: every sandbox on the node moves to the other,
        /// a running one with its processes (its counter keeps counting), a
        /// paused one paused; the drained node then takes no new sandbox.
        func drainMoves(api: SproutAPIClient, a: ServerHarness, b: ServerHarness) async throws {
            let first = try await api.createSandbox(API.CreateSandbox(env: "empty")).id
            let second = try await api.createSandbox(API.CreateSandbox(env: "empty")).id
            for id in [first, second] { try await startCounterAndServer(api, id) }
            _ = try await api.pause(second)
            let (drained, other) = try await a.client.sandboxes().contains { $0.id == first } ? (a, b) : (b, a)

            // A volume moves between nodes through the store: refused while a sandbox mounts it (nothing changes), then moved.
            let volume = try await api.createVolume(API.CreateVolume(name: "moving", sizeMB: 64))
            _ = try await api.volumeWrite("moving", path: "/kept.txt", bytes: Array("kept across moves\n".utf8))
            let (home, away) = try await a.client.volumes().contains { $0.id == volume.id } ? (a, b) : (b, a)
            let user = try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "moving", path: "/data")])).id
            await #expect(throws: SproutError.self) { _ = try await api.moveVolume("moving") }
            #expect(try await api.run(user, API.Exec(cmd: ["cat", "/data/kept.txt"])).stdoutText == "kept across moves\n", "still mounted where it was")
            #expect(try await home.client.volumes().map(\.id) == [volume.id])
            _ = try await api.killSandbox(user)
            #expect(try await api.moveVolume("moving", to: "node-\(away.instance)").id == volume.id)
            let (awayList, homeList) = (try await away.client.volumes(), try await home.client.volumes())
            #expect(awayList.map(\.id) == [volume.id] && homeList.isEmpty, "on the other node, gone from the first")
            #expect(try await api.volumeRead("moving", path: "/kept.txt") == Array("kept across moves\n".utf8))
            if away.data != drained.data { _ = try await api.moveVolume("moving") }  // to the only other ready node: the one to drain
            #expect(try await drained.client.volumes().map(\.id) == [volume.id])
            // A running sandbox that mounts it, on the node to drain, with a counter, and a file it wrote there.
            let mounting = try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "moving", path: "/data")])).id
            try await startCounterAndServer(api, mounting)
            #expect(try await api.run(mounting, API.Exec(shell: "echo written before the drain > /data/in.txt")).exit == API.Exit(code: 0))
            let mountingBefore = try await counter(api, mounting)

            let live: Set<SandboxState> = [.running, .paused]
            let there = try await drained.client.sandboxes().filter { live.contains($0.state) }
            #expect(there.contains { $0.id == mounting })
            let before = try await counter(api, first)

            let report = try await api.drainNode("node-\(drained.instance)")
            #expect(report.failed.isEmpty && report.remaining.isEmpty && report.node.state == "draining", "\(report)")
            #expect(Set(report.moved.map(\.id)) == Set(there.map(\.id)) && report.moved.allSatisfy { $0.node == "node-\(other.instance)" }, "\(report)")
            for sandbox in there {
                #expect(report.moved.first { $0.id == sandbox.id }?.state == sandbox.state, "a \(sandbox.state) sandbox moves \(sandbox.state)")
            }
            #expect(try await other.client.sandbox(first).state == .running, "it runs on the other node")
            let after = try await counter(api, first)
            // It ran on until the pause, inside the drain: not restarted (it would count from 1 again).
            #expect(after >= before, "the counter was \(before) before the drain and \(after) after")
            #expect(try await eventually { try await counter(api, first) > after }, "its counter process moved with it and keeps counting")
            // The volume moved with the sandbox that mounts it, which runs on there with its processes.
            #expect(report.movedVolumes == [API.NodeDrain.VolumeMove(id: volume.id, name: "moving", node: "node-\(other.instance)")], "\(report)")
            let (otherList, drainedList) = (try await other.client.volumes(), try await drained.client.volumes())
            #expect(otherList.map(\.id) == [volume.id] && drainedList.isEmpty)
            #expect(try await other.client.sandbox(mounting).state == .running)
            #expect(try await api.run(mounting, API.Exec(cmd: ["cat", "/data/kept.txt", "/data/in.txt"])).stdoutText == "kept across moves\nwritten before the drain\n")
            #expect(try await counter(api, mounting) >= mountingBefore)
            #expect(try await eventually { try await counter(api, mounting) > mountingBefore + 1 }, "its counter keeps counting")
            #expect(try await api.resume(second).state == .running)
            #expect(try await other.client.sandbox(second).state == .running)
            #expect(try await drained.client.sandboxes().allSatisfy { !live.contains($0.state) }, "nothing is left on the drained node")
            let late = try await api.createSandbox(API.CreateSandbox(env: "empty")).id
            #expect(try await other.client.sandbox(late).state == .running, "a draining node takes no new sandbox")
            for id in [first, second, late, mounting] { _ = try await api.killSandbox(id) }
            try await api.deleteVolume("moving")
            await expectNoLeftovers(drained.data)
        }

        /// E2B's `POST /sandboxes` for `empty` through the API server: the sandbox's id and envd access token.
        static func e2bCreate(port: UInt16, key: String) throws -> (String, String) {
            let connection = try HTTPConnection(host: "127.0.0.1", port: port, timeoutSeconds: 120)
            defer { connection.close() }
            let body = Array(#"{"templateID":"empty","timeout":300}"#.utf8)
            try connection.sendHead(method: "POST", target: "/sandboxes", host: "127.0.0.1:\(port)",
                                    headers: [("X-API-Key", key), ("Content-Type", "application/json")], bodyLength: Int64(body.count))
            try connection.sendBody(body)
            let head = try connection.readResponseHead()
            var bytes: [UInt8] = []
            while let chunk = try connection.readBodyChunk() { bytes += chunk }
            guard head.status == 201, let object = try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any],
                  let id = object["sandboxID"] as? String, let token = object["envdAccessToken"] as? String
            else { throw SproutError(.internal, "E2B create answered \(head.status): \(String(decoding: bytes, as: UTF8.self))") }
            return (id, token)
        }

        /// envd's `GET /health` for the sandbox through the API server, with `token`; the status.
        static func envdHealth(port: UInt16, sandbox: String, token: String) throws -> Int {
            let connection = try HTTPConnection(host: "127.0.0.1", port: port)
            defer { connection.close() }
            try connection.sendHead(method: "GET", target: "/health", host: "127.0.0.1:\(port)",
                                    headers: [("E2b-Sandbox-Id", sandbox), ("X-Access-Token", token)], bodyLength: 0)
            return try connection.readResponseHead().status
        }

        /// `GET /index.html` of port 8080 of `sandbox` by host (`8080-{id}.localhost`) through the API server at `port`: status and body.
        static func preview(port: UInt16, sandbox: String, key: String) throws -> (Int, String) {
            let connection = try HTTPConnection(host: "127.0.0.1", port: port)
            defer { connection.close() }
            try connection.sendHead(method: "GET", target: "/index.html", host: "8080-\(sandbox).localhost:\(port)", headers: [("X-API-Key", key)], bodyLength: 0)
            let head = try connection.readResponseHead()
            var bytes: [UInt8] = []
            while let chunk = try connection.readBodyChunk() { bytes += chunk }
            return (head.status, String(decoding: bytes, as: UTF8.self))
        }

        /// `GET /v1/sandboxes` on a node as a fleet request with `token`; its status.
        static func clusterRequest(port: UInt16, token: String) throws -> Int {
            let connection = try HTTPConnection(host: "127.0.0.1", port: port)
            defer { connection.close() }
            try connection.sendHead(method: "GET", target: "/v1/sandboxes", host: "127.0.0.1:\(port)",
                                    headers: [("Sprout-Cluster-Token", token), ("Sprout-Team", "default"), ("Sprout-Key-Id", "k1")], bodyLength: 0)
            return try connection.readResponseHead().status
        }
    }
}
