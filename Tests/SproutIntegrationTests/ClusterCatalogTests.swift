import Foundation
import Glibc
import Logging
import SproutCluster
import SproutCore
import SproutSystem
import Testing

/// The fleet's catalog against a real PostgreSQL (Debian's, started by the
/// test with initdb in a temporary directory). No sandboxes: it runs beside
/// the lanes. Needs root (initdb runs as the postgres user).
@Suite("cluster catalog on PostgreSQL", .enabled(if: getuid() == 0, "needs root (make test runs as root)"), .timeLimit(.minutes(5)))
struct ClusterCatalogTests {
    static func withCatalog(_ body: (LocalPostgres, ClusterCatalog) async throws -> Void) async throws {
        try await withTestPostgres { postgres in
            let catalog = try await ClusterCatalog(url: postgres.url(), logger: Logger(label: "test"))
            do {
                try await body(postgres, catalog)
            } catch {
                await catalog.shutdown()
                throw error
            }
            await catalog.shutdown()
        }
    }

    static func node(_ id: String, cpu: Double = 8, memoryMB: Int64 = 8192, flags: Set<String> = ["sse4_2", "avx2"]) -> ClusterCatalog.Registration {
        ClusterCatalog.Registration(id: id, address: "http://127.0.0.1:1/\(id)", cpuCapacity: cpu, memoryMB: memoryMB, diskMB: 100_000,
                                    cpuFlags: flags, runtime: "runsc 20240729 ptrace")
    }

    @Test("registration and renewal; a second registration fences the first epoch; drain; a second catalog on the same database migrates nothing")
    func leases() async throws {
        try await Self.withCatalog { postgres, catalog in
            let first = try await catalog.register(Self.node("a"), lease: .seconds(60))
            #expect(first.epoch == 1)
            #expect(try await catalog.renew(first, lease: .seconds(60)))
            let second = try await catalog.register(Self.node("a"), lease: .seconds(60))
            #expect(second.epoch == 2)
            #expect(try await catalog.renew(first, lease: .seconds(60)) == false, "the old epoch is fenced")
            #expect(try await catalog.renew(second, lease: .seconds(60)))
            let nodes = try await catalog.nodes()
            #expect(nodes.map(\.id) == ["a"] && nodes[0].state == .ready && nodes[0].leaseSeconds > 50)
            #expect(nodes[0].registration == Self.node("a"))

            // Opened again (another API server): the schema is there already.
            let again = try await ClusterCatalog(url: postgres.url(), logger: Logger(label: "test"))
            #expect(try await again.nodes().count == 1)
            await again.shutdown()

            try await catalog.drain("a")
            #expect(try await catalog.nodes()[0].state == .draining)
            // Drained again (to move what is left on it): still draining.
            try await catalog.drain("a")
            #expect(try await catalog.nodes()[0].state == .draining)
            await #expect(throws: SproutError(.notFound, "no node with id 'nope'")) { try await catalog.drain("nope") }
            await #expect(throws: SproutError.self) { _ = try await catalog.place(.init(sandbox: "s1", cpu: 1, memoryMB: 512)) }
        }
    }

