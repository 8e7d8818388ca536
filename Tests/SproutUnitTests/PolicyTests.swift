import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import SproutAPI
import SproutCore
@testable import SproutServer
import SproutSystem
import Testing

/// The server's policies on a test clock: timeouts, idle pauses, memory
/// pressure, the warm pool's demand. Each moves the clock past a bound and
/// runs one supervisor round (or one pool pass), so a rule about minutes is
/// checked at once and exactly, on the fake host. (Pauses here keep only
/// files: the fake runtime saves no memory. The integration suites check each
/// once for real.)
@Suite("Unit: policies on a test clock", .serialized)
struct PolicyTests {
    typealias Client = any TestClientProtocol

    static func create(_ client: Client, _ key: String, _ body: API.CreateSandbox) async throws -> API.Sandbox {
        let response = try await client.execute(uri: "/v1/sandboxes", method: .post, headers: headers(key), body: try HTTPTests.json(body))
        #expect(response.status == .created, "\(String(buffer: response.body))")
        return try HTTPTests.decode(API.Sandbox.self, response)
    }

    static func show(_ client: Client, _ key: String, _ id: String) async throws -> API.Sandbox {
        try HTTPTests.decode(API.Sandbox.self, try await client.execute(uri: "/v1/sandboxes/\(id)", method: .get, headers: headers(key)))
    }

    static func exec(_ client: Client, _ key: String, _ id: String) async throws -> HTTPResponse.Status {
        try await client.execute(uri: "/v1/sandboxes/\(id)/exec", method: .post, headers: headers(key), body: try HTTPTests.json(API.Exec(cmd: ["true"]))).status
    }

    /// Moves the clock once the supervisor sleeps on it between rounds, and
    /// waits for the one round that wakes it to finish.
    static func advance(_ clock: TestClock, by seconds: Double, _ services: SproutServices) async {
        await clock.untilSleeping()
        let done = services.supervisor.rounds.count
        clock.advance(by: seconds)
        await services.supervisor.rounds.wait(for: done + 1)
    }

    static func headers(_ key: String) -> HTTPFields { [.init("X-API-Key")!: key, .contentType: "application/json"] }

    @Test("timeout: killed once its time is up and not a second before; extended, it lives on; onTimeout pause sleeps instead, with its time kept")
    func timeout() async throws {
        let clock = TestClock()
        try await HTTPTests.withServer(clock: clock) { client, key, services in
            let short = try await Self.create(client, key, API.CreateSandbox(env: "empty", timeoutSeconds: 60))
            let sleeper = try await Self.create(client, key, API.CreateSandbox(env: "empty", timeoutSeconds: 60, onTimeout: "pause", pauseMemory: false))
            await Self.advance(clock, by: 59, services)
            #expect(try await Self.show(client, key, short.id).state == .running, "59 s of 60: still running")
            let extended = try await client.execute(uri: "/v1/sandboxes/\(short.id)/timeout", method: .post, headers: Self.headers(key),
                                                    body: try HTTPTests.json(API.SetTimeout(timeoutSeconds: 120)))
            #expect(extended.status == .ok)
            await Self.advance(clock, by: 2, services)
            #expect(try await Self.show(client, key, short.id).state == .running, "extended: still running")
            let slept = try await Self.show(client, key, sleeper.id)
            #expect(slept.state == .paused && slept.remainingSeconds == 60, "onTimeout pause: paused with its whole timeout again: \(slept)")
            await Self.advance(clock, by: 120, services)
            let ended = try await Self.show(client, key, short.id)
            #expect(ended.state == .killed)
            let events = try HTTPTests.decode([API.SandboxEvent].self, try await client.execute(
                uri: "/v1/sandboxes/\(short.id)/events", method: .get, headers: Self.headers(key)))
            #expect(events.contains { $0.message.contains("timeout") }, "\(events)")
            #expect(try await Self.show(client, key, sleeper.id).state == .paused, "a paused sandbox's clock stands still")
        }
    }

