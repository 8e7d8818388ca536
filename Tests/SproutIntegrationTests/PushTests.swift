import Foundation
import SproutClient
import SproutCore
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutSystem

extension Integration {
    @Suite("env push")
    struct PushTests {
        @Test("push builds steps, files and start; unchanged push builds nothing; a file change rebuilds only the files; deletions and failures")
        func push() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let repo = server.data + "/repo"
                try FileManager.default.createDirectory(atPath: repo + "/files/sub", withIntermediateDirectories: true)
                try """
                    id = "demo"
                    [template]
                    from = "empty"
                    [build]
                    files = "files"
                    run = ["echo one > /one.txt", "echo two > /two.txt"]
                    start = "httpd -f -p 8080 -h /code"
                    ready = "port:8080"
                    """.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                try "v1\n".write(toFile: repo + "/files/index.html", atomically: true, encoding: .utf8)
                try "sub\n".write(toFile: repo + "/files/sub/a.txt", atomically: true, encoding: .utf8)
                let cli = CLI(server: server)
                func push() async throws -> CLI.Result { try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait", "--json"]) }

                let first = try await push()
                #expect(first.status == 0, "\(first.stderr)")
                let build1 = try JSONDecoder().decode(API.Build.self, from: Data(first.stdout.utf8))
                #expect(build1.status == "succeeded" && build1.cachedSteps == 0 && build1.steps == 4)
                #expect(FileManager.default.fileExists(atPath: repo + "/.sprout/lock.json"))

                // Unchanged: the same env at once, no build.
                let t = ContinuousClock.now
                let same = try await push()
                #expect(ContinuousClock.now - t < .seconds(1))
                let result = try JSONDecoder().decode(API.PushResult.self, from: Data(same.stdout.utf8))
                #expect(result.envID == build1.envID && result.build == nil)

                // One file changed, one deleted: a new env whose parent is the old one; the run steps come from the cache.
                try "v2\n".write(toFile: repo + "/files/index.html", atomically: true, encoding: .utf8)
                try FileManager.default.removeItem(atPath: repo + "/files/sub/a.txt")
                let build2 = try JSONDecoder().decode(API.Build.self, from: Data(try await push().stdout.utf8))
                #expect(build2.status == "succeeded" && build2.cachedSteps == 2 && build2.envID != build1.envID, "\(build2)")
                let api = server.client
                #expect(try await api.env(build2.envID).parent == build1.envID)
                let fresh = try await api.createSandbox(API.CreateSandbox(env: "demo"))
                #expect(try await api.run(fresh.id, API.Exec(shell: "cat /code/index.html /one.txt /two.txt; ls /code")).stdoutText
                        == "v2\none\ntwo\nindex.html\n")  // sub/a.txt, deleted locally, is gone
                // The old env still starts with the old files.
                let old = try await api.createSandbox(API.CreateSandbox(env: build1.envID))
                #expect(try await api.run(old.id, API.Exec(cmd: ["cat", "/code/index.html", "/code/sub/a.txt"])).stdoutText == "v1\nsub\n")

                // A failing step: the build fails with the step and its exit code; no env appears.
                let config = try String(contentsOfFile: repo + "/sprout.toml", encoding: .utf8)
                try config.replacingOccurrences(of: "echo two > /two.txt", with: "exit 3").write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                let failed = try await push()
                #expect(failed.status != 0)
                let build3 = try JSONDecoder().decode(API.Build.self, from: Data(failed.stdout.utf8))
                #expect(build3.status == "failed" && build3.failedStep == "run[2]: exit 3" && build3.exitCode == 3)
                await #expect(throws: SproutError.self) { try await api.env(build3.envID) }

                // A draft does not move the name; publish does; unpublish moves it back.
                try config.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)  // the working config again
                try "v3\n".write(toFile: repo + "/files/index.html", atomically: true, encoding: .utf8)
                let draft = try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait", "--draft", "--json"])
                let build4 = try JSONDecoder().decode(API.Build.self, from: Data(draft.stdout.utf8))
                #expect(build4.status == "succeeded")
                #expect(try await api.env(build4.envID).published == false)
                #expect(try await api.createSandbox(API.CreateSandbox(env: "demo")).env == build2.envID)
                try await api.setPublished(build4.envID, true)
                #expect(try await api.createSandbox(API.CreateSandbox(env: "demo")).env == build4.envID)
                try await api.setPublished(build4.envID, false)
                #expect(try await api.createSandbox(API.CreateSandbox(env: "demo")).env == build2.envID)
                let listing = try await cli.run(["env", "list"]).stdout
                #expect(listing.contains("unpublished") && listing.contains("published"))

