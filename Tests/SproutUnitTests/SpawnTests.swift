import Glibc
import SproutCore
import SproutSystem
import Testing

/// `Text file busy` (ETXTBSY) when starting a program this process has just
/// written: while one thread writes an executable, another thread's spawn
/// forks a child that holds a copy of the writing descriptor until it
/// execs. One agent test failed so in a full run. `Spawn` and writes of
/// executable files exclude each other, so a spawned child never holds one.
@Suite("Unit: spawning")
struct SpawnTests {
    @Test("a program written by this process starts every time, while other threads spawn beside it")
    func noTextFileBusy() async throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "sprout-spawn")
        defer { try? FileSystem.removeTree(dir) }
        let stop = Locked(false)
        let spawned = Locked(0)
        let finished = Locked(0)
        // Spawners on threads of their own: children forked again and again, as a busy server's are.
        for _ in 0..<2 {
            startThread {
                while !stop.current {
                    guard let pid = try? Spawn.spawn(path: "/bin/true", argv: ["true"], env: [], options: Spawn.Options()) else { continue }
                    var status: Int32 = 0
                    waitpid(pid, &status, 0)
                    spawned.withLock { $0 += 1 }
                }
                finished.withLock { $0 += 1 }
            }
        }
        // Begin once they are spawning.
        while spawned.current < 2 { usleep(1000) }
        var busy = 0
        for i in 0..<300 {
            let path = "\(dir)/program-\(i)"
            try FileSystem.writeAtomically(path, "#!/bin/sh\nexit 0\n", mode: 0o755)
            do {
                let pid = try Spawn.spawn(path: path, argv: ["program"], env: [], options: Spawn.Options())
                var status: Int32 = 0
                waitpid(pid, &status, 0)
            } catch let error as SproutError where error.message.contains("Text file busy") {
                busy += 1
            }
        }
        let during = spawned.current
        stop.withLock { $0 = true }
        while finished.current < 2 { usleep(1000) }
        #expect(during > 2 + 30, "positive control: the other threads spawned beside the writes (\(during))")
        #expect(busy == 0, "\(busy) of 300 starts failed with ETXTBSY")
    }
}
