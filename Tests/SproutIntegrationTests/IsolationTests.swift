import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutStore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutBlocking

/// Probes that try to get out of a sandbox. Each must fail to escape.
extension Integration {
    @Suite("isolation probes")
    struct IsolationTests {
        /// A TCP listener on every host address; records any connection it gets.
        final class HostListener: @unchecked Sendable {
            let fd: Int32
            let port: UInt16
            let connections = Locked(0)

            init() throws {
                (fd, port) = try Socket.listenTCP(host: "0.0.0.0", port: 0)
                startThread { [fd, connections] in
                    while let client = try? Socket.accept(fd) {
                        connections.withLock { $0 += 1 }
                        Descriptor.close(client)
                    }
                }
            }

            func close() { Socket.shutdownBoth(fd); Descriptor.close(fd) }
        }

        static func probes(runtime: String) async throws {
            try await ServerHarness.with(runtime: runtime) { (server: ServerHarness) async throws in
                let api = server.client
                let a = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let b = try await api.createSandbox(API.CreateSandbox(env: "empty"))

                // Every probe first shows that its tool works (a positive control), so
                // none can pass because the tool is missing or broken.

                // 1. A marker file on the host is not there (cat reads the sandbox's own files).
                #expect(try await api.run(a.id, API.Exec(shell: "cat /etc/hostname")).stdoutText == "\(a.id)\n")
                let marker = "/tmp/sprout-marker-\(Identifiers.random(length: 8))"
                try "host secret".write(toFile: marker, atomically: true, encoding: .utf8)
                defer { unlink(marker) }
                #expect(try await api.run(a.id, API.Exec(shell: "cat \(marker)")).exit != API.Exit(code: 0))

                // 2. Host processes and the other sandbox's processes are invisible.
                _ = try await api.run(b.id, API.Exec(shell: "(sleep 300 &) ; echo started"))
                let ps = try await api.run(a.id, API.Exec(shell: "ps -o args"))
                #expect(ps.stdoutText.contains("ps -o args"), "ps lists the sandbox's own processes: \(ps.stdoutText)")
                #expect(!ps.stdoutText.contains("sprout server") && !ps.stdoutText.contains("sleep 300"), "\(ps.stdoutText)")

                // 3. The other sandbox's files are invisible.
                let secret = "secret-\(Identifiers.random(length: 8))"
                _ = try await api.run(b.id, API.Exec(shell: "echo x > /code/\(secret)"))
                #expect(try await api.run(b.id, API.Exec(shell: "find / -name \(secret) 2>/dev/null")).stdoutText == "/code/\(secret)\n")
                #expect(try await api.run(a.id, API.Exec(shell: "find / -name \(secret) 2>/dev/null")).stdoutText.isEmpty)

                // 4. A server on the host (all addresses, loopback included) cannot be reached
                // (nc reaches a server inside the same sandbox).
                _ = try await api.run(a.id, API.Exec(shell: "mkdir -p /own && echo own > /own/i && httpd -p 127.0.0.1:8081 -h /own"))
                let own = try await api.run(a.id, API.Exec(shell: "printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 127.0.0.1 8081"))
                #expect(own.stdoutText.contains("\nown\n"), "nc works inside the sandbox: \(own.stdoutText)")
                let listener = try HostListener()
                defer { listener.close() }
                let hostSide = a.address.map { address -> String in
                    var parts = address.split(separator: ".").map(String.init)
                    parts[3] = String((Int(parts[3]) ?? 2) - 1)
                    return parts.joined(separator: ".")
                } ?? "10.88.0.1"
                for target in [hostSide, "127.0.0.1"] {
                    let reach = try await api.run(a.id, API.Exec(shell: "echo hi | nc -w 2 \(target) \(listener.port)"))
                    #expect(reach.exit != API.Exit(code: 0), "nc reached \(target)")
                }
                #expect(listener.connections.current == 0, "a sandbox reached a server on the host")

                // 5. The other sandbox's address cannot be reached.
                _ = try await api.run(b.id, API.Exec(shell: "mkdir -p /www && echo hi > /www/i && httpd -p 8080 -h /www"))
                let itself = try await api.run(b.id, API.Exec(shell: "printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \(b.address ?? "") 8080"))
                #expect(itself.stdoutText.contains("\nhi\n"), "the server answers on its address: \(itself.stdoutText)")
                let cross = try await api.run(a.id, API.Exec(shell: "echo -e 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 2 \(b.address ?? "") 8080"))
                #expect(!cross.stdoutText.contains("hi"), "a sandbox reached another sandbox: \(cross.stdoutText)")
                // (The host itself still reaches it: the preview works.)
                #expect(try await api.preview(b.id, port: 8080, path: "/i").0 == 200)

                // 6. Writes never touch the env below.
                let base = ServerHarness.cache + "/bases/empty"
                let before = try LayerDigest.of(directory: base)
                _ = try await api.run(a.id, API.Exec(shell: "echo pwned > /etc/passwd; rm -f /bin/ls; mkdir /new-dir"))
                #expect(try LayerDigest.of(directory: base) == before)

                // 7. The clock and the host's network settings stay the host's.
                let route = try await HostResources.hostOutput(["ip", "route", "show", "default"])
                _ = try await api.run(a.id, API.Exec(shell: "date -s '2001-01-01 00:00:00'; ip link set eth0 down; ip route del default"))
                #expect(Calendar(identifier: .gregorian).component(.year, from: Date()) >= 2025, "the host clock moved")
                #expect(try await HostResources.hostOutput(["ip", "route", "show", "default"]) == route)

                // 8. Exceeding the memory limit ends only the process that did it: the
                // sandbox, its agent and its other processes stay up. (awk builds one long
                // string; the limit is 128 MiB.)
                let small = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 128))
                // Positive control: the same program under the limit runs to the end.
                func string(megabytes: Int) -> API.Exec {
                    API.Exec(shell: "awk 'BEGIN { s = sprintf(\"%\(megabytes)000000s\", \"\"); print length(s) }'; echo exit=$?")
                }
                let under = try await api.run(small.id, string(megabytes: 40))
                #expect(under.stdoutText == "40000000\nexit=0\n", "a 40 MB string under a 128 MiB limit: \(under.stdoutText) \(under.stderrText)")
                _ = try await api.run(small.id, API.Exec(shell: "(sleep 600 &); echo started"))
                // The hog must be answered: a timeout or an error here is a failure, not "contained".
                let hog = try await api.run(small.id, string(megabytes: 300))
                #expect(hog.stdoutText == "exit=137\n", "a 300 MB string under a 128 MiB limit: \(hog.stdoutText) \(hog.stderrText)")
                #expect(try await api.sandbox(small.id).state == .running)
                let survivors = try await api.run(small.id, API.Exec(shell: "ps -o args | grep -c '^sleep 600'"))
                #expect(survivors.stdoutText == "1\n", "the sandbox's other process lives on: \(survivors.stdoutText)")
                #expect(try await api.run(small.id, API.Exec(shell: "echo still here")).stdoutText == "still here\n")
                let events = try await api.events(small.id)
                #expect(events.contains { $0.kind == "oom" && $0.message.contains("(awk)") }, "\(events)")
                #expect(try await api.run(b.id, API.Exec(cmd: ["true"])).exit == API.Exit(code: 0))
                #expect(try await api.health().status == "ok")

