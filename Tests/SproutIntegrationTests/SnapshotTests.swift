import Foundation
import SproutClient
import SproutCore
import SproutStore
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("snapshots into envs")
    struct SnapshotTests {
        @Test("a snapshot keeps written and deleted files, not the sandbox's identity; forks chain; equal content, equal env")
        func snapshotAndFork() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                let first = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try await api.run(first.id, API.Exec(shell: "echo v1 > /code/app.txt && rm /etc/passwd && mkdir -p /data/empty"))
                let env1 = try await api.snapshot(first.id, name: "my-app")
                #expect(env1.parent == "empty")
                #expect(env1.name == "my-app")
                #expect(env1.layers.count == 1)
                #expect(env1.id.hasPrefix("my-app-"))
                #expect((env1.totalBytes ?? 0) > env1.ownBytes, "the total counts the base too")
                // The original keeps running.
                #expect(try await api.run(first.id, API.Exec(cmd: ["cat", "/code/app.txt"])).stdoutText == "v1\n")

                let second = try await api.createSandbox(API.CreateSandbox(env: env1.id))
                #expect(second.env == env1.id)
                let seen = try await api.run(second.id, API.Exec(shell: "cat /code/app.txt; test -e /etc/passwd || echo gone; test -d /data/empty && echo dir; hostname; cat /etc/hostname"))
                #expect(seen.stdoutText == "v1\ngone\ndir\n\(second.id)\n\(second.id)\n")

                // A fork of the fork: a chain of two layers; a name finds the newest env.
                _ = try await api.run(second.id, API.Exec(shell: "echo v2 > /code/app.txt"))
                let env2 = try await api.snapshot(second.id)
                #expect(env2.parent == env1.id)
                #expect(env2.name == "my-app")
                #expect(env2.layers.count == 2 && env2.layers.first == env1.layers.first)
                let third = try await api.createSandbox(API.CreateSandbox(env: "my-app"))
                #expect(third.env == env2.id)
                #expect(try await api.run(third.id, API.Exec(cmd: ["cat", "/code/app.txt"])).stdoutText == "v2\n")
                // An old env id still starts, like checking out an old commit.
                let old = try await api.createSandbox(API.CreateSandbox(env: env1.id))
                #expect(try await api.run(old.id, API.Exec(cmd: ["cat", "/code/app.txt"])).stdoutText == "v1\n")

                // Snapshotting unchanged content again gives the same env and stores nothing.
                let again = try await api.snapshot(third.id)
                #expect(again.parent == env2.id)
                #expect(try await api.snapshot(third.id) == again)
                let twin = try await api.createSandbox(API.CreateSandbox(env: env1.id))
                let twinEnv = try await api.snapshot(twin.id)
                #expect(twinEnv.layers.count == 2)
                #expect(twinEnv.ownBytes < 64 * 1024, "an empty fork stored \(twinEnv.ownBytes) bytes")

                // A fork costs its change: a 1 KiB file adds about 1 KiB.
                #expect(env2.ownBytes < 64 * 1024, "a one-file fork stored \(env2.ownBytes) bytes")
                let envs = try await api.envs()
                #expect(Set(envs.map(\.id)).isSuperset(of: ["empty", "debian", env1.id, env2.id]))

                // Another team sees none of it.
                let other = try await api.createKey(API.CreateKey(team: "other"))
                let otherAPI = server.client(key: other.secret)
                await #expect(throws: SproutError(.notFound, "no env named '\(env1.id)'")) {
                    try await otherAPI.createSandbox(API.CreateSandbox(env: env1.id))
                }
                await #expect(throws: SproutError(.invalidArgument, "env name must be 1-64 characters of a-z, 0-9, '-' and '_', and not a built-in name")) {
                    try await api.snapshot(first.id, name: "../evil")
                }
            }
        }

        @Test("layer digests ignore timestamps and see content, modes and links")
        func digests() throws {
            let root = "/tmp/sprout-digest-\(Identifiers.random(length: 6))"
            defer { try? FileManager.default.removeItem(atPath: root) }
            try FileManager.default.createDirectory(atPath: root + "/a/b", withIntermediateDirectories: true)
            try "x".write(toFile: root + "/a/b/f", atomically: false, encoding: .utf8)
            let first = try LayerDigest.of(directory: root)
            try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSince1970: 5)], ofItemAtPath: root + "/a/b/f")
            #expect(try LayerDigest.of(directory: root) == first)
            try "y".write(toFile: root + "/a/b/f", atomically: false, encoding: .utf8)
            #expect(try LayerDigest.of(directory: root) != first)
            try "x".write(toFile: root + "/a/b/f", atomically: false, encoding: .utf8)
            #expect(try LayerDigest.of(directory: root) == first)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: root + "/a/b/f")
            #expect(try LayerDigest.of(directory: root) != first)
        }
    }
}