                // A second config naming the same env gets a warning.
                try FileManager.default.createDirectory(atPath: repo + "/other", withIntermediateDirectories: true)
                try "id = \"demo\"\n".write(toFile: repo + "/other/sprout.toml", atomically: true, encoding: .utf8)
                #expect(try await push().stderr.contains("other/sprout.toml also names the env 'demo'"))

                // A symlink out of the files folder is refused, not followed.
                try FileManager.default.createSymbolicLink(atPath: repo + "/files/escape", withDestinationPath: "/etc/passwd")
                let escaped = try await push()
                #expect(escaped.stderr.contains("escape is a symlink that points outside"))
            }
        }
    }
}

extension Integration.PushTests {
    /// A server log's crash report (the crashed thread first), else its tail.
    static func crashOrTail(_ log: String) -> String {
        if let crash = log.range(of: "Program crashed") { return String(log[crash.lowerBound...].prefix(8000)) }
        return String(log.suffix(6000))
    }

    /// Waits until the build's log holds `text` (the step's own output: its sandbox runs it).
    static func waitForLog(_ api: SproutAPIClient, _ id: String, _ text: String) async throws -> Bool {
        try await eventually {
            let log = Locked<[UInt8]>([])
            try await api.buildLogs(id, follow: false) { chunk in log.withLock { $0 += chunk } }
            return String(decoding: log.withLock { $0 }, as: UTF8.self).contains(text)
        }
    }

    @Test("a step that never finishes is killed at the build timeout; a running build can be cancelled; both clean up")
    func timeoutAndCancel() async throws {
        let data = try await ServerHarness.with { (server: ServerHarness) async throws in
            let api = server.client
            let hang = API.Push(id: "hang", from: "empty", run: ["sleep 1000"], start: nil, ready: nil, cpu: nil, memoryMB: nil, files: [],
                                timeoutSeconds: 2)
            let started = try await api.push(hang)
            let build = try await api.build(started.build!.id, wait: true)
            #expect(build.status == "failed" && build.failedStep == "run[1]: sleep 1000" && build.error == "timed out after 2 s")

            var forever = hang
            forever.timeoutSeconds = 600
            forever.id = "forever"
            // The step's own output (the log's step line names the command, not its result).
            forever.run = ["echo step-$((20 + 22)); sleep 1000"]
            let running = try await api.push(forever)
            #expect(try await Self.waitForLog(api, running.build!.id, "step-42"))
            // A create for an env whose first build runs answers at once: not ready yet (503), naming the build.
            do {
                _ = try await api.createSandbox(API.CreateSandbox(env: "forever"))
                Issue.record("a create for an env still building went through")
            } catch let error as SproutError {
                #expect(error.code == .notReady && error.message.contains("env 'forever' is being built (build \(running.build!.id)"), "\(error)")
            }
            let cancelled = try await api.cancelBuild(running.build!.id)
            #expect(cancelled.status == "cancelled")
            await #expect(throws: SproutError.self) { try await api.env(running.envID) }
            // Cancelled at once: whether its sandbox was being made or not, nothing is left of it.
            forever.id = "at-once"
            let atOnce = try await api.push(forever)
            _ = try? await api.cancelBuild(atOnce.build!.id)
            // The build sandboxes go away (killed in the background after each step).
            let left = try await waitUntilHostIsClear(server.data)
            #expect(left.isEmpty, "left on the host: \(left)\n\(Self.crashOrTail(server.log))")
            #expect(try await api.sandboxes().isEmpty)
            return server.data
        }
        await expectNoLeftovers(data)
    }
}