                // 9. A fork bomb is contained by the pids limit; others keep being served.
                let bomb = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try await api.run(bomb.id, API.Exec(shell: "(b() { b | b & }; b) >/dev/null 2>&1 </dev/null & echo launched"))
                try await Task.sleep(for: .seconds(3))
                #expect(try await api.run(b.id, API.Exec(shell: "echo alive")).stdoutText == "alive\n")
                #expect(try await api.health().status == "ok")
                try await api.killSandbox(bomb.id)
                try await api.killSandbox(small.id)
            }
        }

        /// A host the suite makes for the sandboxes to try to reach: its own
        /// network namespace behind a veth, serving `name` over HTTP on port
        /// 8000 (busybox httpd). Never a real outside address.
        final class TestHost: @unchecked Sendable {
            let network: TestNetwork
            let name: String
            let directory: String
            let server: pid_t
            var namespace: String { network.namespace }
            var address: String { network.innerAddress }
            var cidr: String { network.cidr }

            init(name: String) async throws {
                self.name = name
                let network = try await TestNetwork(defaultRoute: true)
                self.network = network
                directory = "/tmp/\(network.namespace)"
                do {
                    try FileSystem.makeDirectories(directory)
                    try FileSystem.writeAtomically(directory + "/id", name + "\n", mode: 0o644)
                    server = try Spawn.spawn(
                        path: "/usr/bin/nsenter",
                        argv: ["nsenter", "--net=/run/netns/\(network.namespace)", "--", "busybox", "httpd", "-f", "-p", "8000", "-h", directory],
                        env: HostCommand.environment, options: Spawn.Options())
                } catch {
                    // Half made: remove what was.
                    await network.remove()
                    try? FileSystem.removeTree(directory)
                    throw error
                }
                // Serving once its port listens.
                try await eventually {
                    let listening = try? await HostCommand.capture(["ip", "netns", "exec", network.namespace, "busybox", "netstat", "-ltn"])
                    return listening?.stdout.contains(":8000 ") == true
                }
            }

            private var stopped = false

            /// Two test hosts, "allowed" and "other", removed after `body` however it ends.
            static func withPair(_ body: (TestHost, TestHost) async throws -> Void) async throws {
                let allowed = try await TestHost(name: "allowed")
                let other: TestHost
                do { other = try await TestHost(name: "other") } catch {
                    await allowed.stop()
                    throw error
                }
                do { try await body(allowed, other) } catch {
                    await allowed.stop()
                    await other.stop()
                    throw error
                }
                await allowed.stop()
                await other.stop()
            }

            func stop() async {
                guard !stopped else { return }
                stopped = true
                kill(server, SIGKILL)
                waitpid(server, nil, 0)
                await network.remove()
                try? FileSystem.removeTree(directory)
            }
        }

        @Test("network policy: internet off reaches no outside host; an egress allow-list reaches only its CIDRs")
        func networkPolicy() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                try await TestHost.withPair { allowed, other in
                // (busybox's wget crashes under gVisor: it is statically linked with glibc's resolver.)
                func reaches(_ sandbox: API.Sandbox, _ host: TestHost) async throws -> Bool {
                    let out = try await api.run(sandbox.id, API.Exec(shell: "printf 'GET /id HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \(host.address) 8000"))
                    return out.stdoutText.contains("\n\(host.name)\n")
                }
                let open = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                #expect(try await reaches(open, allowed))
                #expect(try await reaches(open, other))

                // A running sandbox's policy changes in place: an allow-list, then
                // nothing, then open again; each takes effect for new connections.
                let changing = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                #expect(try await api.setNetwork(changing.id, API.SetNetwork(egress: [allowed.cidr])).egress == [allowed.cidr])
                #expect(try await reaches(changing, allowed))
                #expect(try await !reaches(changing, other))
                #expect(try await api.setNetwork(changing.id, API.SetNetwork(internet: false)).internet == false)
                #expect(try await !reaches(changing, allowed))
                await #expect(throws: SproutError.self) { try await api.setNetwork(changing.id, API.SetNetwork(egress: ["10.0.0/8"])) }
                #expect(try await api.sandbox(changing.id).internet == false, "a refused change changes nothing")
                _ = try await api.setNetwork(changing.id, API.SetNetwork())
                #expect(try await reaches(changing, allowed))
                #expect(try await reaches(changing, other))
                _ = try await api.killSandbox(changing.id)

                let closed = try await api.createSandbox(API.CreateSandbox(env: "empty", internet: false))
                #expect(closed.internet == false)
                #expect(try await !reaches(closed, allowed))
                #expect(try await !reaches(closed, other))

                let listed = try await api.createSandbox(API.CreateSandbox(env: "empty", egress: [allowed.cidr]))
                #expect(listed.egress == [allowed.cidr])
                #expect(try await reaches(listed, allowed))
                #expect(try await !reaches(listed, other))
                // The policy survives a pause and resume (a fresh sandbox: one that just
                // made connections holds them in TIME_WAIT, which gVisor cannot save).
                let paused = try await api.createSandbox(API.CreateSandbox(env: "empty", egress: [allowed.cidr]))
                _ = try await api.pause(paused.id)
                _ = try await api.resume(paused.id)
                #expect(try await reaches(paused, allowed))
                #expect(try await !reaches(paused, other))

                for bad in [["10.0.0.0/33"], ["10.0.0/8"], ["300.1.1.1/8"], ["10.0.0.0/8; rm -rf /"], [String](repeating: "10.0.0.0/8", count: 65)] {
                    await #expect(throws: SproutError.self) { try await api.createSandbox(API.CreateSandbox(env: "empty", egress: bad)) }
                }
                await #expect(throws: SproutError.self) {
                    try await api.createSandbox(API.CreateSandbox(env: "empty", internet: false, egress: ["10.0.0.0/8"]))
                }
                for sandbox in [open, closed, listed, paused] { _ = try await api.killSandbox(sandbox.id) }
                let rules = try await HostResources.hostOutput(["nft", "list", "table", "inet", "sprout_" + server.instance])
                #expect(rules.contains("set egress"), "the probe reads this server's table")
                #expect(!rules.contains(allowed.cidr), "the allow-list rules went with the sandbox")
                }
                await expectNoLeftovers(server.data)
            }
        }

        @Test("filling the disk stops only that sandbox, with the reason; the others and the host go on")
        func diskLimit() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let filler = try await api.createSandbox(API.CreateSandbox(env: "empty", diskMB: 64))
                #expect(filler.diskMB == 64)
                let neighbour = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try? await api.run(filler.id, API.Exec(shell: "dd if=/dev/zero of=/code/fill bs=1048576 count=200 2>&1; sync"))
                var state = SandboxState.running
                try await eventually(30) {
                    state = try await api.sandbox(filler.id).state
                    return state == .killed
                }
                let stopped = try await api.sandbox(filler.id)
                #expect(stopped.state == .killed)
                #expect(stopped.error?.contains("disk limit exceeded") == true, "\(stopped.error ?? "no error")")
                #expect(try await api.run(neighbour.id, API.Exec(shell: "echo ok > /code/x && cat /code/x")).stdoutText == "ok\n")
                await #expect(throws: SproutError.self) { try await api.createSandbox(API.CreateSandbox(env: "empty", diskMB: 1)) }
                _ = try await api.killSandbox(neighbour.id)
                await expectNoLeftovers(server.data)
            }
        }

        /// A peer that vanishes without a word (a sandbox's container ended by
        /// a checkpoint just after a request went out: nothing at its address
        /// answers, not even with a reset) fails a connection into it within
        /// the bound, where the kernel's own retransmissions would hold a
        /// read for about fifteen minutes (the control shows the same probe
        /// on a connection without the bound: still established, its data
        /// unacknowledged, after the bounded one has failed).
        @Test("a connection whose peer vanishes silently with a request unanswered fails within its bound")
        func vanishedPeer() async throws {
            let peer = try await TestHost(name: "vanishing")
            var descriptors: [Int32] = []
            do {
                let bounded = try Socket.connectTCP(host: peer.address, port: 8000, unacknowledgedTimeoutSeconds: 1)
                descriptors.append(bounded)
                let control = try Socket.connectTCP(host: peer.address, port: 8000, unacknowledgedTimeoutSeconds: 0)
                descriptors.append(control)
                try await HostCommand.run(["ip", "-n", peer.namespace, "link", "set", "eth0", "down"])
                for fd in descriptors { try Descriptor.writeAll(fd, Array("GET /id HTTP/1.0\r\n\r\n".utf8)) }
                // A read bounded far beyond the connection's bound, so a missing bound fails here rather than hanging.
                Socket.setReceiveTimeout(bounded, seconds: 120)
                let failure = try await onThread { () -> Int32 in
                    var byte: UInt8 = 0
                    return Glibc.read(bounded, &byte, 1) < 0 ? errno : 0
                }
                #expect(failure == ETIMEDOUT, "the bounded read ended with \(errnoText(failure))")
                var info = tcp_info()
                var length = socklen_t(MemoryLayout<tcp_info>.size)
                getsockopt(control, Int32(IPPROTO_TCP), TCP_INFO, &info, &length)
                #expect(info.tcpi_state == 1 && info.tcpi_unacked > 0,
                        "the control is still established with its request unacknowledged (state \(info.tcpi_state), unacknowledged \(info.tcpi_unacked))")
            } catch {
                descriptors.forEach(Descriptor.close)
                await peer.stop()
                throw error
            }
            descriptors.forEach(Descriptor.close)
            await peer.stop()
        }

        @Test("on gVisor: host files, processes, loopback, other sandboxes, the env below, clock, network, memory, fork bomb")
        func gvisor() async throws { try await Self.probes(runtime: "gvisor") }

        @Test("on runc: the same probes")
        func runc() async throws { try await Self.probes(runtime: "runc") }
    }
}
