import Foundation
import Glibc
import SproutAgentProtocol
import SproutAgentClient
import SproutCore
import SproutHost
import SproutSystem
import Testing

@Suite("agent files")
struct FileTests {
    @Test("a 64 MiB random file round-trips with the same SHA-256")
    func roundTrip() async throws {
        try await AgentHarness.with { agent in
            let local = agent.workdir + "-local.bin"
            let back = agent.workdir + "-back.bin"
            defer {
                unlink(local)
                unlink(back)
            }
            let fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            for _ in 0..<64 { try Descriptor.writeAll(fd, Identifiers.randomBytes(1 << 20)) }
            close(fd)
            let remote = agent.workdir + "/deep/er/blob.bin"
            let sent = try await agent.client.upload(localPath: local, to: remote)
            #expect(sent == 64 << 20)
            let received = try await agent.client.download(remote, to: back)
            #expect(received == 64 << 20)
            let want = try await HostCommand.capture(["sha256sum", local]).stdout.prefix(64)
            let got = try await HostCommand.capture(["sha256sum", back]).stdout.prefix(64)
            // The agent's own copy, hashed inside the agent.
            let inside = try await agent.client.run(ProcessSpec(cmd: ["sha256sum", remote])).stdoutText.prefix(64)
            #expect(want.count == 64)
            #expect(got == want)
            #expect(inside == want)
        }
    }

    @Test("stat, list with depth, mkdir, move, read, remove")
    func operations() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            let dir = agent.workdir
            try await c.makeDirectory("\(dir)/a/b/c")
            try await c.write(Array("hello".utf8), to: "\(dir)/a/b/file.txt", mode: 0o600)
            let info = try await c.stat("\(dir)/a/b/file.txt")
            #expect(info.type == .file && info.size == 5 && info.mode == 0o600 && info.name == "file.txt")
            let shallow = try await c.list("\(dir)/a")
            #expect(shallow.map(\.name) == ["b"])
            let deep = try await c.list("\(dir)/a", depth: 3)
            #expect(deep.map(\.path) == ["\(dir)/a/b", "\(dir)/a/b/c", "\(dir)/a/b/file.txt"])
            try await c.move("\(dir)/a/b/file.txt", to: "\(dir)/moved/here.txt")
            #expect(try await c.read("\(dir)/moved/here.txt") == Array("hello".utf8))
            // Relative paths are taken from the agent's working directory.
            #expect(try await c.read("moved/here.txt") == Array("hello".utf8))
            await #expect(throws: SproutError(.conflict, "directory \(dir)/a is not empty (remove it recursively)")) {
                try await c.remove("\(dir)/a")
            }
            try await c.remove("\(dir)/a", recursive: true)
            await #expect(throws: SproutError.self) { try await c.stat("\(dir)/a") }
        }
    }

    @Test("file errors: missing path, directory as file, failed upload leaves nothing")
    func badInput() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            let dir = agent.workdir
            await #expect(throws: SproutError(.notFound, "\(dir)/missing: No such file or directory")) {
                try await c.read("\(dir)/missing")
            }
            await #expect(throws: SproutError(.invalidArgument, "\(dir) is a directory")) {
                try await c.write(Array("x".utf8), to: dir)
            }
            await #expect(throws: SproutError(.invalidArgument, "\(dir) is a directory")) {
                try await c.read(dir)
            }
            try await c.write(Array("file".utf8), to: "\(dir)/plain")
            await #expect(throws: SproutError(.conflict, "\(dir)/plain exists and is not a directory")) {
                try await c.write(Array("x".utf8), to: "\(dir)/plain/child")
            }
            // An upload cut off half way leaves neither the target nor a temp file.
            let (channel, _) = try agentConnect(agent, .write(WriteRequest(path: "\(dir)/partial.bin")))
            try channel.send(.data, Identifiers.randomBytes(100_000))
            channel.close()
            try await Task.sleep(for: .milliseconds(200))
            let names = try await c.list(dir).map(\.name)
            #expect(names == ["plain"])
        }
    }

    @Test("watch sees a create and a remove, recursively")
    func watch() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            let dir = agent.workdir
            try await c.makeDirectory("\(dir)/sub")
            let watch = try await c.watch(dir, recursive: true)
            defer { watch.close() }
            try await c.write(Array("x".utf8), to: "\(dir)/sub/new.txt")
            try await c.remove("\(dir)/sub/new.txt")
            var seen: [WatchEvent] = []
            for try await event in watch {
                seen.append(event)
                if event.type == .remove { break }
            }
            // Uploads land under a temporary name and are renamed into place.
            #expect(seen.contains(WatchEvent(type: .create, path: "\(dir)/sub/new.txt", isDir: false)))
            #expect(seen.last == WatchEvent(type: .remove, path: "\(dir)/sub/new.txt", isDir: false))
        }
    }
}

