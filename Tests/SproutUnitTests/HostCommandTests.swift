import SproutCore
import SproutHost
import SproutSystem
import Testing

@Suite("Unit: host commands")
struct HostCommandTests {
    @Test("the child gets exactly the environment given, byte for byte")
    func environment() async throws {
        let given = ["A=1", "PATH=/usr/bin:/bin", "HOME=/tmp", "SPROUT_API_KEY=sk_abc"]
        let out = try await HostCommand.capture(["/usr/bin/env"], environment: given)
        #expect(out.status == 0)
        #expect(out.stdout.split(separator: "\n").map(String.init).sorted() == given.sorted())
        let minimal = try await HostCommand.capture(["/usr/bin/env"])
        #expect(minimal.stdout.split(separator: "\n").map(String.init).sorted() == HostCommand.environment.sorted())
    }

    @Test("status, stdout, stderr and stdin; a missing program is a clear error")
    func basics() async throws {
        let out = try await HostCommand.capture(["sh", "-c", "cat; echo err >&2; exit 3"], input: "in\n")
        #expect(out.status == 3)
        #expect(out.stdout == "in\n")
        #expect(out.stderr == "err\n")
        await #expect(throws: SproutError(.internal, "sh -c echo no >&2; exit 4 failed (exit 4): no")) {
            try await HostCommand.run(["sh", "-c", "echo no >&2; exit 4"])
        }
        await #expect(throws: SproutError(.unavailable, "sprout-no-such-tool is not installed")) {
            try await HostCommand.run(["sprout-no-such-tool"])
        }
    }

    @Test("a command past its deadline is ended and reported as a timeout")
    func deadline() async throws {
        let started = monotonicSeconds()
        await #expect(throws: SproutError(.timeout, "sleep 30 did not finish within 1 s")) {
            try await HostCommand.run(["sleep", "30"], timeout: .seconds(1))
        }
        // Ended, not left to sleep its 30 s (a bound far from 1 s: a busy machine may be slow to reap).
        #expect(monotonicSeconds() - started < 25)
    }
}

extension HostCommandTests {
    /// swift-subprocess 1.0's string input has a writer whose descriptor must
    /// be closed before it is released; a cancellation that lands before the
    /// write ended it unclosed, and its deinit stopped the whole server (a
    /// build cancelled while its sandbox's network was being set up).
    @Test("a command given input and cancelled, before or while it runs, ends without harm")
    func cancelledWithInput() async throws {
        ignoreSIGPIPE()  // as the server does: a child that ends unread is EPIPE, not the end of us
        for _ in 0..<20 {
            let before = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await HostCommand.capture(["cat"], input: "x\n")
            }
            _ = try? await before.value
            let during = Task { try await HostCommand.capture(["sh", "-c", "sleep 30; cat"], input: "x\n") }
            await Task.yield()
            during.cancel()
            _ = try? await during.value
        }
        let out = try await HostCommand.capture(["cat"], input: "still works\n")
        #expect(out.stdout == "still works\n")
    }
}