    @Test("idle pause: a request or an open stream keeps it awake; the pause comes once it has been idle for its time")
    func idlePause() async throws {
        let clock = TestClock()
        try await HTTPTests.withServer(clock: clock) { client, key, services in
            let sandbox = try await Self.create(client, key, API.CreateSandbox(env: "empty", timeoutSeconds: 3600, idlePauseSeconds: 30, pauseMemory: false))
            await Self.advance(clock, by: 20, services)
            #expect(try await Self.exec(client, key, sandbox.id) == .ok)
            await Self.advance(clock, by: 20, services)
            #expect(try await Self.show(client, key, sandbox.id).state == .running, "20 s since the last request: awake")
            let whileOpen = await services.lifecycle.activity.holding(sandbox.id) { () async -> SandboxState? in
                await Self.advance(clock, by: 60, services)
                return (try? await Self.show(client, key, sandbox.id))?.state
            }
            #expect(whileOpen == .running, "a stream open for 60 s: awake")
            await Self.advance(clock, by: 29, services)
            #expect(try await Self.show(client, key, sandbox.id).state == .running, "29 s after the stream ended: awake")
            await Self.advance(clock, by: 2, services)
            #expect(try await Self.show(client, key, sandbox.id).state == .paused, "31 s idle: paused")
        }
    }

    @Test("memory pressure: a create past the budget puts the least recently used idle sandbox to sleep, and only it; with no one idle enough it is refused")
    func pressure() async throws {
        let clock = TestClock()
        try await HTTPTests.withServer(clock: clock, configure: {
            $0.memoryBudgetMB = 1024
            $0.pressureIdleSeconds = 30
            $0.minimumFreeMemoryMB = 0
        }) { client, key, services in
            let older = try await Self.create(client, key, API.CreateSandbox(env: "empty", timeoutSeconds: 3600, memoryMB: 512, pauseMemory: false))
            let newer = try await Self.create(client, key, API.CreateSandbox(env: "empty", timeoutSeconds: 3600, memoryMB: 512, pauseMemory: false))
            await Self.advance(clock, by: 10, services)
            #expect(try await Self.exec(client, key, newer.id) == .ok, "used later than the other")
            await Self.advance(clock, by: 20, services)
            // 20 s since `newer` was used, 30 since `older`: only `older` is idle enough.
            let third = try await Self.create(client, key, API.CreateSandbox(env: "empty", timeoutSeconds: 3600, memoryMB: 512, pauseMemory: false))
            #expect(try await Self.show(client, key, older.id).state == .paused, "the least recently used went to sleep")
            #expect(try await Self.show(client, key, newer.id).state == .running)
            #expect(try await Self.show(client, key, third.id).state == .running)
            // Nobody idle long enough now: a fourth is refused, and nothing changes.
            let refused = try await client.execute(uri: "/v1/sandboxes", method: .post, headers: Self.headers(key),
                                                   body: try HTTPTests.json(API.CreateSandbox(env: "empty", memoryMB: 512)))
            #expect(refused.status == .serviceUnavailable, "\(String(buffer: refused.body))")
            #expect(try await Self.show(client, key, newer.id).state == .running)
        }
    }

    @Test("warm pool: demand starts pooled sandboxes, a create takes one, and the pool empties once demand is older than its idle time")
    func poolDemand() async throws {
        let clock = TestClock()
        try await HTTPTests.withServer(clock: clock, configure: {
            $0.poolSize = 2
            $0.poolBudget = 8
            $0.poolIdleSeconds = 600
        }) { client, key, services in
            func pooled() async throws -> Int { try await services.lifecycle.repository.all(in: [.pooled]).count }
            let first = try await Self.create(client, key, API.CreateSandbox(env: "empty"))
            await services.pool.adjust()
            #expect(try await pooled() == 2, "demand for empty: two pooled")
            let second = try await Self.create(client, key, API.CreateSandbox(env: "empty"))
            #expect(try await pooled() == 1, "a create took one")
            #expect(second.id != first.id)
            await services.pool.adjust()
            #expect(try await pooled() == 2, "refilled")
            await Self.advance(clock, by: 599, services)
            await services.pool.adjust()
            #expect(try await pooled() == 2, "599 s after the last demand: kept")
            await Self.advance(clock, by: 2, services)
            await services.pool.adjust()
            #expect(try await pooled() == 0, "demand older than the pool's idle time: emptied")
        }
    }
}
