import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SproutAPI
import SproutCluster
import SproutCore
@testable import SproutServer
import SproutSystem
import Testing

/// The HTTP layer and the services behind it, through Hummingbird's router
/// test client (no sockets) on the fake host (`FakeHost`): no root needed.
@Suite("Unit: HTTP API on a fake runtime", .serialized)
struct HTTPTests {
    /// A server on a fresh data directory and the fake host; removed after `body`.
    /// On `backend`'s catalog (`--catalog postgres://…` for PostgreSQL).
    static func withServer(
        clock: any WallClock = SystemClock(), backend: CatalogBackend = .sqlite, configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: @escaping @Sendable (any TestClientProtocol, String, SproutServices) async throws -> Void
    ) async throws {
        guard backend == .sqlite else {
            return try await LocalPostgres.withTemporary { postgres in
                try await withServer(clock: clock, configure: { config in
                    config.catalog = postgres.url()
                    configure(&config)
                }, body)
            }
        }
        let data = try FileSystem.makeTemporaryDirectory(prefix: "sprout-unit")
        defer { try? FileSystem.removeTree(data) }
        var config = ServerConfiguration(dataDirectory: data)
        config.poolSize = 0
        configure(&config)
        let host = try FakeHost.make(directory: data)
        let (app, parts) = try await buildApplication(config, logger: Logger(label: "unit"), host: host, clock: clock)
        let key = try #require(parts.newAdminKey)
        do {
            try await app.test(.router) { client in try await body(client, key, parts.services) }
        } catch {
            await host.runtime.shutdown()
            await parts.shutdown()
            throw error
        }
        await host.runtime.shutdown()
        await parts.shutdown()
    }

    static func json(_ value: some Encodable) throws -> ByteBuffer { ByteBuffer(data: try JSONEncoder().encode(value)) }