    @Test("a lease that runs out by the database's clock: the node is marked lost once, its renewal refused, a new registration takes it back")
    func expiry() async throws {
        try await Self.withCatalog { _, catalog in
            let short = try await catalog.register(Self.node("a"), lease: .milliseconds(300))
            let long = try await catalog.register(Self.node("b"), lease: .seconds(60))
            // Wait on the catalog's own state: a is lost once its lease has passed by PostgreSQL's clock.
            var lost: [String] = []
            #expect(try await eventually {
                lost += try await catalog.markLost()
                return !lost.isEmpty
            })
            #expect(lost == ["a"], "only the node whose lease ran out")
            #expect(try await catalog.markLost().isEmpty, "each node is reported lost once")
            #expect(try await catalog.renew(short, lease: .seconds(60)) == false, "a lost node is fenced")
            #expect(try await catalog.renew(long, lease: .seconds(60)))
            #expect(try await catalog.nodes().map(\.state) == [.lost, .ready])
            await #expect(throws: SproutError(.conflict, "node a is lost; only a ready or draining node can be drained")) { try await catalog.drain("a") }
            // Nothing is placed on a lost node.
            for i in 0..<3 { #expect(try await catalog.place(.init(sandbox: "s\(i)", cpu: 1, memoryMB: 256)).node == "b") }
            let back = try await catalog.register(Self.node("a"), lease: .seconds(60))
            #expect(back.epoch == short.epoch + 1 && back.wasLost, "registered again after it was counted lost")
            #expect(try await catalog.register(Self.node("a"), lease: .seconds(60)).wasLost == false, "again, from ready")
            #expect(try await catalog.nodes().map(\.state) == [.ready, .ready])
        }
    }

    @Test("placement: by room, the preferred node when it fits, CPU features and runtime, refusals skipped, no room refused; release by the holder only")
    func placement() async throws {
        try await Self.withCatalog { _, catalog in
            let a = try await catalog.register(Self.node("a", cpu: 4, memoryMB: 4096), lease: .seconds(60))
            _ = try await catalog.register(Self.node("b", cpu: 8, memoryMB: 8192), lease: .seconds(60))
            _ = try await catalog.register(Self.node("c", cpu: 8, memoryMB: 8192, flags: ["sse4_2"]), lease: .seconds(60))
            var counts: [String: Int] = [:]
            for i in 0..<12 { counts[try await catalog.place(.init(sandbox: "s\(i)", cpu: 1, memoryMB: 1024)).node, default: 0] += 1 }
            // Spread by the room left: the bigger nodes take more, the small one some.
            #expect(counts["a", default: 0] >= 1 && counts["b", default: 0] >= 3 && counts["c", default: 0] >= 3, "\(counts)")
            let nodes = try await catalog.nodes()
            for node in nodes {
                #expect(node.reservedMemoryMB <= node.registration.memoryMB && node.reservedCPU <= node.registration.cpuCapacity)
                #expect(node.sandboxes == counts[node.id, default: 0])
            }
            // Preferred (the node that paused it) when it has room.
            #expect(try await catalog.place(.init(sandbox: "p1", cpu: 0.5, memoryMB: 256, prefer: "a")).node == "a")
            // A memory image's CPU features: only b and a have avx2; a node that refused is skipped.
            #expect(try await catalog.place(.init(sandbox: "f1", cpu: 0.5, memoryMB: 256, cpuFlags: ["avx2"], excluding: ["a"])).node == "b")
            do {
                _ = try await catalog.place(.init(sandbox: "r1", cpu: 0.5, memoryMB: 256, runtime: "runsc 20221219 ptrace"))
                Issue.record("placed on a node whose runtime is another")
            } catch let error as SproutError {
                #expect(error.code == .unavailable && error.message.contains("can restore sandbox r1's memory image"), "\(error)")
            }
            // Too big for any node.
            do {
                _ = try await catalog.place(.init(sandbox: "big", cpu: 1, memoryMB: 9000))
                Issue.record("a sandbox larger than every node was placed")
            } catch let error as SproutError {
                #expect(error.code == .unavailable && error.message.contains("no node has room"), "\(error)")
            }
            // Placing again moves the reservation (its team stays); release needs the holder's epoch.
            _ = try await catalog.place(.init(sandbox: "t1", team: "t2", cpu: 0.5, memoryMB: 256, prefer: "a"))
            #expect(try await catalog.teams(on: "a").contains { $0 == ("t1", "t2") })
            let moved = try await catalog.place(.init(sandbox: "p1", cpu: 0.5, memoryMB: 256, excluding: ["a"]))
            let now = try await catalog.placement(of: "p1")
            #expect(moved.node != "a" && now?.node == moved.node)
            let team = try await catalog.place(.init(sandbox: "t1", cpu: 0.5, memoryMB: 256, excluding: ["a"]))
            #expect(try await catalog.teams(on: team.node).contains { $0 == ("t1", "t2") }, "a move keeps the team")
            #expect(try await catalog.release("s0", by: .init(node: "zz", epoch: 1)) == false)
            let holder = try #require(try await catalog.placement(of: "s0"))
            #expect(try await catalog.release("s0", by: .init(node: holder.node, epoch: holder.epoch)))
            #expect(try await catalog.placement(of: "s0") == nil)
            _ = a
        }
    }

    @Test("placement favours nodes that started the env before (its layers are there) unless they are much busier")
    func envLocality() async throws {
        try await Self.withCatalog { _, catalog in
            // Each sandbox below takes 1 % of a node.
            for id in ["x", "y"] { _ = try await catalog.register(Self.node(id, cpu: 100, memoryMB: 102_400), lease: .seconds(60)) }
            for i in 0..<5 { _ = try await catalog.place(.init(sandbox: "s\(i)", cpu: 1, memoryMB: 1024, prefer: "x")) }
            try await catalog.noteHolding("env1", on: "x")
            try await catalog.noteHolding("env1", on: "x")  // once is enough; again changes nothing
            let holding = try await catalog.nodes(holding: "env1")
            #expect(holding == ["x"])
            #expect(try await catalog.nodes(holding: "env2").isEmpty)
            // The control: by room alone, the emptier y.
            #expect(try await catalog.place(.init(sandbox: "c1", cpu: 1, memoryMB: 1024)).node == "y")
            try await catalog.forget("c1")
            #expect(try await catalog.place(.init(sandbox: "e1", cpu: 1, memoryMB: 1024, holding: holding)).node == "x", "x holds the env")
            // x much busier now (16 % against 1 %): y after all.
            for i in 0..<10 { _ = try await catalog.place(.init(sandbox: "b\(i)", cpu: 1, memoryMB: 1024, prefer: "x")) }
            #expect(try await catalog.place(.init(sandbox: "e2", cpu: 1, memoryMB: 1024, holding: holding)).node == "y", "x is too busy for its layers to count")
        }
    }

    @Test("20 clients placing at once on 3 nodes never overcommit one: exactly as many fit as there is room for")
    func concurrentPlacement() async throws {
        try await Self.withCatalog { _, catalog in
            // Room for 10 + 10 + 10 sandboxes of 512 MiB.
            for id in ["a", "b", "c"] { _ = try await catalog.register(Self.node(id, cpu: 64, memoryMB: 5120), lease: .seconds(120)) }
            let results = await withTaskGroup(of: [String?].self) { group in
                for client in 0..<20 {
                    group.addTask {
                        var placed: [String?] = []
                        for i in 0..<3 {
                            placed.append(try? await catalog.place(.init(sandbox: "c\(client)-\(i)", cpu: 1, memoryMB: 512)).node)
                        }
                        return placed
                    }
                }
                var all: [String?] = []
                for await placed in group { all += placed }
                return all
            }
            #expect(results.count == 60)
            #expect(results.compactMap { $0 }.count == 30, "30 fit; the other 30 were refused")
            for node in try await catalog.nodes() {
                #expect(node.sandboxes == 10 && node.reservedMemoryMB == 5120, "\(node.id): \(node.sandboxes) sandboxes")
            }
        }
    }
}
