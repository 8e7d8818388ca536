import Glibc
import SproutAgentProtocol
import SproutAgentClient
import SproutCore
import Testing

@Suite("agent terminals")
struct TerminalTests {
    /// Reads terminal output until it contains `needle` (or fails after 10 s).
    func readUntil(_ iterator: inout ProcessSession.AsyncIterator, _ needle: String) async throws -> String {
        var seen = ""
        let deadline = ContinuousClock.now + .seconds(10)
        while !seen.contains(needle) {
            guard ContinuousClock.now < deadline, let item = try await iterator.next() else { break }
            if case .stdout(let bytes) = item { seen += String(decoding: bytes, as: UTF8.self) }
        }
        return seen
    }

    @Test("stty size reports the requested size, then the new one after a resize")
    func sizeAndResize() async throws {
        try await AgentHarness.with { agent in
            let session = try await agent.client.start(ProcessSpec(cmd: ["/bin/sh"], pty: TerminalSize(cols: 80, rows: 24)))
            var output = session.makeAsyncIterator()
            try session.write("stty size\n")
            #expect(try await readUntil(&output, "24 80").contains("24 80"))
            try session.resize(cols: 132, rows: 50)
            try session.write("stty size\n")
            #expect(try await readUntil(&output, "50 132").contains("50 132"))
            try session.write("tty; exit 7\n")
            var exit: ProcessExit?
            var text = ""
            while let item = try await output.next() {
                if case .stdout(let b) = item { text += String(decoding: b, as: UTF8.self) }
                if case .exit(let status) = item { exit = status }
            }
            #expect(text.contains("/dev/pts/"))
            #expect(exit == ProcessExit(code: 7))
        }
    }
}
