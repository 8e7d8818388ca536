import Foundation
import Glibc
import SproutClient
import SproutCore
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutSystem

extension Integration {
    @Suite("sandboxes on gVisor")
    struct GVisorSandboxTests {
        @Test("create from empty, exec with stdout/stderr/exit, identity files, file put/get, kill")
        func lifecycle() async throws {
            let data = try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(
                    env: "empty", memoryMB: 256, envVars: ["GREETING": "hello"], metadata: ["owner": "tests"]))
                #expect(sandbox.state == .running)
                #expect(sandbox.runtime == "gvisor")
                #expect(sandbox.metadata == ["owner": "tests"])
                #expect(sandbox.envVarNames == ["GREETING"])

                let result = try await api.run(sandbox.id, API.Exec(shell: "echo out; echo err >&2; echo $GREETING; exit 3"))
                #expect(result.exit == API.Exit(code: 3))
                #expect(result.stdoutText == "out\nhello\n")
                #expect(result.stderrText == "err\n")

                let identity = try await api.run(sandbox.id, API.Exec(shell: "hostname; grep \(sandbox.id) /etc/hosts"))
                #expect(identity.stdoutText.hasPrefix("\(sandbox.id)\n"))
                #expect(identity.stdoutText.contains("\(sandbox.address ?? "?")\t\(sandbox.id)"))

                let payload = Identifiers.randomBytes(300_000)
                try await api.write(sandbox.id, bytes: payload, to: "/code/data.bin")
                #expect(try await api.read(sandbox.id, path: "/code/data.bin") == payload)
                let listing = try await api.list(sandbox.id, path: "/code")
                #expect(listing.map(\.name) == ["data.bin"])
                #expect(try await api.stat(sandbox.id, path: "/code/data.bin").size == 300_000)
                try await api.remove(sandbox.id, path: "/code/data.bin")
                #expect(try await api.list(sandbox.id, path: "/code").isEmpty)

                // The memory limit is a real cgroup limit: the sandbox's 256 MiB, plus the
                // 128 MiB of headroom in which the server ends the biggest process before
                // the host's OOM killer would end the whole sandbox.
                let limit = try String(contentsOfFile: "/sys/fs/cgroup/memory/sprout/\(sandbox.id)/memory.limit_in_bytes", encoding: .utf8)
                #expect(limit.trimmedLines == String((256 + 128) << 20))

