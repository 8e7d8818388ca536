import Foundation
import Glibc
import Logging
import SproutClient
import SproutCore
import SproutRuntime
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("API: auth, teams and bad input")
    struct APITests {
        @Test("missing, wrong and revoked keys get 401; another team's sandbox is 404")
        func auth() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let admin = server.client
                await #expect(throws: SproutError(.unauthorized, "missing X-API-Key header")) {
                    try await server.client(key: nil).sandboxes()
                }
                await #expect(throws: SproutError(.unauthorized, "invalid or revoked API key")) {
                    try await server.client(key: "sk_wrong").sandboxes()
                }
                let other = try await admin.createKey(API.CreateKey(name: "other", team: "other-team"))
                let otherClient = server.client(key: other.secret)
                #expect(try await otherClient.sandboxes().isEmpty)
                let mine = try await admin.createSandbox(API.CreateSandbox(env: "empty"))
                await #expect(throws: SproutError(.notFound, "no sandbox with id '\(mine.id)'")) {
                    try await otherClient.sandbox(mine.id)
                }
                await #expect(throws: SproutError(.notFound, "no sandbox with id '\(mine.id)'")) {
                    try await otherClient.run(mine.id, API.Exec(cmd: ["true"]))
                }
                await #expect(throws: SproutError(.notFound, "no sandbox with id '\(mine.id)'")) {
                    try await otherClient.killSandbox(mine.id)
                }
                // Non-admin keys cannot manage keys.
                await #expect(throws: SproutError(.forbidden, "managing keys needs an admin key")) {
                    try await otherClient.keys()
                }
                // A revoked key stops working at once.
                try await admin.revokeKey(other.key.id)
                await #expect(throws: SproutError(.unauthorized, "invalid or revoked API key")) {
                    try await otherClient.sandboxes()
                }
                #expect(try await admin.sandbox(mine.id).state == .running)
                // Keys are stored hashed: the secret is nowhere in the catalog.
                let db = try Descriptor.readFile(server.data + "/sprout.db", limit: 64 << 20)
                #expect(!String(decoding: db, as: UTF8.self).contains(other.secret))
            }
        }

        @Test("unknown env or sandbox is 404; out-of-range limits and bad metadata are 400; nothing is created")
        func badInput() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                await #expect(throws: SproutError(.notFound, "no env named 'nope'")) {
                    try await api.createSandbox(API.CreateSandbox(env: "nope"))
                }
                await #expect(throws: SproutError(.notFound, "no sandbox with id 'sbx_missing'")) {
                    try await api.sandbox("sbx_missing")
                }
                await #expect(throws: SproutError(.invalidArgument, "memoryMB must be between 64 and 65536, got 1")) {
                    try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 1))
                }
                await #expect(throws: SproutError.self) { try await api.createSandbox(API.CreateSandbox(env: "empty", cpu: 64)) }
                await #expect(throws: SproutError(.invalidArgument, "timeoutSeconds must be between 1 and 86400, got 0")) {
                    try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 0))
                }
                await #expect(throws: SproutError.self) {
                    try await api.createSandbox(API.CreateSandbox(env: "empty", metadata: ["x": "line\r\nInjected: yes"]))
                }
                await #expect(throws: SproutError(.invalidArgument, "invalid environment variable name 'A B'")) {
                    try await api.createSandbox(API.CreateSandbox(env: "empty", envVars: ["A B": "1"]))
                }
                #expect(try await api.sandboxes(includeEnded: true).isEmpty)

                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                await #expect(throws: SproutError(.invalidArgument, "path must not contain '..': /code/../etc/passwd")) {
                    try await api.read(sandbox.id, path: "/code/../etc/passwd")
                }
                await #expect(throws: SproutError(.invalidArgument, "path must be absolute: etc/passwd")) {
                    try await api.read(sandbox.id, path: "etc/passwd")
                }
                await #expect(throws: SproutError.self) { try await api.read(sandbox.id, path: "/no/such/file") }
                await #expect(throws: SproutError(.invalidArgument, "timeoutSeconds must be between 1 and 86400, got 100000")) {
                    try await api.setTimeout(sandbox.id, seconds: 100_000)
                }
                // Malformed JSON and an unknown route.
                let raw = try HTTPConnection(host: "127.0.0.1", port: server.port)
                try raw.sendHead(method: "POST", target: "/v1/sandboxes", host: "x", headers: [("X-API-Key", server.adminKey)], bodyLength: 5)
                try raw.sendBody(Array("{nope".utf8))
                #expect(try raw.readResponseHead().status == 400)
                let unknown = try HTTPConnection(host: "127.0.0.1", port: server.port)
                try unknown.sendHead(method: "GET", target: "/v1/nothing", host: "x", headers: [("X-API-Key", server.adminKey)], bodyLength: nil)
                #expect(try unknown.readResponseHead().status == 404)
            }
        }

        @Test("a create refused for lack of disk space changes nothing")
        func diskFull() async throws {
            // Failure injection: the server is told it needs more free space than any disk has.
            try await ServerHarness.with(extraArgs: ["--min-free-mb", "100000000"]) { (server: ServerHarness) async throws in
                await #expect(throws: SproutError.self) {
                    try await server.client.createSandbox(API.CreateSandbox(env: "empty"))
                }
                #expect(try await server.client.sandboxes(includeEnded: true).isEmpty)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("/metrics reports requests, sandboxes by state and create durations; /health needs no key")
        func metrics() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                #expect(try await server.client(key: nil).health().status == "ok")
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try await api.run(sandbox.id, API.Exec(cmd: ["true"]))
                let text = try await api.metrics()
                #expect(text.contains(#"sprout_sandboxes{state="running"} 1"#))
                #expect(text.contains(#"sprout_sandbox_creates_total{result="ok"} 1"#))
                #expect(text.contains("sprout_sandbox_create_duration_seconds_count 1"))
                #expect(text.contains(#"sprout_http_requests_total{method="POST",route="/v1/sandboxes",status="201"} 1"#))
                await #expect(throws: SproutError.self) { try await server.client(key: nil).metrics() }
            }
        }

        @Test("a missing runtime binary is a clear error naming the package")
        func missingRuntime() throws {
            #expect(throws: SproutError(.unavailable, "the gvisor runtime needs `runsc`, which is not installed: apt-get install runsc (make deps)")) {
                _ = try OCIRuntime(kind: .gvisor, stateRoot: "/tmp/unused", logger: Logger(label: "test"), searchPath: "/nonexistent")
            }
        }

        @Test("a runsc older than Debian 13's is refused, naming how to get a newer one; the installed one is accepted")
        func oldRunsc() throws {
            let dir = try FileSystem.makeTemporaryDirectory(prefix: "sprout-old-runsc")
            defer { try? FileSystem.removeTree(dir) }
            let old = dir + "/runsc"
            try FileSystem.writeAtomically(old, "#!/bin/sh\necho 'runsc version 0.0~20221219.0'\necho 'spec: 1.0.2-dev'\n", mode: 0o755)
            #expect(throws: SproutError(.unavailable,
                "\(old) is runsc 0.0~20221219.0; Sprout needs release 20240729 or newer (Debian 13's package: `make deps` installs it from trixie)")) {
                _ = try OCIRuntime(kind: .gvisor, stateRoot: dir + "/state", logger: Logger(label: "test"), binary: old)
            }
            #expect(OCIRuntime.runscRelease("0.0~20240729.0") == 20240729 && OCIRuntime.runscRelease("release-20250101.0") == 20250101)
            #expect(try OCIRuntime.version(of: "/usr/bin/runsc").hasPrefix("0.0~2024"), "positive control: the installed runsc is new enough")
        }
    }
}
