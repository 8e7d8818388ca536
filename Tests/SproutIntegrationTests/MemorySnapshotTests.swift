import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("memory snapshots")
    struct MemorySnapshotTests {
        @Test("pause and resume keep every process: the counter goes on from where it stood, the server answers; bad requests")
        func pauseResume() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await startCounterAndServer(api, sandbox.id)
                #expect(try await api.preview(sandbox.id, port: 8080, path: "/index.html").1 == Array("served\n".utf8))
                await #expect(throws: SproutError(.conflict, "sandbox \(sandbox.id) is running; only a paused sandbox can be resumed")) {
                    try await api.resume(sandbox.id)
                }

                let bootID = try await api.run(sandbox.id, API.Exec(cmd: ["cat", "/proc/sys/kernel/random/boot_id"])).stdoutText
                #expect(bootID.count == 37, "a boot id: \(bootID)")
                var clock = CounterClock()
                let before = try await counter(api, sandbox.id)
                let paused = try await api.pause(sandbox.id)
                clock.paused()
                #expect(paused.state == .paused)
                #expect(paused.memory?.count == 1)
                #expect((paused.remainingSeconds ?? 0) > 200)
                // Nothing runs while paused: no processes, no memory, a clear state for clients.
                #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/sprout/\(sandbox.id)"))
                await #expect(throws: SproutError(.conflict, "sandbox \(sandbox.id) is paused, not running")) {
                    try await api.run(sandbox.id, API.Exec(cmd: ["true"]))
                }
                await #expect(throws: SproutError(.conflict, "sandbox \(sandbox.id) is paused; only a running sandbox can be paused")) {
                    try await api.pause(sandbox.id)
                }
                try await Task.sleep(for: .seconds(1.5))

                clock.resumed()
                let resumed = try await api.resume(sandbox.id)
                #expect(resumed.state == .running)
                // Restored from the files runsc wrote at the pause, kept on this host (no reassembly from chunks), then removed.
                #expect(server.log.contains("(kept), network"), "the resume used the kept image")
                #expect(!FileManager.default.fileExists(atPath: server.data + "/sandboxes/\(sandbox.id)/kept-image"))
                // The same kernel, carried on from memory: no new boot.
                #expect(try await api.run(sandbox.id, API.Exec(cmd: ["cat", "/proc/sys/kernel/random/boot_id"])).stdoutText == bootID)
                let after = try await counter(api, sandbox.id)
                #expect(after >= before && after <= clock.most(from: before), "the counter was \(before) before the pause and \(after) after")
                #expect(try await eventually { try await counter(api, sandbox.id) > after }, "the counter keeps counting")
                // The web server was never restarted, and answers on the same port.
                #expect(try await api.preview(sandbox.id, port: 8080, path: "/index.html").1 == Array("served\n".utf8))
                let httpd = try await api.run(sandbox.id, API.Exec(shell: "pidof httpd | wc -w")).stdoutText
                #expect(httpd.trimmedLines == "1")

                // A second pause stores only what changed: its image shares most chunks with the first.
                let again = try await api.pause(sandbox.id, autoResume: true)
                #expect(again.memory?.count == 2)
                #expect(again.autoResume == true)
                // Auto-resume: the next request that needs the sandbox running resumes it.
                #expect(try await counter(api, sandbox.id) >= after)
                #expect(try await api.sandbox(sandbox.id).state == .running)

                _ = try await api.killSandbox(sandbox.id)
                await #expect(throws: SproutError(.conflict, "sandbox \(sandbox.id) is killed; only a running sandbox can be paused")) {
                    try await api.pause(sandbox.id)
                }
                await #expect(throws: SproutError(.notFound, "no sandbox with id 'sbx_nope'")) { try await api.pause("sbx_nope") }
                let manifests = (try? FileManager.default.contentsOfDirectory(atPath: server.data + "/images/manifests")) ?? []
                #expect(manifests.isEmpty, "a killed sandbox's images are collected")
                await expectNoLeftovers(server.data)
            }
        }

        @Test("pauses, resumes and the processes the agent starts leave no kernel state behind in the sandbox (runsc 20240729 keeps that of every process that looked at /proc/self)")
        func kernelStateStaysFlat() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let id = try await api.createSandbox(API.CreateSandbox(env: "empty")).id
                // A file the kernel refuses to run: the agent's child does all it does before exec, then exec fails.
                _ = try await api.run(id, API.Exec(shell: ": > /tmp/noexec && chmod +x /tmp/noexec"))
                // The kernel state a pause saves (and a resume reads back).
                func kernelState() async throws -> Int64 {
                    _ = try await api.pause(id)
                    var st = stat()
                    let path = server.data + "/sandboxes/\(id)/kept-image/checkpoint.img"
                    try sysCall("stat \(path)") { stat(path, &st) }
                    _ = try await api.resume(id)
                    return Int64(st.st_size)
                }
                let first = try await kernelState()
                for _ in 0..<10 { _ = try? await api.run(id, API.Exec(cmd: ["/tmp/noexec"])) }
                let second = try await kernelState()
                let third = try await kernelState()
                // Each process that looked at /proc/self left about 80 KB: the server's clock check
                // at every resume did, and the agent's child did (listing /proc/self/fd where gVisor
                // refuses the close_range glibc asks for).
                #expect(second - first < 150_000, "ten starts and a resume added \(second - first) bytes")
                #expect(third - second < 50_000, "a pause and resume added \(third - second) bytes")
                // Positive control: ten processes that read /proc/self do leave theirs (gVisor's own).
                _ = try await api.run(id, API.Exec(shell: "for i in 1 2 3 4 5 6 7 8 9 10; do cat /proc/self/stat > /dev/null; done"))
                let fourth = try await kernelState()
                #expect(fourth - third > 400_000, "ten processes that read /proc/self added \(fourth - third) bytes")
                _ = try await api.killSandbox(id)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a paused sandbox survives a server restart and does not time out; after 30 s its clock matches the host's")
        func restartAndClock() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let asked = Date().timeIntervalSince1970
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 20))
                try await startCounterAndServer(server.client, sandbox.id)
                var clock = CounterClock()
                let before = try await counter(server.client, sandbox.id)
                _ = try await server.client.pause(sandbox.id)
                clock.paused()
                #expect(FileManager.default.fileExists(atPath: server.data + "/sandboxes/\(sandbox.id)/kept-image"), "its image's files are kept")
                // At most this much of its 20 s ran before the pause.
                let ran = Date().timeIntervalSince1970 - asked
                let pausedAt = monotonicSeconds()
                server.stopServer()
                try server.start()
                let api = server.client
                #expect(try await api.sandbox(sandbox.id).state == .paused)
                // Longer than the sandbox's timeout: the timeout clock stops while paused.
                try await Task.sleep(for: .seconds(max(0, 30 - (monotonicSeconds() - pausedAt))))
                #expect(try await api.sandbox(sandbox.id).state == .paused)

                clock.resumed()
                let hostBefore = Date().timeIntervalSince1970
                let resumed = try await api.resume(sandbox.id)
                // A restart forgets what was kept: the image is written again from its chunks, the stale copy removed.
                #expect(!server.log.contains("(kept), network"), "after a restart the kept copy is not trusted")
                #expect(!FileManager.default.fileExists(atPath: server.data + "/sandboxes/\(sandbox.id)/kept-image"))
                let inside = Double(try await api.run(sandbox.id, API.Exec(cmd: ["date", "+%s"])).stdoutText.trimmedLines) ?? 0
                let hostAfter = Date().timeIntervalSince1970
                // The guest's clock is the host's again (paused 30 s ago: a clock carried over from the pause would be that far behind).
                #expect(inside >= hostBefore.rounded(.down) - 1 && inside <= hostAfter + 1, "inside \(inside), host \(hostBefore)…\(hostAfter)")
                #expect((resumed.expiresAt ?? 0) >= hostBefore + 20 - ran - 1, "the remaining timeout carries over (\(ran) s of 20 ran before the pause)")
                let after = try await counter(api, sandbox.id)
                #expect(after >= before && after <= clock.most(from: before), "the counter was \(before) before and \(after) after")
                #expect(try await api.preview(sandbox.id, port: 8080, path: "/index.html").0 == 200)
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a live fork into 3: each continues the counter on its own, with its own address and files; the source keeps running")
        func liveFork() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let source = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await startCounterAndServer(api, source.id)
                try await api.write(source.id, bytes: Array("shared\n".utf8), to: "/code/note.txt")
                let before = try await counter(api, source.id)

                let forks = try await api.fork(source.id, count: 3)
                #expect(forks.count == 3)
                let addresses = Set(forks.compactMap(\.address) + [source.address ?? ""])
                #expect(addresses.count == 4, "every fork has its own address: \(addresses)")
                for (index, fork) in forks.enumerated() {
                    #expect(fork.state == .running)
                    #expect(fork.env == source.env)
                    let count = try await counter(api, fork.id)
                    #expect(count >= before, "fork \(index) starts from the source's count")
                    #expect(try await api.read(fork.id, path: "/code/note.txt") == Array("shared\n".utf8))
                    try await api.write(fork.id, bytes: Array("fork \(index)\n".utf8), to: "/code/own.txt")
                    #expect(try await api.preview(fork.id, port: 8080, path: "/index.html").1 == Array("served\n".utf8))
                }
                // Own writable layers: one fork's file is nobody else's.
                for (index, fork) in forks.enumerated() {
                    #expect(try await api.read(fork.id, path: "/code/own.txt") == Array("fork \(index)\n".utf8))
                }
                await #expect(throws: SproutError.self) { try await api.read(source.id, path: "/code/own.txt") }
                // Independent counters: stop one, the others go on.
                _ = try await api.run(forks[0].id, API.Exec(shell: "pkill -f 'sleep 0.1' ; kill $(ps | grep '[w]hile true' | awk '{print $1}') 2>/dev/null; true"))
                _ = try await api.killSandbox(forks[1].id)
                let c0 = try await counter(api, forks[0].id)
                let c2 = try await counter(api, forks[2].id)
                let cs = try await counter(api, source.id)
                #expect(try await eventually { try await counter(api, forks[2].id) > c2 })
                #expect(try await eventually { try await counter(api, source.id) > cs }, "the source keeps running")
                #expect(try await counter(api, forks[0].id) <= c0 + 1)

                await #expect(throws: SproutError(.invalidArgument, "count must be between 1 and 32, got 0")) {
                    try await api.fork(source.id, count: 0)
                }
                await #expect(throws: SproutError(.invalidArgument, "count must be between 1 and 32, got 1000")) {
                    try await api.fork(source.id, count: 1000)
                }
                for id in [source.id, forks[0].id, forks[2].id] { _ = try await api.killSandbox(id) }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("an env built with start is warm: its sandboxes answer on the port right after create, with start already running")
        func warmEnv() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let repo = server.data + "/repo"
                try FileManager.default.createDirectory(atPath: repo + "/site", withIntermediateDirectories: true)
                try """
                    id = "web"
                    [template]
                    from = "empty"
                    [build]
                    files = "site"
                    start = "httpd -f -p 8080 -h /code"
                    ready = "port:8080"
                    """.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                try "warm\n".write(toFile: repo + "/site/index.html", atomically: true, encoding: .utf8)
                let pushed = try await CLI(server: server).run(["env", "push", "--file", repo + "/sprout.toml", "--wait"])
                #expect(pushed.status == 0, "\(pushed.stderr)")
                let env = try await api.env("web")
                #expect(env.warm == true)

                for _ in 0..<2 {
                    let sandbox = try await api.createSandbox(API.CreateSandbox(env: "web"))
                    // No waiting, no retry: the server was running when the sandbox was made.
                    let (status, body) = try await api.preview(sandbox.id, port: 8080, path: "/index.html")
                    #expect(status == 200 && body == Array("warm\n".utf8))
                    let processes = try await api.processes(sandbox.id)
                    #expect(processes.contains { $0.tag == "start" && $0.exit == nil })
                    #expect(try await api.run(sandbox.id, API.Exec(cmd: ["hostname"])).exit == API.Exit(code: 0))
                    _ = try await api.killSandbox(sandbox.id)
                }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("pause refuses what it cannot save: open connections, too little disk; a damaged image leaves the sandbox paused and intact")
        func refusals() async throws {
            // Failure injection by configuration: after a crash the server comes
            // back with a free-space floor no disk meets; the running sandbox is
            // adopted, and saving its memory must be refused without harm.
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: "empty"))
                server.crash()
                server.extraArgs = ["--min-free-mb", "100000000"]
                try server.start()
                let api = server.client
                do {
                    _ = try await api.pause(sandbox.id)
                    Issue.record("pause on a full disk succeeded")
                } catch let error as SproutError {
                    #expect(error.code == .unavailable)
                    #expect(error.message.contains("not enough disk space"))
                }
                #expect(try await api.sandbox(sandbox.id).state == .running)
                #expect(try await api.run(sandbox.id, API.Exec(cmd: ["true"])).exit == API.Exit(code: 0))
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
            // No kept images: the resume reads the image from its (damaged) chunks.
            try await ServerHarness.with(extraArgs: ["--kept-images-mb", "0"]) { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                // A connection inside the sandbox: gVisor cannot save it, so pause says so and changes nothing.
                _ = try await api.run(sandbox.id, API.Exec(shell: "(sleep 1000 | nc -l -p 9000 >/dev/null 2>&1 &) ; sleep 0.3; (sleep 1000 | nc 127.0.0.1 9000 >/dev/null 2>&1 &) ; sleep 0.3"))
                do {
                    _ = try await api.pause(sandbox.id)
                    Issue.record("pause with an open connection succeeded")
                } catch let error as SproutError {
                    #expect(error.code == .conflict)
                    #expect(error.message.contains("open TCP connections"))
                }
                #expect(try await api.run(sandbox.id, API.Exec(cmd: ["pidof", "nc"])).stdoutText.split(separator: " ").count == 2)
                _ = try await api.killSandbox(sandbox.id)

                // A damaged image: resume fails clearly, the sandbox stays paused, its files stay.
                let damagedSandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                try await api.write(damagedSandbox.id, bytes: Array("kept\n".utf8), to: "/code/kept.txt")
                _ = try await api.pause(damagedSandbox.id)
                let chunks = server.data + "/images/chunks"
                let first = try FileManager.default.contentsOfDirectory(atPath: chunks).sorted().first!
                let chunk = "\(chunks)/\(first)/" + (try FileManager.default.contentsOfDirectory(atPath: "\(chunks)/\(first)").first!)
                let original = try Data(contentsOf: URL(fileURLWithPath: chunk))
                var damaged = original
                damaged[damaged.count / 2] ^= 0xFF
                try damaged.write(to: URL(fileURLWithPath: chunk))
                do {
                    _ = try await api.resume(damagedSandbox.id)
                    Issue.record("resume of a damaged image succeeded")
                } catch let error as SproutError {
                    #expect(error.message.contains("corrupted"), "\(error.message)")
                    #expect(error.message.contains("stays paused"))
                }
                let still = try await api.sandbox(damagedSandbox.id)
                #expect(still.state == .paused)
                #expect(FileManager.default.contents(atPath: server.data + "/sandboxes/\(damagedSandbox.id)/upper/code/kept.txt") == Data("kept\n".utf8))
                // Repaired, it resumes with its files.
                try original.write(to: URL(fileURLWithPath: chunk))
                _ = try await api.resume(damagedSandbox.id)
                #expect(try await api.read(damagedSandbox.id, path: "/code/kept.txt") == Array("kept\n".utf8))
                _ = try await api.killSandbox(damagedSandbox.id)
                await expectNoLeftovers(server.data)
            }
        }

        /// Polls until the sandbox is in `state` (or the time is up); returns the last state seen.
        static func waitForState(_ api: SproutAPIClient, _ id: String, _ state: SandboxState, seconds: Double) async throws -> SandboxState {
            var seen: SandboxState = .creating
            try await eventually(seconds, every: .milliseconds(250)) {
                seen = try await api.sandbox(id).state
                return seen == state
            }
            return seen
        }

        @Test("onTimeout pause: the timeout pauses (not kills); 20 concurrent requests wake it once; its counter goes on; bad lifecycles are 400")
        func timeoutPausesAndWakes() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                for bad in [API.CreateSandbox(env: "empty", onTimeout: "sleep"), API.CreateSandbox(env: "empty", autoResume: true)] {
                    await #expect(throws: SproutError.self) { _ = try await api.createSandbox(bad) }
                }
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 3, onTimeout: "pause", autoResume: true))
                #expect(sandbox.onTimeout == "pause" && sandbox.autoResume == true)
                // Written whole (a rename), so a read never sees a half-written count.
                _ = try await api.start(sandbox.id, API.Exec(shell: "i=0; while :; do i=$((i+1)); echo $i > /code/n.new; mv /code/n.new /code/n; sleep 0.1; done"))
                let state = try await Self.waitForState(api, sandbox.id, .paused, seconds: 20)
                #expect(state == .paused, "the timeout paused it, not killed it: \(state)")
                let slept = try await api.sandbox(sandbox.id)
                #expect(slept.pausedAt != nil && slept.autoResume == true)
                // The last count before it slept, from its writable layer on the host.
                let before = Int(try String(contentsOfFile: "\(server.data)/sandboxes/\(sandbox.id)/upper/code/n", encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                #expect(before > 5, "the counter ran before the pause: \(before)")
                let answers = try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<20 { group.addTask { try await counter(api, sandbox.id, path: "/code/n") } }
                    var all: [Int] = []
                    for try await answer in group { all.append(answer) }
                    return all
                }
                #expect(answers.count == 20 && answers.allSatisfy { $0 >= before },
                        "every request answered, after the counter's last value: \(answers)")
                let wakes = try await api.events(sandbox.id).filter { $0.kind == "wake" }
                #expect(wakes.count == 1, "one resume for 20 requests: \(wakes)")
                #expect(try await api.metrics().contains("sprout_wakes_total 1"))
                #expect(try await eventually { try await counter(api, sandbox.id, path: "/code/n") > before }, "the same process counts on")
                #expect(try await api.sandbox(sandbox.id).state == .running)
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }

        // What keeps a sandbox awake (open streams, requests) is the fast tier's (PolicyTests).
        @Test("idlePauseSeconds: an idle sandbox pauses after its idle time; the next request wakes it")
        func idlePause() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                await #expect(throws: SproutError.self) { _ = try await api.createSandbox(API.CreateSandbox(env: "empty", idlePauseSeconds: 0)) }
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", autoResume: true, idlePauseSeconds: 2))
                #expect(sandbox.idlePauseSeconds == 2)
                _ = try await api.run(sandbox.id, API.Exec(shell: "true"))
                let state = try await Self.waitForState(api, sandbox.id, .paused, seconds: 60)
                #expect(state == .paused, "paused once idle: \(state)")
                #expect(try await api.events(sandbox.id).contains { $0.kind == "idle" })
                #expect(try await api.run(sandbox.id, API.Exec(shell: "echo awake")).stdoutText == "awake\n")
                #expect(try await api.sandbox(sandbox.id).state == .running)
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a files-only pause (gVisor and runc): files kept, processes gone, a fresh boot on resume; a timeout pause of that kind wakes on request")
        func filesOnlyPause() async throws {
            for runtime in ["gvisor", "runc"] {
                try await ServerHarness.with(runtime: runtime) { (server: ServerHarness) async throws in
                    let api = server.client
                    let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                    _ = try await api.run(sandbox.id, API.Exec(shell: "echo kept > /code/kept; sync"))
                    _ = try await api.start(sandbox.id, API.Exec(shell: "sleep 1000", tag: "sleeper"))
                    // gVisor's kernel is the sandbox's own: a boot gives it a new boot id (runc shares the host's).
                    let bootID = { try await api.run(sandbox.id, API.Exec(shell: "cat /proc/sys/kernel/random/boot_id")).stdoutText }
                    let bootBefore = try await bootID()
                    #expect(bootBefore.count == 37, "positive control: a boot id (\(bootBefore))")
                    #expect(try await api.processes(sandbox.id).contains { $0.tag == "sleeper" && $0.exit == nil }, "positive control: the process runs")
                    let paused = try await api.pause(sandbox.id, memory: false)
                    #expect(paused.state == .paused && paused.filesOnly == true, "\(runtime): \(paused.state)")
                    let resumed = try await api.resume(sandbox.id)
                    #expect(resumed.state == .running && resumed.address == sandbox.address, "the same address")
                    #expect(try await api.run(sandbox.id, API.Exec(shell: "cat /code/kept")).stdoutText == "kept\n")
                    #expect(try await !api.processes(sandbox.id).contains { $0.tag == "sleeper" }, "\(runtime): a fresh boot has none of the old processes")
                    if runtime == "gvisor" {
                        let bootAfter = try await bootID()
                        #expect(bootAfter.count == 37 && bootAfter != bootBefore, "a new boot: \(bootBefore) then \(bootAfter)")
                    }
                    // A timeout pause that keeps only files, woken by a request (runc has no other kind).
                    let sleeper = try await api.createSandbox(API.CreateSandbox(
                        env: "empty", timeoutSeconds: 2, onTimeout: "pause", autoResume: true, pauseMemory: false))
                    _ = try await api.run(sleeper.id, API.Exec(shell: "echo mine > /code/mine; sync"))
                    let state = try await Self.waitForState(api, sleeper.id, .paused, seconds: 15)
                    #expect(state == .paused, "\(runtime): \(state)")
                    #expect(try await api.run(sleeper.id, API.Exec(shell: "cat /code/mine")).stdoutText == "mine\n")
                    for id in [sandbox.id, sleeper.id] { _ = try await api.killSandbox(id) }
                    await expectNoLeftovers(server.data)
                }
            }
        }

        @Test("paused sandboxes count against the team's own limit (--max-paused-per-team); a kill frees a place")
        func pausedLimit() async throws {
            try await ServerHarness.with(runtime: "runc", extraArgs: ["--max-paused-per-team", "1"]) { (server: ServerHarness) async throws in
                let api = server.client
                let first = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let second = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                #expect(try await api.pause(first.id, memory: false).state == .paused)
                do {
                    _ = try await api.pause(second.id, memory: false)
                    Issue.record("a second pause went past the limit of 1")
                } catch let error as SproutError {
                    #expect(error.code == .conflict && error.message.contains("limit"), "\(error)")
                }
                #expect(try await api.sandbox(second.id).state == .running, "the refused pause changed nothing")
                _ = try await api.killSandbox(first.id)
                #expect(try await api.pause(second.id, memory: false).state == .paused)
                _ = try await api.killSandbox(second.id)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("runc has no memory snapshots here: pause, fork say so, never a silent downgrade")
        func runcRefuses() async throws {
            try await ServerHarness.with(runtime: "runc") { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let pauseOnTimeout = { _ = try await api.createSandbox(API.CreateSandbox(env: "empty", onTimeout: "pause")) }
                for attempt in [{ _ = try await api.pause(sandbox.id) }, { _ = try await api.fork(sandbox.id, count: 1) }, pauseOnTimeout] {
                    do {
                        try await attempt()
                        Issue.record("runc snapshotted memory")
                    } catch let error as SproutError {
                        #expect(error.code == .unsupported)
                        #expect(error.message.contains("--runtime gvisor"))
                    }
                }
                #expect(try await api.sandbox(sandbox.id).state == .running)
                _ = try await api.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }
    }
}