    static func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
        try JSONDecoder().decode(type, from: Data(buffer: response.body))
    }

    static func errorCode(_ response: TestResponse) -> String? {
        (try? JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: [String: String]])?["error"]?["code"]
    }

    @Test("create, exec, files, list, kill: the whole path with the real agent behind a fake runtime, on either catalog",
          arguments: CatalogBackend.usable)
    func lifecycle(_ backend: CatalogBackend) async throws {
        try await Self.withServer(backend: backend) { client, key, services in
            let auth: HTTPFields = [.init("X-API-Key")!: key, .contentType: "application/json"]
            let created = try await client.execute(uri: "/v1/sandboxes", method: .post, headers: auth,
                                                   body: try Self.json(API.CreateSandbox(env: "empty", envVars: ["WHO": "unit"])))
            #expect(created.status == .created)
            let sandbox = try Self.decode(API.Sandbox.self, created)
            #expect(sandbox.state == .running)
            // The sandbox's variables for warm processes, in the fake host's own file (its agent works on the host's paths).
            #expect((try? String(contentsOfFile: services.lifecycle.host.envFile, encoding: .utf8)) == #"{"WHO":"unit"}"#)
            // A file path in the data directory, likewise: the fake's "sandbox" sees the host's root.
            let file = services.lifecycle.settings.dataDirectory + "/a.txt"
            let exec = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)/exec", method: .post, headers: auth,
                                                body: try Self.json(API.Exec(shell: "echo $WHO; exit 3")))
            #expect(exec.status == .ok)
            let events = String(buffer: exec.body).split(separator: "\n").compactMap {
                try? JSONDecoder().decode(API.ExecEvent.self, from: Data($0.utf8))
            }
            #expect(events.compactMap(\.stdoutBytes).flatMap { $0 } == Array("unit\n".utf8))
            #expect(events.last?.exit == API.Exit(code: 3))
            let put = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)/files?path=\(file)", method: .put, headers: auth,
                                               body: ByteBuffer(string: "hello"))
            #expect(put.status == .created)
            let get = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)/files?path=\(file)", method: .get, headers: auth)
            #expect(String(buffer: get.body) == "hello")
            let list = try await client.execute(uri: "/v1/sandboxes", method: .get, headers: auth)
            #expect(try Self.decode([API.Sandbox].self, list).map(\.id) == [sandbox.id])
            let killed = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)", method: .delete, headers: auth)
            #expect(try Self.decode(API.Sandbox.self, killed).state == .killed)
            let after = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)/exec", method: .post, headers: auth,
                                                 body: try Self.json(API.Exec(cmd: ["true"])))
            #expect(after.status == .conflict)
            let events2 = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)/events", method: .get, headers: auth)
            #expect(try Self.decode([API.SandboxEvent].self, events2).map(\.kind) == ["creating", "running", "killing", "killed"])
        }
    }

    @Test("no key is 401, another team's sandbox is 404, bad input is 400 and creates nothing, no memory snapshots is 501; on either catalog",
          arguments: CatalogBackend.usable)
    func refusals(_ backend: CatalogBackend) async throws {
        try await Self.withServer(backend: backend) { client, key, _ in
            let admin: HTTPFields = [.init("X-API-Key")!: key, .contentType: "application/json"]
            #expect(try await client.execute(uri: "/v1/sandboxes", method: .get).status == .unauthorized)
            let wrong: HTTPFields = [.init("X-API-Key")!: "sk_wrong"]
            #expect(try await client.execute(uri: "/v1/sandboxes", method: .get, headers: wrong).status == .unauthorized)
            let made = try await client.execute(uri: "/v1/keys", method: .post, headers: admin, body: try Self.json(API.CreateKey(team: "other")))
            let other: HTTPFields = [.init("X-API-Key")!: try Self.decode(API.CreatedKey.self, made).secret, .contentType: "application/json"]
            let sandbox = try Self.decode(API.Sandbox.self, try await client.execute(
                uri: "/v1/sandboxes", method: .post, headers: admin, body: try Self.json(API.CreateSandbox(env: "empty"))))
            for (method, path) in [(HTTPRequest.Method.get, ""), (.delete, ""), (.get, "/events"), (.post, "/pause")] {
                let response = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)\(path)", method: method, headers: other,
                                                        body: method == .post ? ByteBuffer(string: "{}") : nil)
                #expect(response.status == .notFound, "\(method) \(path)")
            }
            #expect(try Self.decode([API.Sandbox].self, try await client.execute(uri: "/v1/sandboxes", method: .get, headers: other)).isEmpty)
            for bad in [API.CreateSandbox(env: "empty", memoryMB: 1), API.CreateSandbox(env: "empty", cpu: 0), API.CreateSandbox(env: "empty", timeoutSeconds: 0)] {
                let response = try await client.execute(uri: "/v1/sandboxes", method: .post, headers: admin, body: try Self.json(bad))
                #expect(response.status == .badRequest)
            }
            let garbage = try await client.execute(uri: "/v1/sandboxes", method: .post, headers: admin, body: ByteBuffer(string: "{not json"))
            #expect(garbage.status == .badRequest)
            #expect(Self.errorCode(garbage) == "malformed")
            let missing = try await client.execute(uri: "/v1/sandboxes", method: .post, headers: admin, body: try Self.json(API.CreateSandbox(env: "nope")))
            #expect(missing.status == .notFound)
            let pause = try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)/pause", method: .post, headers: admin, body: ByteBuffer(string: "{}"))
            #expect(pause.status == .notImplemented)
            #expect(Self.errorCode(pause) == "unsupported")
            let all = try Self.decode([API.Sandbox].self, try await client.execute(uri: "/v1/sandboxes", method: .get, headers: admin))
            #expect(all.map(\.id) == [sandbox.id], "refused creates made nothing")
        }
    }

    @Test("a container that ends on its own is recorded as killed with the reason, by the supervisor's liveness check")
    func deathNoticed() async throws {
        try await Self.withServer { client, key, services in
            let auth: HTTPFields = [.init("X-API-Key")!: key, .contentType: "application/json"]
            let sandbox = try Self.decode(API.Sandbox.self, try await client.execute(
                uri: "/v1/sandboxes", method: .post, headers: auth, body: try Self.json(API.CreateSandbox(env: "empty"))))
            let runtime = try #require(services.lifecycle.runtime as? FakeRuntime)
            runtime.crash(sandbox.id)
            try await Task.sleep(for: .milliseconds(200))
            await services.supervisor.checkLiveness()
            let seen = try Self.decode(API.Sandbox.self, try await client.execute(uri: "/v1/sandboxes/\(sandbox.id)", method: .get, headers: auth))
            #expect(seen.state == .killed)
            #expect(seen.error?.hasPrefix("stopped: its runtime exited unexpectedly") == true, "\(seen.error ?? "none")")
        }
    }

    @Test("E2B create: Sprout-Pool yes/no chooses the pool or not; any other value is 400 and creates nothing")
    func e2bPoolHeader() async throws {
        #expect(try E2BControlRoutes.fromPool(nil) == nil)
        #expect(try E2BControlRoutes.fromPool("no") == false)
        #expect(try E2BControlRoutes.fromPool("Yes") == true)
        try await Self.withServer { client, key, _ in
            var auth: HTTPFields = [.init("X-API-Key")!: key, .contentType: "application/json"]
            auth[E2BControlRoutes.poolHeader] = "maybe"
            let refused = try await client.execute(uri: "/sandboxes", method: .post, headers: auth, body: ByteBuffer(string: #"{"templateID":"empty"}"#))
            #expect(refused.status == .badRequest)
            auth[E2BControlRoutes.poolHeader] = "no"
            let made = try await client.execute(uri: "/sandboxes", method: .post, headers: auth, body: ByteBuffer(string: #"{"templateID":"empty"}"#))
            #expect(made.status == .created)
            let all = try Self.decode([API.Sandbox].self, try await client.execute(uri: "/v1/sandboxes", method: .get, headers: auth))
            #expect(all.count == 1, "only the accepted create made a sandbox")
        }
    }
}