                let killed = try await api.killSandbox(sandbox.id)
                #expect(killed.state == .killed)
                #expect(try await api.sandboxes().isEmpty)
                await #expect(throws: SproutError.self) { try await api.run(sandbox.id, API.Exec(cmd: ["true"])) }
                await expectNoLeftovers(server.data)
                return server.data
            }
            await expectNoLeftovers(data)
            // Positive control: with the data directory gone, the check still sees what is named after this server.
            let instance = try #require(HostResources.stopped.current[data]?.instance)
            let probe = "sprout-\(instance)-sbx_probe"
            _ = try await HostResources.hostOutput(["ip", "netns", "add", probe])
            let seen = await HostResources.leftovers(data: data)
            _ = try? await HostResources.hostOutput(["ip", "netns", "delete", probe])
            #expect(seen == ["netns \(probe)"])
        }

        @Test("an interactive terminal: stty size, resize, exit code")
        func terminal() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let ws = try await api.terminal(sandbox.id, cols: 100, rows: 30, command: "/bin/sh")
                func readUntil(_ needle: String) async throws -> String {
                    var seen = ""
                    while !seen.contains(needle), let message = try await ws.receive() {
                        if case .binary(let bytes) = message { seen += String(decoding: bytes, as: UTF8.self) }
                    }
                    return seen
                }
                try await ws.send(.binary(Array("stty size\n".utf8)))
                #expect(try await readUntil("30 100").contains("30 100"))
                try await ws.send(.text(#"{"resize":{"cols":120,"rows":40}}"#))
                try await ws.send(.binary(Array("stty size\n".utf8)))
                #expect(try await readUntil("40 120").contains("40 120"))
                try await ws.send(.binary(Array("exit 5\n".utf8)))
                var exit: API.Exit?
                while let message = try await ws.receive() {
                    if case .text(let text) = message {
                        exit = try JSONDecoder().decode(API.ExecEvent.self, from: Data(text.utf8)).exit
                        break
                    }
                }
                #expect(exit == API.Exit(code: 5))
                ws.close()
            }
        }

        @Test("a streamed exec: input reaches the process as it is sent (an answer comes back before the input ends); its end closes stdin; a bad request is a clear error")
        func streamedExec() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                // The second line is sent only once the answer to the first has
                // come back: only input that streams can get that far.
                let answered = AsyncStream<Void>.makeStream()
                let lines = Locked(["one\n", "two\n"])
                let output = Locked("")
                let exit = try await api.execStreaming(
                    sandbox.id, API.Exec(shell: "while read l; do echo got $l; done; echo eof; exit 4"),
                    input: {
                        guard let line = lines.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { return nil }
                        if line == "two\n" { for await _ in answered.stream { break } }
                        return Array(line.utf8)
                    },
                    onEvent: { event in
                        guard let bytes = event.stdoutBytes else { return }
                        let seen = output.withLock { $0 += String(decoding: bytes, as: UTF8.self); return $0 }
                        if seen.contains("got one") { answered.continuation.yield() }
                    })
                #expect(output.withLock { $0 } == "got one\ngot two\neof\n")
                #expect(exit == API.Exit(code: 4))
                await #expect(throws: SproutError.self) {
                    _ = try await api.execStreaming(sandbox.id, API.Exec(cmd: ["no-such-program"]), input: { nil })
                }
                _ = try await api.killSandbox(sandbox.id)
            }
        }

        @Test("per-sandbox metrics: CPU, memory and disk sampled every 5 s, range-filtered; bad ranges are 400")
        func metrics() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", diskMB: 256))
                _ = try await api.start(sandbox.id, API.Exec(shell: "timeout 12 sh -c 'while :; do :; done'"))
                _ = try await api.run(sandbox.id, API.Exec(shell: "dd if=/dev/zero of=/code/fill bs=1048576 count=24 2>/dev/null; sync"))
                var samples: [API.SandboxMetric] = []
                try await eventually(40, every: .milliseconds(500)) {
                    samples = try await api.metrics(sandbox.id)
                    return samples.count >= 3 && samples.last!.diskUsedBytes >= 24 << 20
                }
                #expect(samples.count >= 3, "\(samples)")
                #expect(zip(samples, samples.dropFirst()).allSatisfy { $1.timestamp - $0.timestamp < 7 }, "sampled at least every 5 s (a tick of slack): \(samples.map(\.timestamp))")
                #expect(samples.dropFirst().contains { $0.cpuUsedPct > 30 }, "the busy loop shows: \(samples.map(\.cpuUsedPct))")
                #expect(samples.allSatisfy { $0.memTotalBytes == 512 << 20 && $0.memUsedBytes > 0 && $0.diskTotalBytes == 256 << 20 && $0.cpuCount == 1 })
                #expect(samples.last!.diskUsedBytes >= 24 << 20, "\(samples.map(\.diskUsedBytes))")
                let second = samples[1].timestamp
                #expect(try await api.metrics(sandbox.id, start: second).first?.timestamp == second)
                #expect(try await api.metrics(sandbox.id, end: second).last?.timestamp == second)
                #expect(try await api.metrics(sandbox.id, start: samples.last!.timestamp + 1000).isEmpty)
                await #expect(throws: SproutError.self) { _ = try await api.metrics(sandbox.id, start: 10, end: 5) }
                _ = try await api.killSandbox(sandbox.id)
            }
        }

        @Test("port previews reach an HTTP server and a WebSocket server inside the sandbox")
        func portPreview() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try await api.run(sandbox.id, API.Exec(shell: "mkdir -p /www && echo preview-ok > /www/index.html && httpd -p 8080 -h /www"))
                try await eventually { (try? await api.preview(sandbox.id, port: 8080, path: "/index.html"))?.0 == 200 }
                let (status, body) = try await api.preview(sandbox.id, port: 8080, path: "/index.html")
                #expect(status == 200)
                #expect(String(decoding: body, as: UTF8.self) == "preview-ok\n")
                let (missing, _) = try await api.preview(sandbox.id, port: 8080, path: "/nope.html")
                #expect(missing == 404)
                let (closed, _) = try await api.preview(sandbox.id, port: 9999, path: "/")
                #expect(closed == 503)

                // A WebSocket echo server made of busybox tools: it answers the
                // handshake, then echoes frames back as they come.
                try await api.write(sandbox.id, bytes: Array(Self.echoServer.utf8), to: "/ws-echo.sh")
                _ = try await api.run(sandbox.id, API.Exec(shell: "chmod +x /ws-echo.sh; (nc -ll -p 8081 -e /ws-echo.sh >/dev/null 2>&1 &)"))
                try await eventually { try await api.run(sandbox.id, API.Exec(shell: "netstat -ltn | grep -q ':8081 '")).exit == API.Exit(code: 0) }
                let ws = try WebSocketConnection(
                    host: "127.0.0.1", port: server.port, target: "/v1/sandboxes/\(sandbox.id)/ports/8081/echo",
                    headers: [("X-API-Key", server.adminKey)])
                try await ws.send(.text("ping through the preview"))
                #expect(try await ws.receive() == .text("ping through the preview"))
                ws.close()

                // By host name: {port}-{id}.localhost:PORT reaches the same servers, any path.
                let host = "8080-\(sandbox.id).localhost:\(server.port)"
                let byHost = try await CLI.runProcess(["curl", "-s", "-H", "Host: \(host)", "-H", "X-API-Key: \(server.adminKey)",
                                                       "http://127.0.0.1:\(server.port)/index.html"])
                #expect(byHost.stdout == "preview-ok\n", "\(byHost.stdout) \(byHost.stderr)")
                // *.localhost needs no DNS: curl resolves it to loopback itself.
                let resolved = try await CLI.runProcess(["curl", "-s", "-H", "X-API-Key: \(server.adminKey)", "http://\(host)/index.html"])
                #expect(resolved.stdout == "preview-ok\n", "\(resolved.stdout) \(resolved.stderr)")
                let anonymous = try await CLI.runProcess(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: \(host)",
                                                          "http://127.0.0.1:\(server.port)/index.html"])
                #expect(anonymous.stdout == "401", "no credential: \(anonymous.stdout)")
                let other = try await api.createKey(API.CreateKey(name: "other", team: "other"))
                let otherTeam = try await CLI.runProcess(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: \(host)",
                                                          "-H", "X-API-Key: \(other.secret)", "http://127.0.0.1:\(server.port)/index.html"])
                #expect(otherTeam.stdout == "404", "another team's key: \(otherTeam.stdout)")
                // Positive control for the probe above: the plain API still answers on this address.
                #expect(try await api.sandbox(sandbox.id).state == .running)
                let byHostWS = try WebSocketConnection(
                    host: "127.0.0.1", port: server.port, target: "/any/path", headers: [("X-API-Key", server.adminKey)],
                    authority: "8081-\(sandbox.id).localhost:\(server.port)")
                try await byHostWS.send(.text("ping by host"))
                #expect(try await byHostWS.receive() == .text("ping by host"))
                byHostWS.close()
            }
        }

        static let echoServer = #"""
            #!/bin/sh
            key=""
            while read -r line; do
              line=$(printf '%s' "$line" | tr -d '\r')
              [ -z "$line" ] && break
              case "$line" in Sec-WebSocket-Key:*|sec-websocket-key:*) key=$(printf '%s' "${line#*:}" | tr -d ' ');; esac
            done
            hex=$(printf '%s' "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -d' ' -f1)
            accept=$(printf "$(printf '%s' "$hex" | sed 's/../\\x&/g')" | base64)
            printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n' "$accept"
            exec cat
            """#

        @Test("a sandbox past its timeout is killed by the reaper; the timeout can be extended")
        func timeout() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let short = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 2))
                let extended = try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 2))
                try await api.setTimeout(extended.id, seconds: 60)
                // Expiry after 2 s, a reaper pass every second, ~1 s to tear down.
                var state = SandboxState.running
                try await eventually(30) {
                    state = try await api.sandbox(short.id).state
                    return state == .killed
                }
                #expect(state == .killed)
                #expect(try await api.sandbox(extended.id).state == .running)
                let metrics = try await api.metrics()
                #expect(metrics.contains(#"sprout_sandbox_kills_total{reason="timeout"} 1"#))
            }
        }

        @Test("kill -9 of the server: running sandboxes are adopted, dead ones removed, nothing leaks")
        func crashAndRestart() async throws {
            let server = try ServerHarness()
            defer { server.stop() }
            let api = server.client
            let survivor = try await api.createSandbox(API.CreateSandbox(env: "empty"))
            let victim = try await api.createSandbox(API.CreateSandbox(env: "empty"))
            _ = try await api.run(survivor.id, API.Exec(shell: "echo before > /code/state"))
            server.crash()
            // While the server is down, one container dies.
            _ = try await HostResources.hostOutput(["runsc", "--root", server.data + "/run/gvisor", "delete", "--force", victim.id])
            try server.start()
            let after = server.client
            #expect(try await after.sandbox(survivor.id).state == .running)
            #expect(try await after.run(survivor.id, API.Exec(cmd: ["cat", "/code/state"])).stdoutText == "before\n")
            let dead = try await after.sandbox(victim.id)
            #expect(dead.state == .killed)
            #expect(dead.error != nil)
            #expect(!FileManager.default.fileExists(atPath: server.data + "/sandboxes/\(victim.id)"))
            let namespaces = (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []
            #expect(!namespaces.contains { $0.hasSuffix(victim.id) })
            server.stopServer()
            await expectNoLeftovers(server.data)
        }

        @Test("create from the debian base env")
        func debian() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "debian"))
                let result = try await api.run(sandbox.id, API.Exec(shell: "cat /etc/debian_version; id -un; ls /usr/bin/apt-get"))
                #expect(result.exit == API.Exit(code: 0))
                #expect(result.stdoutText.hasPrefix("12."))
                #expect(result.stdoutText.contains("root\n/usr/bin/apt-get"))
            }
        }
    }

    @Suite("sandboxes on runc")
    struct RuncSandboxTests {
        @Test("create, exec, files and kill on runc")
        func lifecycle() async throws {
            let data = try await ServerHarness.with(runtime: "runc") { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", cpu: 0.5))
                #expect(sandbox.runtime == "runc")
                let result = try await api.run(sandbox.id, API.Exec(shell: "hostname; echo oops >&2; exit 7"))
                #expect(result.exit == API.Exit(code: 7))
                #expect(result.stdoutText == "\(sandbox.id)\n")
                #expect(result.stderrText == "oops\n")
                try await api.write(sandbox.id, bytes: Array("runc file".utf8), to: "/tmp/x")
                #expect(try await api.read(sandbox.id, path: "/tmp/x") == Array("runc file".utf8))
                let quota = try String(contentsOfFile: "/sys/fs/cgroup/cpu/sprout/\(sandbox.id)/cpu.cfs_quota_us", encoding: .utf8)
                #expect(quota.trimmedLines == "50000")
                try await api.killSandbox(sandbox.id)
                return server.data
            }
            await expectNoLeftovers(data)
        }
    }
}
