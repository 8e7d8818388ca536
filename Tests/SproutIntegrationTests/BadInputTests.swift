import Crypto
import Foundation
import SproutClient
import SproutCore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

/// One raw HTTP request (any target, any body): status and body.
func rawRequest(_ server: ServerHarness, _ method: String, _ target: String, body: [UInt8] = [], key: String? = nil) throws -> (Int, String) {
    let connection = try HTTPConnection(host: "127.0.0.1", port: server.port, timeoutSeconds: 10)
    defer { connection.close() }
    var headers = [("X-API-Key", key ?? server.adminKey)]
    if !body.isEmpty { headers.append(("Content-Type", "application/json")) }
    try connection.sendHead(method: method, target: target, host: "127.0.0.1", headers: headers, bodyLength: Int64(body.count))
    // A server may answer (and close) before it read an oversized body.
    _ = try? connection.sendBody(body)
    let head = try connection.readResponseHead(requestMethod: method)
    var text: [UInt8] = []
    while let chunk = try? connection.readBodyChunk(), text.count < 1 << 20 { text += chunk }
    return (head.status, String(decoding: text, as: UTF8.self))
}

extension Integration {
    @Suite("bad input")
    struct BadInputTests {
        @Test("oversized bodies, deep JSON, invalid UTF-8, ids that look like paths, header injection: a 4xx each, nothing changes")
        func probes() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", metadata: ["keep": "me"]))
                try await api.write(sandbox.id, bytes: Array("before\n".utf8), to: "/code/state.txt")
                let sid = sandbox.id