extension FileTests {
    @Test("watch delivers every event in order: two writes are two events, and a directory made under a recursive watch reports what is made in it")
    func watchEveryEvent() async throws {
        try await AgentHarness.with { agent in
            let c = agent.client
            let dir = agent.workdir
            let watch = try await c.watch(dir, recursive: true)
            defer { watch.close() }
            // One process makes the directory and the file at once: the file may come before the directory's own watch.
            _ = try await c.run(ProcessSpec(cmd: ["/bin/sh", "-c", "mkdir \(dir)/made && echo a > \(dir)/made/f"]))
            for line in ["b", "c"] {
                _ = try await c.run(ProcessSpec(cmd: ["/bin/sh", "-c", "echo \(line) >> \(dir)/made/f"]))
            }
            try await c.remove("\(dir)/made/f")
            var seen: [WatchEvent] = []
            for try await event in watch {
                seen.append(event)
                if event.type == .remove { break }
            }
            let file = seen.filter { $0.path == "\(dir)/made/f" }
            #expect(seen.first == WatchEvent(type: .create, path: "\(dir)/made", isDir: true), "\(seen)")
            #expect(file.first?.type == .create && file.last?.type == .remove, "\(file)")
            #expect(file.suffix(3).map(\.type) == [.write, .write, .remove], "the two appends are two writes: \(file)")
        }
    }
}

/// Opens a raw connection to the agent (for tests that misbehave on purpose).
func agentConnect(_ agent: AgentHarness, _ request: AgentRequest, token: String? = nil, version: Int = AgentProtocol.version) throws -> (FrameChannel, Reply) {
    let fd = try Socket.connectTCP(host: "127.0.0.1", port: agent.port)
    let channel = FrameChannel(fd: fd)
    try channel.send(message: RequestEnvelope(token: token ?? agent.token, request: request, protocolVersion: version))
    return (channel, try channel.receiveMessage(Reply.self))
}

@Suite("agent memory")
struct MemoryTests {
    /// Peak resident memory of a process, from /proc (kB).
    func peakRSSKiB(_ pid: pid_t) throws -> Int {
        let status = String(decoding: try Descriptor.readFile("/proc/\(pid)/status"), as: UTF8.self)
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }

    @Test("a 1 GiB file transfers both ways with bounded agent memory")
    func gigabyte() async throws {
        try await AgentHarness.with { agent in
            let local = agent.workdir + "-sparse.bin"
            let back = agent.workdir + "-sparse-back.bin"
            defer {
                unlink(local)
                unlink(back)
            }
            let fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            ftruncate(fd, 1 << 30)
            close(fd)
            let before = try peakRSSKiB(agent.pid)
            #expect(try await agent.client.upload(localPath: local, to: agent.workdir + "/big.bin") == 1 << 30)
            #expect(try await agent.client.download(agent.workdir + "/big.bin", to: back) == 1 << 30)
            let after = try peakRSSKiB(agent.pid)
            // A few 1 MiB chunks in flight, not the file.
            #expect(after - before < 32 * 1024, "agent peak RSS grew by \(after - before) KiB")
        }
    }
}