extension Integration.PushTests {
    @Test("the lock file: a file deleted locally is deleted in the env; one changed in the env since the last push is left alone, with a warning")
    func lockRules() async throws {
        try await ServerHarness.with { (server: ServerHarness) async throws in
            let repo = server.data + "/merge"
            try FileManager.default.createDirectory(atPath: repo + "/files", withIntermediateDirectories: true)
            let config = "id = \"merge\"\n[template]\nfrom = \"FROM\"\n[build]\nfiles = \"files\"\n"
            try config.replacingOccurrences(of: "FROM", with: "empty").write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
            try "a1\n".write(toFile: repo + "/files/a.txt", atomically: true, encoding: .utf8)
            try "b1\n".write(toFile: repo + "/files/b.txt", atomically: true, encoding: .utf8)
            let cli = CLI(server: server)
            func push() async throws -> CLI.Result { try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait", "--json"]) }
            #expect(try await push().status == 0)

            // Someone edits b.txt in a sandbox of the env and snapshots it under the same name.
            let api = server.client
            let edit = try await api.createSandbox(API.CreateSandbox(env: "merge"))
            _ = try await api.run(edit.id, API.Exec(shell: "echo edited-in-env > /code/b.txt"))
            _ = try await api.snapshot(edit.id)

            // Locally: a.txt deleted, b.txt changed; the next push builds on the edited env.
            try config.replacingOccurrences(of: "FROM", with: "merge").write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
            try FileManager.default.removeItem(atPath: repo + "/files/a.txt")
            try "b2\n".write(toFile: repo + "/files/b.txt", atomically: true, encoding: .utf8)
            let result = try await push()
            #expect(result.status == 0, "\(result.stderr)")
            let build = try JSONDecoder().decode(API.Build.self, from: Data(result.stdout.utf8))
            #expect(build.warnings == ["/code/b.txt changed in the env since the last push; left alone"])
            #expect(result.stderr.contains("warning: /code/b.txt changed in the env"))
            let check = try await api.createSandbox(API.CreateSandbox(env: build.envID))
            #expect(try await api.run(check.id, API.Exec(shell: "ls /code; cat /code/b.txt")).stdoutText == "b.txt\nedited-in-env\n")
        }
    }
}

extension Integration.PushTests {
    @Test("push from debian; a failed build leaves no layer, no env and nothing on the host")
    func debianAndCleanup() async throws {
        let data = try await ServerHarness.with { (server: ServerHarness) async throws in
            let api = server.client
            let ok = try await api.push(API.Push(
                id: "deb", from: "debian", run: ["echo built > /etc/sprout-built", "apt-get --version | head -1 > /apt.txt"],
                start: nil, ready: nil, cpu: nil, memoryMB: nil, files: []))
            let built = try await api.build(ok.build!.id, wait: true)
            #expect(built.status == "succeeded", "\(built)")
            let sandbox = try await api.createSandbox(API.CreateSandbox(env: "deb"))
            let seen = try await api.run(sandbox.id, API.Exec(shell: "cat /etc/sprout-built /apt.txt; cat /etc/debian_version"))
            #expect(seen.stdoutText.hasPrefix("built\napt "))
            let layersBefore = try FileManager.default.contentsOfDirectory(atPath: server.data + "/layers").filter { !$0.hasPrefix(".") }

            let bad = try await api.push(API.Push(
                id: "deb", from: "debian", run: ["echo half > /half.txt", "false"], start: nil, ready: nil, cpu: nil, memoryMB: nil, files: []))
            let failed = try await api.build(bad.build!.id, wait: true)
            #expect(failed.status == "failed" && failed.failedStep == "run[2]: false" && failed.exitCode == 1)
            let layersAfter = try FileManager.default.contentsOfDirectory(atPath: server.data + "/layers").filter { !$0.hasPrefix(".") }
            #expect(Set(layersAfter) == Set(layersBefore), "the failed build's first layer must go too")
            #expect(try await api.env("deb").id == built.envID)
            try await api.killSandbox(sandbox.id)
            let left = try await waitUntilHostIsClear(server.data)
            #expect(left.isEmpty, "build sandboxes are killed in the background; left: \(left)")
            return server.data
        }
        await expectNoLeftovers(data)
    }

    @Test("no disk space: the build fails cleanly and no env appears")
    func diskFull() async throws {
        // Failure injection: the server is told it needs more free space than any disk has.
        try await ServerHarness.with(extraArgs: ["--min-free-mb", "100000000"]) { (server: ServerHarness) async throws in
            let api = server.client
            let started = try await api.push(API.Push(id: "full", from: "empty", run: ["true"], start: nil, ready: nil, cpu: nil, memoryMB: nil, files: []))
            let build = try await api.build(started.build!.id, wait: true)
            #expect(build.status == "failed")
            #expect(build.error?.contains("not enough disk space") == true)
            await #expect(throws: SproutError.self) { try await api.env(started.envID) }
            await expectNoLeftovers(server.data)
        }
    }
}

extension Integration.PushTests {
    @Test("a build interrupted by a server crash is marked failed after the restart, and its sandbox removed")
    func crashDuringBuild() async throws {
        let server = try ServerHarness()
        defer { server.stop() }
        let api = server.client
        let started = try await api.push(API.Push(id: "crashy", from: "empty", run: ["echo step-$((20 + 22)); sleep 1000"], start: nil, ready: nil, cpu: nil,
                                                  memoryMB: nil, files: [], timeoutSeconds: 600))
        #expect(try await Self.waitForLog(api, started.build!.id, "step-42"), "the step runs in its sandbox")
        server.crash()
        try server.start()
        let build = try await server.client.build(started.build!.id)
        #expect(build.status == "failed" && build.error == "interrupted by a server restart")
        #expect(try await server.client.sandboxes().isEmpty)
        server.stopServer()
        await expectNoLeftovers(server.data)
    }
}
