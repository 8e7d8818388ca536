import Glibc
import SproutAgentProtocol
import SproutAgentClient
import SproutCore
import Testing

@Suite("agent processes")
struct ProcessTests {
    @Test("10,000 lines on both streams arrive in order, exit code 3")
    func manyLines() async throws {
        try await AgentHarness.with { agent in
            let script = """
                i=0; while [ $i -lt 10000 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done; exit 3
                """
            let result = try await agent.client.run(ProcessSpec(shell: script))
            #expect(result.exit == ProcessExit(code: 3))
            let out = result.stdoutText.split(separator: "\n")
            let err = result.stderrText.split(separator: "\n")
            #expect(out.count == 10_000)
            #expect(err.count == 10_000)
            #expect(out == (0..<10_000).map { "out \($0)"[...] })
            #expect(err == (0..<10_000).map { "err \($0)"[...] })
        }
    }

    @Test("stdin is echoed by cat; closing stdin ends it")
    func stdinEcho() async throws {
        try await AgentHarness.with { agent in
            let session = try await agent.client.start(ProcessSpec(cmd: ["cat"], stdin: true))
            try session.write("hello\n")
            try session.write(Array("binary \u{0}\u{1}\u{ff}\n".utf8))
            try session.closeStdin()
            let result = try await session.collect()
            #expect(result.exit == ProcessExit(code: 0))
            #expect(result.stdout == Array("hello\nbinary \u{0}\u{1}\u{ff}\n".utf8))
        }
    }

    @Test("input to a process that stopped reading is dropped, as by a pipe; input after the end of input is an error")
    func inputAfterReaderLeft() async throws {
        try await AgentHarness.with { agent in
            // The process closes its input, says so, and keeps running: what is sent then has no reader.
            // It lives until told (a signal after the write), not for a time a busy machine may outlast.
            let reader = try await agent.client.start(ProcessSpec(cmd: ["sh", "-c", "exec 0<&-; echo closed; exec sleep 600"], stdin: true))
            var errors: [ErrorBody] = []
            var exit: ProcessExit?
            for try await item in reader {
                switch item {
                case .stdout(let bytes) where String(decoding: bytes, as: UTF8.self).contains("closed"):
                    try reader.write(Array(repeating: UInt8(ascii: "b"), count: 1 << 17))
                    try reader.signal(SIGTERM)
                case .exit(let status): exit = status
                case .error(let error): errors.append(error)
                default: break
                }
            }
            #expect(exit == ProcessExit(signal: SIGTERM), "it ran until the signal after the write")
            #expect(errors.isEmpty, "\(errors)")

            // Positive control: the same probe reports input after the client's own end.
            let cat = try await agent.client.start(ProcessSpec(cmd: ["sh", "-c", "cat; sleep 1"], stdin: true))
            try cat.closeStdin()
            try cat.write("late")
            var reported: [ErrorBody] = []
            for try await item in cat { if case .error(let error) = item { reported.append(error) } }
            #expect(reported.contains { $0.message.contains("no open standard input") }, "\(reported)")
        }
    }

    @Test("iterating a session nobody else holds keeps it open until the exit")
    func iterationKeepsSessionOpen() async throws {
        try await AgentHarness.with { agent in
            var out: [UInt8] = []
            var exit: ProcessExit?
            for try await item in try await agent.client.start(ProcessSpec(cmd: ["sh", "-c", "sleep 0.3; echo late"])) {
                if case .stdout(let bytes) = item { out += bytes }
                if case .exit(let status) = item { exit = status }
            }
            #expect(out == Array("late\n".utf8))
            #expect(exit == ProcessExit(code: 0))
        }
    }

    @Test("SIGTERM ends a sleep with signal 15")
    func sigterm() async throws {
        try await AgentHarness.with { agent in
            let session = try await agent.client.start(ProcessSpec(cmd: ["sleep", "60"], tag: "sleeper"))
            let listed = try await agent.client.processes()
            #expect(listed.contains { $0.id == session.info.id && $0.tag == "sleeper" && $0.exit == nil })
            try await agent.client.signal(ProcessSelector(tag: "sleeper"), SIGTERM)
            let result = try await session.collect()
            #expect(result.exit == ProcessExit(signal: SIGTERM))
        }
    }

    @Test("a client that disconnects leaves the process running; reattach by tag receives later output")
    func reattach() async throws {
        try await AgentHarness.with { agent in
            let first = try await agent.client.start(ProcessSpec(cmd: ["cat"], tag: "echo", stdin: true))
            first.close()
            try await Task.sleep(for: .milliseconds(50))
            let running = try await agent.client.processes().first { $0.id == first.info.id }
            #expect(running?.exit == nil)
            let second = try await agent.client.attach(ProcessSelector(tag: "echo"))
            #expect(second.info.id == first.info.id)
            try second.write("again\n")
            try second.closeStdin()
            let result = try await second.collect()
            #expect(result.stdoutText == "again\n")
            #expect(result.exit == ProcessExit(code: 0))
            // Attaching after the end still reports how it ended.
            let late = try await agent.client.attach(ProcessSelector(id: first.info.id))
            #expect(try await late.collect().exit == ProcessExit(code: 0))
        }
    }

    @Test("cwd and env reach the process")
    func cwdAndEnv() async throws {
        try await AgentHarness.with { agent in
            let result = try await agent.client.run(ProcessSpec(shell: "pwd; echo $GREETING", cwd: "/tmp", env: ["GREETING": "hi there"]))
            #expect(result.stdoutText == "/tmp\nhi there\n")
        }
    }

    @Test("bad process requests get clear errors and the agent keeps serving")
    func badRequests() async throws {
        try await AgentHarness.with { agent in
            await #expect(throws: SproutError(.notFound, "no process with id 'p999'")) {
                try await agent.client.attach(ProcessSelector(id: "p999"))
            }
            await #expect(throws: SproutError(.notFound, "executable not found: no-such-program")) {
                try await agent.client.start(ProcessSpec(cmd: ["no-such-program"]))
            }
            await #expect(throws: SproutError(.invalidArgument, "give exactly one of cmd and shell")) {
                try await agent.client.start(ProcessSpec(cmd: ["true"], shell: "true"))
            }
            await #expect(throws: SproutError(.notFound, "working directory /nonexistent does not exist")) {
                try await agent.client.start(ProcessSpec(cmd: ["true"], cwd: "/nonexistent"))
            }
            let result = try await agent.client.run(ProcessSpec(cmd: ["true"]))
            #expect(result.exit == ProcessExit(code: 0))
        }
    }
}
