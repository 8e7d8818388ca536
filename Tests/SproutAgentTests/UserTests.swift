import Glibc
import SproutAgentProtocol
import SproutAgentClient
import SproutCore
import Testing

/// Users and extended attributes, against the host's own accounts: the agent
/// runs as root here, and `nobody` (uid 65534) is in every Debian /etc/passwd.
@Suite("agent users and extended attributes", .enabled(if: getuid() == 0))
struct UserTests {
    @Test("a process runs as the named user with its ids, HOME and groups; root stays the default")
    func processAsUser() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            // Positive control: the same probe as root reports root.
            let asRoot = try await c.run(ProcessSpec(shell: "id -u; id -g; echo $HOME", cwd: "/tmp"))
            #expect(asRoot.stdoutText == "0\n0\n/root\n")
            let asNobody = try await c.run(ProcessSpec(shell: "id -u; id -g; id -G; echo $HOME $USER; pwd", cwd: "/tmp", user: "nobody"))
            #expect(asNobody.stdoutText == "65534\n65534\n65534\n/nonexistent nobody\n/tmp\n")
            #expect(asNobody.exit == ProcessExit(code: 0))
            // The user cannot do what only root can.
            let denied = try await c.run(ProcessSpec(shell: "cat /etc/shadow >/dev/null 2>&1; echo $?", cwd: "/tmp", user: "nobody"))
            #expect(denied.stdoutText == "1\n")
            // A terminal belongs to its user.
            let tty = try await c.run(ProcessSpec(shell: "stat -c %u $(tty)", cwd: "/tmp", pty: TerminalSize(cols: 80, rows: 24), user: "nobody"))
            #expect(tty.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines) == "65534")
            await #expect(throws: SproutError(.notFound, "no user 'no-such-user' in this sandbox")) {
                _ = try await c.run(ProcessSpec(cmd: ["true"], user: "no-such-user"))
            }
        }
    }

    @Test("files written and directories made for a user belong to it; the ones that existed keep their owner")
    func ownership() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            let dir = agent.workdir
            try await c.write(Array("hi".utf8), WriteRequest(path: "\(dir)/new/file.txt", owner: "nobody"))
            let file = try await c.stat("\(dir)/new/file.txt")
            #expect(file.uid == 65534 && file.gid == 65534 && file.owner == "nobody")
            #expect(try await c.stat("\(dir)/new").uid == 65534)
            #expect(try await c.stat(dir).uid == 0)
            #expect(try await c.stat(dir).owner == "root")
            try await c.makeDirectory("\(dir)/made/deeper", owner: "nobody")
            #expect(try await c.stat("\(dir)/made").uid == 65534)
            #expect(try await c.stat("\(dir)/made/deeper").uid == 65534)
            // Without an owner, root's as before.
            try await c.write(Array("x".utf8), to: "\(dir)/plain.txt")
            #expect(try await c.stat("\(dir)/plain.txt").uid == 0)
            // An unknown owner writes nothing.
            await #expect(throws: SproutError(.notFound, "no user 'ghost' in this sandbox")) {
                try await c.write(Array("x".utf8), WriteRequest(path: "\(dir)/ghost/f", owner: "ghost"))
            }
            await #expect(throws: SproutError.self) { try await c.stat("\(dir)/ghost") }
        }
    }

    @Test("user.* extended attributes are set on write, listed by stat and list, changed and removed; others are refused")
    func extendedAttributes() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            let path = agent.workdir + "/tagged.txt"
            try await c.write(Array("data".utf8), WriteRequest(path: path, xattrs: ["user.origin": "upload", "user.e2b.k": "v 1"]))
            #expect(try await c.stat(path).xattrs == ["user.origin": "upload", "user.e2b.k": "v 1"])
            #expect(try await c.list(agent.workdir).first { $0.path == path }?.xattrs == ["user.origin": "upload", "user.e2b.k": "v 1"])
            let changed = try await c.setXattrs(path, set: ["user.origin": "changed"], remove: ["user.e2b.k"])
            #expect(changed.xattrs == ["user.origin": "changed"])
            _ = try await c.setXattrs(path, remove: ["user.origin", "user.never-set"])
            #expect(try await c.stat(path).xattrs == nil)
            await #expect(throws: SproutError.self) { _ = try await c.setXattrs(path, set: ["trusted.x": "1"]) }
            await #expect(throws: SproutError.self) {
                try await c.write(Array("new".utf8), WriteRequest(path: path, xattrs: ["security.x": "1"]))
            }
            // The refused write changed nothing.
            #expect(try await c.read(path) == Array("data".utf8))
        }
    }
}
