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
                // The run step's layer, once, as a tar named by its digest (a push with no files adds no layer for them: `empty` has /code).
                #expect(layers.count == 1 && layers.allSatisfy { $0.hasSuffix(".tar") }, "\(layers)")

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

        /// What a pause in the store holds: its memory image and its writable layer.
        static func heldBy(_ store: S3Client, pause id: String) async throws -> (image: String, upper: String) {
            let bytes = try #require(try await store.get("sandboxes/\(id)/pause.json"))
            let record = try #require((try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])?["record"] as? [String: Any])
            return (try #require((record["images"] as? [String])?.last), try #require(record["storedUpper"] as? String))
        }

        /// Returns once the store's clock has passed the times of writing it
        /// gave every object (it keeps whole seconds, rounded up): a
        /// collection with a grace of 0 s counts them as written before it.
        static func storeClockPassed(_ store: S3Client) async throws {
            let newest = try await store.list().compactMap(\.lastModified).max() ?? .distantPast
            #expect(try await eventually {
                try await store.put("clock-probe", bytes: [])
                return try await store.info("clock-probe")?.lastModified ?? .distantPast > newest
            })
            try await store.delete("clock-probe")
        }

        /// The packs memory image `image` has its chunks in.
        static func packs(_ store: S3Client, image: String) async throws -> Set<String> {
            let bytes = try #require(try await store.get("images/\(image).json"))
            let chunks = try #require((try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])?["chunks"] as? [String: [String: Any]])
            return Set(chunks.values.compactMap { $0["pack"] as? String })
        }

        @Test("the store's collection: within the grace nothing goes; past it (nothing in flight), a killed sandbox's pause and what only it held go, and objects nothing holds; a paused sandbox and an env stay whole: it resumes with its processes, the env starts")
        func collection() async throws {
            try await Self.withStore { _, store, server in
                var api = server.client
                try await Self.pushEnv("kept", run: "mkdir -p /opt/app && echo built > /opt/app/out.txt", to: server)
                let kept = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await startCounterAndServer(api, kept.id)
                let gone = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                // Random bytes of its own on its disk and in a process's memory.
                let own = "head -c 100000 /dev/urandom > /only-here && (x=$(head -c 100000 /dev/urandom | od -An -tx1); sleep 100000) >/dev/null 2>&1 </dev/null &"
                #expect(try await api.run(gone.id, API.Exec(shell: own)).exit == API.Exit(code: 0))
                var clock = CounterClock()
                let before = try await counter(api, kept.id)
                _ = try await api.pause(kept.id)
                clock.paused()
                _ = try await api.pause(gone.id)
                let keptHeld = try await Self.heldBy(store, pause: kept.id)
                let goneHeld = try await Self.heldBy(store, pause: gone.id)
                let keptPacks = try await Self.packs(store, image: keptHeld.image)
                let gonePacks = try await Self.packs(store, image: goneHeld.image)
                #expect(!gonePacks.isSubset(of: keptPacks), "the killed sandbox's image has chunks of its own")
                _ = try await api.killSandbox(gone.id)
                // Objects no root holds.
                let junk = ["packs/junk", "uppers/junk.tar", "layers/junk/x.tar", "images/junk.json"]
                for key in junk { try await store.put(key, bytes: Array("junk".utf8)) }
                let all = Set(try await store.list().map(\.key))
                // The control: each is there before a collection.
                for key in junk + ["sandboxes/\(gone.id)/pause.json", "images/\(goneHeld.image).json", goneHeld.upper] {
                    #expect(all.contains(key), "\(key) is in the store before")
                }

                // Within the grace (the server's six hours), nothing goes.
                let young = try await api.collectStore()
                #expect(young.deleted.isEmpty && young.roots >= 3, "\(young)")
                #expect(Set(try await store.list().map(\.key)) == all)
                // Bad input and a key that is not an admin's change nothing.
                await #expect(throws: SproutError.self) { _ = try await api.collectStore(graceSeconds: -1) }
                let member = server.client(key: try await api.createKey(API.CreateKey(name: "member", team: "t2")).secret)
                await #expect(throws: SproutError.self) { _ = try await member.collectStore(graceSeconds: 0) }
                #expect(Set(try await store.list().map(\.key)) == all)

                // Past a grace of 0 s (nothing is in flight), once the store's clock is past what it wrote.
                try await Self.storeClockPassed(store)
                let report = try await api.collectStore(graceSeconds: 0)
                let left = Set(try await store.list().map(\.key))
                #expect(report.deleted["handoffs"] == 1 && report.deleted["images"] == 2 && report.deleted["layers"] == 1, "\(report)")
                #expect(report.deleted.values.reduce(0, +) == all.count - left.count && !report.stoppedEarly)
                for key in junk + ["sandboxes/\(gone.id)/pause.json", "images/\(goneHeld.image).json"] + gonePacks.subtracting(keptPacks) {
                    #expect(!left.contains(key), "\(key) was collected")
                }
                if goneHeld.upper != keptHeld.upper { #expect(!left.contains(goneHeld.upper)) }
                let stays = ["sandboxes/\(kept.id)/pause.json", "images/\(keptHeld.image).json", keptHeld.upper, "envs/", "names/", "layers/"]
                for key in stays { #expect(left.contains { $0.hasPrefix(key) }, "\(key) stays") }
                #expect(keptPacks.isSubset(of: left), "every pack of the paused sandbox's image stays")

                // What stayed is whole: the paused sandbox resumes with its processes, the env starts.
                clock.resumed()
                _ = try await api.resume(kept.id)
                let after = try await counter(api, kept.id)
                #expect(after >= before && after <= clock.most(from: before), "the counter was \(before) before the pause and \(after) after")
                let fromEnv = try await api.createSandbox(API.CreateSandbox(env: "kept"))
                #expect(try await api.run(fromEnv.id, API.Exec(cmd: ["cat", "/opt/app/out.txt"])).stdoutText == "built\n")
                #expect(try await api.metrics().contains("sprout_store_collections_total 2"))

                // The host's record says it renewed its packs long ago, and the store lost one of
                // them: the next pause renews the others before it reuses them and packs the lost
                // one's chunks again.
                _ = try await api.pause(kept.id)
                server.stopServer()
                let renewals = server.data + "/remote/packs.log"
                let packsLog = try String(contentsOfFile: renewals, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
                #expect(Set(packsLog.map { String($0[0]) }).isSuperset(of: keptPacks), "the host noted when it wrote its packs")
                try FileSystem.writeAtomically(renewals, packsLog.map { "\($0[0]) 0\n" }.joined())
                let lost = try #require(keptPacks.sorted().first)
                try await store.delete(lost)
                try server.start()
                api = server.client
                _ = try await api.resume(kept.id)
                _ = try await api.pause(kept.id)
                let again = try await Self.packs(store, image: try await Self.heldBy(store, pause: kept.id).image)
                #expect(!again.contains(lost))
                #expect(again.isSubset(of: Set(try await store.list(prefix: "packs/").map(\.key))), "every pack the new image names is in the store")
                let renewedLines: [[Substring]] = try String(contentsOfFile: renewals, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
                let renewed: [String] = renewedLines.filter { $0.count == 2 && $0[1] != "0" }.map { String($0[0]) }
                #expect(again.isSubset(of: Set(renewed)), "each pack it reused was renewed, each new one noted")
                #expect(try String(contentsOfFile: server.data + "/remote/chunks.log", encoding: .utf8).contains("- \(lost)\n"), "the lost pack is forgotten")
                _ = try await api.resume(kept.id)
                for id in [kept.id, fromEnv.id] { _ = try await api.killSandbox(id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a deleted env stays deleted with a store: the store records the delete, so neither its name nor its id finds it again, nor its fork (deleted with force); past the grace a collection removes their records and the layers only they held")
        func deletedEnvs() async throws {
            try await Self.withStore { _, store, server in
                let api = server.client
                try await Self.pushEnv("doomed", run: "head -c 100000 /dev/urandom > /doomed.bin", to: server)
                let env = try await api.env("doomed")
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "doomed"))
                #expect(try await api.run(sandbox.id, API.Exec(shell: "head -c 100000 /dev/urandom > /fork.bin")).exit == API.Exit(code: 0))
                let fork = try await api.snapshot(sandbox.id, name: "doomed-fork")
                _ = try await api.killSandbox(sandbox.id)
                let digests = Set(env.layers + fork.layers)
                let layers = Set(try await store.list(prefix: "layers/").map(\.key)).filter { key in digests.contains { key.hasPrefix("layers/\($0)/") } }
                #expect(layers.count == digests.count, "the control: both envs' layers are in the store")

                await #expect(throws: SproutError.self) { _ = try await api.deleteEnv("doomed") }
                #expect(try await api.deleteEnv("doomed", force: true).sorted() == [env.id, fork.id].sorted())
                for id in [env.id, fork.id] {
                    let record = try #require(try await store.get("envs/\(id).json"))
                    #expect((try JSONSerialization.jsonObject(with: Data(record)) as? [String: Any])?["deletedAt"] is Double, "\(id)'s record says it is deleted")
                }
                for reference in ["doomed", env.id, "doomed-fork", fork.id] {
                    await #expect(throws: SproutError.self, "\(reference) is not found again") {
                        _ = try await api.createSandbox(API.CreateSandbox(env: reference))
                    }
                }
                #expect(!(try await api.envs().contains { [env.id, fork.id].contains($0.id) }))

                // Within the grace the records stay; past a grace of 0 s they go, and the layers only they held.
                #expect(try await api.collectStore().deleted["envs"] == nil)
                try await Self.storeClockPassed(store)
                let report = try await api.collectStore(graceSeconds: 0)
                #expect(report.deleted["envs"] == 2 && report.deleted["layers"] == digests.count, "\(report)")
                let left = Set(try await store.list().map(\.key))
                for key in layers.union(["envs/\(env.id).json", "envs/\(fork.id).json"]) { #expect(!left.contains(key), "\(key) was collected") }
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