extension Integration {
    @Suite("unlimited forking")
    struct ChainTests {
        @Test("a chain of 200 forks still starts, and sees every fork's change and deletion")
        func deepChain() async throws {
            // runc: the layer logic is the runtime's overlay either way, and runc starts faster.
            try await ServerHarness.with(runtime: "runc") { (server: ServerHarness) async throws in
                let api = server.client
                var env = "empty"
                var sandbox = try await api.createSandbox(API.CreateSandbox(env: env))
                for i in 1...200 {
                    var script = "echo \(i) > /code/f\(i % 7) && echo \(i) > /code/last"
                    if i == 50 { script += " && rm /bin/vi" }  // a whiteout deep in the chain
                    if i == 120 { script += " && rm -r /code && mkdir /code && echo fresh > /code/marker" }  // an opaque dir
                    _ = try await api.run(sandbox.id, API.Exec(shell: script))
                    env = try await api.snapshot(sandbox.id).id
                    try await api.killSandbox(sandbox.id)
                    sandbox = try await api.createSandbox(API.CreateSandbox(env: env))
                }
                #expect(try await api.env(env).layers.count == 200)
                let seen = try await api.run(sandbox.id, API.Exec(shell: "cat /code/last /code/marker; ls /code | wc -l; test -e /bin/vi || echo vi-gone; cat /code/f3"))
                // f0...f6 were rewritten after /code was replaced at 120; marker survived.
                #expect(seen.stdoutText == "200\nfresh\n9\nvi-gone\n199\n")
            }
        }
    }
}

extension Integration {
    @Suite("env graph")
    struct EnvGraphTests {
        func layerDirectories(_ server: ServerHarness) -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: server.data + "/layers")) ?? []).filter { !$0.hasPrefix(".") }
        }

        @Test("tree shows ancestry; delete refuses while forked, keeps what its sandboxes use until the last ends, garbage-collects what only it used, --force cascades")
        func treeAndDelete() async throws {
            try await ServerHarness.with(runtime: "runc") { (server: ServerHarness) async throws in
                let api = server.client
                let a = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try await api.run(a.id, API.Exec(shell: "echo one > /code/one"))
                let e1 = try await api.snapshot(a.id, name: "graph")
                let b = try await api.createSandbox(API.CreateSandbox(env: e1.id))
                _ = try await api.run(b.id, API.Exec(shell: "echo two > /code/two"))
                let e2 = try await api.snapshot(b.id)
                let tree = try await api.envTree(e2.id)
                #expect(tree.ancestors == [e1.id, "empty"])
                #expect(try await api.envTree(e1.id).descendants == [API.EnvTree.Node(id: e2.id, parent: e1.id, depth: 1)])
                #expect(layerDirectories(server).count == 2)

                await #expect(throws: SproutError(.conflict, "env \(e1.id) has 1 descendant env(s); delete them first or use --force")) {
                    try await api.deleteEnv(e1.id)
                }
                await #expect(throws: SproutError(.invalidArgument, "the built-in env 'empty' cannot be deleted")) {
                    try await api.deleteEnv("empty")
                }
                #expect(try await api.deleteEnv(e2.id) == [e2.id])
                #expect(layerDirectories(server).count == 1)
                // Deleted while b runs from it: found no more, starts nothing new, and b keeps it (as E2B's snapshots).
                #expect(try await api.deleteEnv(e1.id) == [e1.id])
                await #expect(throws: SproutError(.notFound, "no env named '\(e1.id)'")) { try await api.env(e1.id) }
                await #expect(throws: SproutError(.notFound, "no env named '\(e1.id)'")) { try await api.createSandbox(API.CreateSandbox(env: e1.id)) }
                #expect(try await api.run(b.id, API.Exec(shell: "cat /code/one /code/two")).stdoutText == "one\ntwo\n")
                #expect(layerDirectories(server).count == 1, "its layer stays while b runs")
                _ = try await api.killSandbox(b.id)
                #expect(layerDirectories(server).isEmpty, "and goes with the last sandbox of it")
                // --force deletes the descendants too and kills what runs from them.
                let c = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                _ = try await api.run(c.id, API.Exec(shell: "echo three > /code/three"))
                let e3 = try await api.snapshot(c.id, name: "graph")
                let d = try await api.createSandbox(API.CreateSandbox(env: e3.id))
                _ = try await api.run(d.id, API.Exec(shell: "echo four > /code/four"))
                let e4 = try await api.snapshot(d.id)
                #expect(try await api.deleteEnv(e3.id, force: true) == [e3.id, e4.id])
                #expect(try await api.sandbox(d.id).state == .killed)
                #expect(layerDirectories(server).isEmpty)
                await #expect(throws: SproutError(.notFound, "no env named '\(e1.id)'")) { try await api.env(e1.id) }
            }
        }
    }
}
