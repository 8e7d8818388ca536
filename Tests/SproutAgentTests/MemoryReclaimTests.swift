import Foundation
import Glibc
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutSystem
import Testing

/// The agent ends the biggest process when the server says its sandbox
/// reached the memory limit. Run in a PID namespace of its own (root: the
/// CI runs as root), so the agent sees only its own processes, as in a sandbox.
@Suite("agent memory reclaim", .enabled(if: getuid() == 0))
struct MemoryReclaimTests {
    @Test("killLargest ends the process holding the most memory, and only it; the agent keeps serving")
    func killsLargest() async throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "sprout-reclaim")
        defer { try? FileSystem.removeTree(dir) }
        guard let binary = LocalAgent.binaryBesideExecutable() else { throw SproutError(.notFound, "sprout-agent is not built") }
        let agent = try LocalAgent(binary: binary, workdir: dir, launcher: ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
        defer { agent.stop() }
        let client = agent.client
        // A small process and a big one (python holds 64 MiB).
        _ = try await client.start(ProcessSpec(cmd: ["sleep", "300"]))
        let big = try await client.start(ProcessSpec(cmd: ["python3", "-c", "import time; b = bytearray(64 << 20); time.sleep(300)"]))
        try await Task.sleep(for: .milliseconds(500))
        let victim = try #require(try await client.killLargest())
        #expect(victim.command.hasPrefix("python3"), "\(victim)")
        #expect(victim.rssBytes > 60 << 20)
        var processes = try await client.processes()
        for _ in 0..<50 where processes.first(where: { $0.id == big.info.id })?.exit == nil {
            try await Task.sleep(for: .milliseconds(100))
            processes = try await client.processes()
        }
        #expect(processes.first { $0.id == big.info.id }?.exit?.signal == SIGKILL)
        #expect(processes.filter { $0.exit == nil }.map { $0.cmd.first ?? "" } == ["sleep"], "the other process lives on")
        #expect(try await client.run(ProcessSpec(cmd: ["echo", "served"])).stdoutText == "served\n")
    }
}