                var probes: [(String, String, [UInt8], ClosedRange<Int>)] = [
                    // Over the 1 MiB JSON limit.
                    ("POST", "/v1/sandboxes", Array(("{\"env\":\"empty\",\"metadata\":{\"k\":\"" + String(repeating: "a", count: 2 << 20) + "\"}}").utf8), 413...413),
                    // 100,000 levels of nesting.
                    ("POST", "/v1/sandboxes", Array((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8), 400...400),
                    ("POST", "/v1/sandboxes", Array(("{\"env\":" + String(repeating: "{\"a\":", count: 50_000) + "1" + String(repeating: "}", count: 50_001)).utf8), 400...400),
                    ("POST", "/v1/sandboxes/\(sid)/timeout", Array(String(repeating: "[", count: 100_000).utf8), 400...400),
                    // Not JSON, not UTF-8.
                    ("POST", "/v1/sandboxes", [0xFF, 0xFE, 0x00, 0x7B], 400...400),
                    // Invalid UTF-8 and traversal in file paths.
                    ("GET", "/v1/sandboxes/\(sid)/files?path=/code/%FF%FE", [], 400...404),
                    ("PUT", "/v1/sandboxes/\(sid)/files?path=/code/%C3%28", Array("x".utf8), 400...404),
                    ("GET", "/v1/sandboxes/\(sid)/files?path=/code/../../etc/shadow", [], 400...400),
                    ("DELETE", "/v1/sandboxes/\(sid)/files?path=/code/%2E%2E/%2E%2E/bin&recursive=true", [], 400...400),
                    ("GET", "/v1/sandboxes/\(sid)/files?path=/code/a%00b", [], 400...404),
                    // Ids that look like paths, or are not ids at all.
                    ("GET", "/v1/sandboxes/..%2F..%2Fetc%2Fpasswd", [], 404...404),
                    ("DELETE", "/v1/sandboxes/%2E%2E", [], 404...404),
                    ("GET", "/v1/sandboxes/%FF%FE", [], 400...404),
                    ("POST", "/v1/sandboxes/..%2F\(sid)/pause", [], 404...404),
                    ("GET", "/v1/envs/..%2F..%2Fsandboxes", [], 404...404),
                    ("DELETE", "/v1/envs/..%2Fempty", [], 400...404),
                    ("GET", "/v1/builds/..%2F..%2Fsprout.db", [], 404...404),
                    ("PUT", "/v1/blobs/..%2F..%2Fsprout.db", Array("x".utf8), 400...404),
                    ("DELETE", "/v1/keys/..%2Fkey", [], 404...404),
                    // Header injection through metadata, env vars and names.
                    ("POST", "/v1/sandboxes", Array(#"{"env":"empty","metadata":{"k":"v\r\nX-Injected: 1"}}"#.utf8), 400...400),
                    ("POST", "/v1/sandboxes", Array(#"{"env":"empty","metadata":{"k\r\nX: 1":"v"}}"#.utf8), 400...400),
                    ("POST", "/v1/sandboxes", Array(#"{"env":"empty","envVars":{"A\nB":"v"}}"#.utf8), 400...400),
                    ("POST", "/v1/sandboxes/\(sid)/snapshot", Array(#"{"name":"x\r\nSet-Cookie: a=b"}"#.utf8), 400...400),
                    // Wrong types and out-of-range numbers.
                    ("POST", "/v1/sandboxes", Array(#"{"env":"empty","cpu":"lots"}"#.utf8), 400...400),
                    ("POST", "/v1/sandboxes", Array(#"{"env":"empty","memoryMB":1e300}"#.utf8), 400...400),
                    ("POST", "/v1/sandboxes/\(sid)/timeout", Array(#"{"timeoutSeconds":-5}"#.utf8), 400...400),
                    ("POST", "/v1/sandboxes/\(sid)/fork", Array(#"{"count":99999999999999999999}"#.utf8), 400...400),
                ]
                // A made-up key.
                probes.append(("GET", "/v1/sandboxes", [], 401...401))
                for (index, (method, target, body, expected)) in probes.enumerated() {
                    let (status, text) = try rawRequest(server, method, target, body: body, key: index == probes.count - 1 ? "sk_bad" : nil)
                    #expect(expected.contains(status), "\(method) \(target.prefix(80)): \(status) \(text.prefix(200))")
                    if status < 500 && status != 413 && status >= 400 {
                        #expect(text.contains("\"error\""), "\(method) \(target.prefix(80)) answered without an error body: \(text.prefix(120))")
                    }
                }

                // Nothing changed: the one sandbox, its metadata and files; the server still serves.
                let all = try await api.sandboxes()
                #expect(all.map(\.id) == [sid])
                #expect(all.first?.metadata == ["keep": "me"])
                #expect(try await api.read(sid, path: "/code/state.txt") == Array("before\n".utf8))
                #expect(try await api.run(sid, API.Exec(cmd: ["ls", "/bin/sh"])).exit == API.Exit(code: 0))
                #expect(try await api.envs().allSatisfy(\.builtin))
                _ = try await api.killSandbox(sid)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("another team's ids answer 404 on every route, and nothing of theirs changes")
        func teamsOnEveryRoute() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let sid = sandbox.id
                try await api.write(sid, bytes: Array("mine\n".utf8), to: "/code/mine.txt")
                _ = try await api.run(sid, API.Exec(shell: "mkdir -p /www && echo page > /www/index.html && httpd -p 8080 -h /www"))
                let env = try await api.snapshot(sid, name: "mine")
                let blob = Array("team blob".utf8)
                let digest = hexString(Crypto.SHA256.hash(data: blob))
                try await api.uploadBlob(digest, bytes: blob)
                let pushed = try await api.push(API.Push(id: "mine-push", from: "empty", run: ["true"], start: nil, ready: nil, cpu: nil,
                                                         memoryMB: nil, files: [API.Push.File(path: "a.txt", mode: 0o644, sha256: digest)]))
                let build = try #require(pushed.build)
                _ = try await api.build(build.id, wait: true)

                let other = try await api.createKey(API.CreateKey(name: "other", team: "other"))
                let requests: [(String, String, [UInt8])] = [
                    ("GET", "/v1/sandboxes/\(sid)", []), ("DELETE", "/v1/sandboxes/\(sid)", []),
                    ("POST", "/v1/sandboxes/\(sid)/timeout", Array(#"{"timeoutSeconds":5}"#.utf8)),
                    ("POST", "/v1/sandboxes/\(sid)/exec", Array(#"{"cmd":["rm","/code/mine.txt"]}"#.utf8)),
                    ("GET", "/v1/sandboxes/\(sid)/processes", []),
                    ("POST", "/v1/sandboxes/\(sid)/processes/p1/signal", Array(#"{"signal":9}"#.utf8)),
                    ("GET", "/v1/sandboxes/\(sid)/files?path=/code/mine.txt", []),
                    ("PUT", "/v1/sandboxes/\(sid)/files?path=/code/mine.txt", Array("theirs".utf8)),
                    ("DELETE", "/v1/sandboxes/\(sid)/files?path=/code/mine.txt", []),
                    ("GET", "/v1/sandboxes/\(sid)/files/list?path=/code", []),
                    ("GET", "/v1/sandboxes/\(sid)/files/stat?path=/code/mine.txt", []),
                    ("POST", "/v1/sandboxes/\(sid)/files/mkdir?path=/code/x", []),
                    ("POST", "/v1/sandboxes/\(sid)/snapshot", Array("{}".utf8)),
                    ("POST", "/v1/sandboxes/\(sid)/pause", []), ("POST", "/v1/sandboxes/\(sid)/resume", []),
                    ("POST", "/v1/sandboxes/\(sid)/fork", Array(#"{"count":1}"#.utf8)),
                    ("GET", "/v1/sandboxes/\(sid)/pty", []),
                    ("GET", "/v1/sandboxes/\(sid)/ports/8080/index.html", []),
                    ("GET", "/v1/envs/\(env.id)", []), ("GET", "/v1/envs/\(env.id)/tree", []),
                    ("POST", "/v1/envs/\(env.id)/unpublish", []), ("POST", "/v1/envs/\(env.id)/publish", []),
                    ("DELETE", "/v1/envs/\(env.id)?force=true", []),
                    ("GET", "/v1/builds/\(build.id)", []), ("GET", "/v1/builds/\(build.id)/logs", []),
                    ("DELETE", "/v1/builds/\(build.id)", []),
                ]
                for (method, target, body) in requests {
                    let (status, text) = try rawRequest(server, method, target, body: body, key: other.secret)
                    #expect(status == 404, "\(method) \(target) as another team: \(status) \(text.prefix(160))")
                }
                // Blobs: knowledge is per team, so theirs is missing for another.
                let (status, text) = try rawRequest(server, "POST", "/v1/blobs/missing", body: Array(#"{"digests":["\#(digest)"]}"#.utf8), key: other.secret)
                #expect(status == 200 && text.contains(digest), "\(text)")
                // Another team creating from this env by id or name: not found.
                let (createStatus, _) = try rawRequest(server, "POST", "/v1/sandboxes", body: Array(#"{"env":"\#(env.id)"}"#.utf8), key: other.secret)
                #expect(createStatus == 404)
                // Nothing changed.
                #expect(try await api.read(sid, path: "/code/mine.txt") == Array("mine\n".utf8))
                #expect(try await api.sandbox(sid).state == .running)
                #expect(try await api.env(env.id).published)
                #expect(try await api.preview(sid, port: 8080, path: "/index.html").0 == 200)
                _ = try await api.killSandbox(sid)
                await expectNoLeftovers(server.data)
            }
        }

        @Test("a revoked key stops working at once, open WebSockets included")
        func revokedKeyClosesWebSockets() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let admin = server.client
                let created = try await admin.createKey(API.CreateKey(name: "temp", team: "default"))
                let api = server.client(key: created.secret)
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let ws = try await api.terminal(sandbox.id, cols: 80, rows: 24, command: "/bin/sh")
                try await ws.send(.binary(Array("echo alive\n".utf8)))
                var seen = ""
                while !seen.contains("alive\r\n") {
                    guard case .binary(let bytes)? = try await ws.receive() else { break }
                    seen += String(decoding: bytes, as: UTF8.self)
                }
                _ = try await admin.revokeKey(created.key.id)
                let revokedAt = monotonicSeconds()
                // The server closes the terminal within a second.
                var closed = false
                while monotonicSeconds() - revokedAt < 5 {
                    do {
                        guard try await ws.receive() != nil else { closed = true; break }
                    } catch {
                        closed = true
                        break
                    }
                }
                #expect(closed)
                #expect(monotonicSeconds() - revokedAt < 2, "closed after \(monotonicSeconds() - revokedAt) s")
                ws.close()
                await #expect(throws: SproutError(.unauthorized, "invalid or revoked API key")) { try await api.sandboxes() }
                _ = try await admin.killSandbox(sandbox.id)
                await expectNoLeftovers(server.data)
            }
        }
    }
}
