import Glibc
import SproutAgentProtocol
import SproutAgentClient
import SproutCore
import SproutSystem
import Testing

@Suite("agent protocol and auth")
struct ProtocolTests {
    @Test("health reports the protocol and agent version")
    func health() async throws {
        try await AgentHarness.with { agent in
            let health = try await agent.client.health()
            #expect(health.protocolVersion == AgentProtocol.version)
            #expect(health.agentVersion == AgentProtocol.agentVersion)
            #expect(health.pid == agent.pid)
        }
    }

    @Test("a wrong or missing token is refused")
    func wrongToken() async throws {
        try await AgentHarness.with { agent in
            var wrong = agent.client.endpoint
            wrong.token = "not-the-token-at-all"
            await #expect(throws: SproutError(.unauthorized, "invalid agent token")) {
                try await AgentClient(endpoint: wrong).run(ProcessSpec(cmd: ["true"]))
            }
            let (channel, reply) = try agentConnect(agent, .health, token: "")
            channel.close()
            #expect(reply.error?.code == "unauthorized")
        }
    }

    @Test("another protocol version is refused with a clear error")
    func protocolMismatch() async throws {
        try await AgentHarness.with { agent in
            let (channel, reply) = try agentConnect(agent, .health, version: 99)
            channel.close()
            #expect(reply.error == ErrorBody(code: "protocol_mismatch", message: "client speaks agent protocol 99, this agent speaks 1"))
        }
    }

    @Test("garbage, malformed JSON and oversized frames get errors; the agent keeps serving")
    func garbage() async throws {
        try await AgentHarness.with { agent in
            // Binary garbage: an unknown frame kind.
            let raw = try Socket.connectTCP(host: "127.0.0.1", port: agent.port)
            try Descriptor.writeAll(raw, [0, 0, 0, 3, 0xEE, 1, 2, 3])
            let garbageReply = try FrameChannel(fd: raw).receiveMessage(Reply.self)
            #expect(garbageReply.error?.code == "malformed")

            // A frame header announcing 1 GiB.
            let big = try Socket.connectTCP(host: "127.0.0.1", port: agent.port)
            try Descriptor.writeAll(big, [0x40, 0, 0, 0, 1])
            let bigReply = try FrameChannel(fd: big).receiveMessage(Reply.self)
            #expect(bigReply.error?.code == "too_large")

            // Valid framing, invalid JSON, and an unknown op.
            let bad = FrameChannel(fd: try Socket.connectTCP(host: "127.0.0.1", port: agent.port))
            try bad.send(.message, Array("{not json".utf8))
            #expect(try bad.receiveMessage(Reply.self).error?.code == "malformed")
            let unknown = FrameChannel(fd: try Socket.connectTCP(host: "127.0.0.1", port: agent.port))
            try unknown.send(.message, Array(#"{"protocolVersion":1,"token":"x","request":{"op":"format.disk"}}"#.utf8))
            let unknownReply = try unknown.receiveMessage(Reply.self)
            #expect(unknownReply.error?.code == "malformed")
            #expect(unknownReply.error?.message.contains("unknown op 'format.disk'") == true)

            #expect(try await agent.client.run(ProcessSpec(cmd: ["true"])).exit == ProcessExit(code: 0))
        }
    }

    @Test("setting the clock to now succeeds (root) or is refused clearly")
    func clock() async throws {
        try await AgentHarness.with { agent in
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            let now = Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
            if geteuid() == 0 {
                try await agent.client.setClock(unixNanos: now)
            } else {
                await #expect(throws: SproutError.self) { try await agent.client.setClock(unixNanos: now) }
            }
            await #expect(throws: SproutError(.invalidArgument, "time must be after 1970")) {
                try await agent.client.setClock(unixNanos: -5)
            }
        }
    }

    @Test("a channel never reads a descriptor number after close: a late read cannot steal another connection's bytes")
    func noReadAfterClose() throws {
        // The race a fresh-clone run hit: a process session's reader thread
        // started after the session was closed, and its first read took the
        // reply of the next connection, which had been given the same number.
        func pair() throws -> (Int32, Int32) {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else { throw SproutError.system("socketpair") }
            return (fds[0], fds[1])
        }
        var reused = 0
        for _ in 0..<50 {
            let (mine, peer) = try pair()
            let stale = FrameChannel(fd: mine)
            stale.close()
            Glibc.close(peer)
            let (next, nextPeer) = try pair()
            defer { Glibc.close(next) }
            let other = FrameChannel(fd: nextPeer)  // closes nextPeer
            let reply = ["reply": "for the next connection"]
            try other.send(message: reply)
            if next == mine { reused += 1 }
            // Closed: an error, whatever the number now holds, and the bytes stay where they belong.
            #expect(throws: SproutError.self) { _ = try stale.receive() }
            #expect(throws: SproutError.self) { try stale.send(message: ["x": "y"]) }
            let expected = try WireJSON.encode(reply)
            var bytes = [UInt8](repeating: 0, count: Frame.headerSize + expected.count)
            // Not blocking: stolen bytes would otherwise leave this read waiting forever.
            #expect(bytes.withUnsafeMutableBytes { recv(next, $0.baseAddress!, $0.count, Int32(MSG_DONTWAIT)) } == bytes.count)
            #expect(Array(bytes[Frame.headerSize...]) == expected)
        }
        // The numbers were reused (the lowest free one is taken), so the late reads met another connection.
        #expect(reused > 0)
    }
}
