import Foundation
import Glibc
import SproutAPI
import SproutClient
import SproutCore
import SproutS3
import SproutSystem
import Testing

extension Integration {
    /// `--store s3://…` against a real S3 server (OpenStack Swift's s3api,
    /// started by the test): a pause is acknowledged once its memory image
    /// and writable layer are in the store.
    @Suite("object store")
    struct ObjectStoreTests {
        /// A server with `--store` on a fresh S3 server; both removed after.
        static func withStore(extraArgs: [String] = [], _ body: (LocalS3, S3Client, ServerHarness) async throws -> Void) async throws {
            try await withTestS3(bucket: "sprout-pauses", prefix: "node-a") { s3, store in
                let credentials = s3.directory + "/credentials"
                try FileSystem.writeAtomically(credentials, "AWS_ACCESS_KEY_ID=\(s3.credentials.accessKey)\nAWS_SECRET_ACCESS_KEY=\(s3.credentials.secretKey)\n", mode: 0o600)
                // The server makes the bucket it is given if it is missing.
                try await ServerHarness.with(extraArgs: ["--store", store.location.description, "--store-credentials", credentials] + extraArgs) { server in
                    try await body(s3, store, server)
                }
            }
        }

        @Test("a paused sandbox comes back from the store when the host lost its image and writable layer: processes and files intact")
        func resumeFromStore() async throws {
            try await Self.withStore { s3, store, server in
                var api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await startCounterAndServer(api, sandbox.id)
                // A file written, and one of the env's deleted (an overlay whiteout in the writable layer).
                let written = try await api.run(sandbox.id, API.Exec(shell: "mkdir -p /srv/notes && echo kept > /srv/notes/a.txt && test -e /bin/ed && rm /bin/ed"))
                #expect(written.exit == API.Exit(code: 0))
                var clock = CounterClock()
                let before = try await counter(api, sandbox.id)
                let paused = try await api.pause(sandbox.id)
                clock.paused()
                #expect(paused.memory?.count == 1)
                let image = try #require(try FileSystem.children(server.data + "/images/manifests").first).replacingOccurrences(of: ".json", with: "")
                // The image's manifest, its chunks in one pack, the writable layer: a handful of objects.
                let objects = try await store.list().map(\.key)
                #expect(objects.contains("images/\(image).json"), "\(objects)")
                #expect(objects.filter { $0.hasPrefix("packs/") }.count == 1, "\(objects)")
                #expect(objects.filter { $0.hasPrefix("uppers/") }.count == 1, "\(objects)")

                // The host loses what the pause left on its disk.
                server.stopServer()
                let directory = server.data + "/sandboxes/" + sandbox.id
                for path in [server.data + "/images/manifests", server.data + "/images/chunks", directory + "/upper", server.data + "/remote"] {
                    #expect(FileSystem.exists(path), "\(path) was there")
                    try FileSystem.removeTree(path)
                }
                try server.start()
                api = server.client  // on its new port
                clock.resumed()
                let resumed = try await api.resume(sandbox.id)
                #expect(resumed.state == .running)
                let after = try await counter(api, sandbox.id)
                #expect(after >= before && after <= clock.most(from: before), "the counter was \(before) before the pause and \(after) after")
                #expect(try await eventually { try await counter(api, sandbox.id) > after }, "the counter keeps counting")
                #expect(try await api.preview(sandbox.id, port: 8080, path: "/index.html").1 == Array("served\n".utf8))
                #expect(try await api.run(sandbox.id, API.Exec(cmd: ["cat", "/srv/notes/a.txt"])).stdoutText == "kept\n")
                // The deletion came back too.
                #expect(try await api.run(sandbox.id, API.Exec(shell: "test -e /bin/ed || echo gone")).stdoutText == "gone\n")
                #expect(server.log.contains("writable layer fetched from the store"))

                // A second pause stores only what the store lacks: the pack of the first is reused.
                _ = try await api.pause(sandbox.id)
                let packs = try await store.list(prefix: "packs/").count
                #expect(packs == 2, "one more pack")
                _ = try await api.resume(sandbox.id)
                _ = s3
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }

        /// Pushes env `id`: `empty` and one run step.
        static func pushEnv(_ id: String, run: String, to server: ServerHarness) async throws {
            let repo = server.data + "/repo-" + id
            try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
            try """
                id = "\(id)"
                [template]
                from = "empty"
                [build]
                run = ["\(run)"]
                """.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
            let pushed = try await CLI(server: server).run(["env", "push", "--file", repo + "/sprout.toml", "--wait", "--json"])
            #expect(pushed.status == 0, "\(pushed.stderr)")
        }

        /// Sweeps of `store` finished (from /metrics): a sweep runs when no
        /// operation holds a lease on its store, so tests wait for one.
        static func sweeps(_ api: SproutAPIClient, _ store: String, metric: String = "sprout_store_sweeps_total") async throws -> Int {
            let line = try await api.metrics().split(separator: "\n").first { $0.hasPrefix("\(metric){store=\"\(store)\"} ") }
            return line.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
        }

        @Test("--cache-gb 0: once a sandbox is paused, the host's copies of its memory image and its env's layers go (the store has them) and come back at the resume, processes and files intact; layers a running sandbox has mounted stay")
        func boundedCache() async throws {
            try await Self.withStore(extraArgs: ["--cache-gb", "0"]) { _, store, server in
                let api = server.client
                try await Self.pushEnv("cached", run: "mkdir -p /opt/app && echo built > /opt/app/out.txt", to: server)
                let digests = Set(try await store.list(prefix: "layers/").map { String($0.key.split(separator: "/")[1]) })
                #expect(!digests.isEmpty)
                let held = { digests.filter { FileSystem.isDirectory(server.data + "/layers/\($0.prefix(20))") } }

                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "cached"))
                #expect(held() == digests, "the control: a created sandbox's layers are on the host")
                let other = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await startCounterAndServer(api, sandbox.id)
                let before = try await counter(api, sandbox.id)
                // Paused: its image is in the store, its layers no longer mounted; the sweeps after the pause evict both.
                let manifests = { (try? FileSystem.children(server.data + "/images/manifests")) ?? [] }
                _ = try await api.pause(sandbox.id)
                // (Without --cache-gb the image stays: `resumeFromStore` finds it there.)
                #expect(try await eventually { manifests().isEmpty }, "no memory image kept: \(manifests())")
                #expect(try await eventually { held().isEmpty }, "no layer of the paused sandbox's env kept")
                #expect(try await Self.sweeps(api, "images", metric: "sprout_cache_evictions_total") >= 1)

                // The resume fetches both back; the sandbox runs on from where it stood.
                let fetched = server.log.components(separatedBy: "layer fetched from the store").count
                #expect(try await api.resume(sandbox.id).state == .running)
                #expect(server.log.components(separatedBy: "layer fetched from the store").count > fetched)
                #expect(try await counter(api, sandbox.id) >= before)
                #expect(try await eventually { try await counter(api, sandbox.id) > before }, "its counter counts on")

                // A sweep now (the other sandbox's pause) keeps what the running sandbox has mounted.
                let after = try await Self.sweeps(api, "layers")
                _ = try await api.pause(other.id)
                #expect(try await eventually { try await Self.sweeps(api, "layers") > after })
                #expect(held() == digests, "the running sandbox's layers stay")
                #expect(try await api.run(sandbox.id, API.Exec(cmd: ["cat", "/opt/app/out.txt"])).stdoutText == "built\n")
                for id in [sandbox.id, other.id] { _ = try await api.killSandbox(id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("an env is recorded once its layers are in the store; a host that lost them fetches them at the next create")
        func envLayers() async throws {
            try await Self.withStore { _, store, server in
                try await Self.pushEnv("stored", run: "mkdir -p /opt/app && echo built > /opt/app/out.txt && test -e /bin/ed && rm /bin/ed", to: server)
                let layers = try await store.list(prefix: "layers/").map(\.key)
                // The run step's layer and the (empty) files layer, each once as a tar named by its digest.
                #expect(layers.count == 2 && layers.allSatisfy { $0.hasSuffix(".tar") }, "\(layers)")

                server.stopServer()
                try FileSystem.removeTree(server.data + "/layers")
                try server.start()
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "stored"))
                #expect(try await api.run(sandbox.id, API.Exec(shell: "cat /opt/app/out.txt; test -e /bin/ed || echo gone")).stdoutText == "built\ngone\n")
                #expect(server.log.contains("layer fetched from the store"))
                // The layer is on the host again: the next create fetches nothing.
                let before = server.log.components(separatedBy: "layer fetched from the store").count
                let second = try await api.createSandbox(API.CreateSandbox(env: "stored"))
                #expect(server.log.components(separatedBy: "layer fetched from the store").count == before)
                for id in [sandbox.id, second.id] { _ = try await api.killSandbox(id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a store that fails refuses the pause and the sandbox keeps running with its processes: before the checkpoint and after it")
        func storeDown() async throws {
            try await Self.withStore { s3, _, server in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await startCounterAndServer(api, sandbox.id)
                // The control: the store takes a pause.
                _ = try await api.pause(sandbox.id)
                _ = try await api.resume(sandbox.id)

                // Objects can no longer be written, but the bucket answers: the checkpoint is taken, not stored, and undone.
                s3.stopObjectServer()
                let clock = CounterClock()
                let before = try await counter(api, sandbox.id)
                do {
                    _ = try await api.pause(sandbox.id)
                    Issue.record("a pause the store did not take was acknowledged")
                } catch let error as SproutError {
                    #expect(error.code == .unavailable && error.message.contains("keeps running"), "\(error)")
                }
                #expect(try await api.sandbox(sandbox.id).state == .running)
                let after = try await counter(api, sandbox.id)
                #expect(after >= before && after <= clock.most(from: before), "the same processes: the counter was \(before), then \(after)")
                #expect(try await eventually { try await counter(api, sandbox.id) > after }, "the counter keeps counting")

                // The store gone altogether: refused before anything changes.
                s3.stop()
                do {
                    _ = try await api.pause(sandbox.id)
                    Issue.record("a pause with the store down was acknowledged")
                } catch let error as SproutError {
                    #expect(error.code == .unavailable && error.message.contains("object store"), "\(error)")
                }
                #expect(try await api.sandbox(sandbox.id).state == .running)
                let last = try await counter(api, sandbox.id)
                #expect(last >= after, "the counter went on: \(after), then \(last)")
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }
    }
}
