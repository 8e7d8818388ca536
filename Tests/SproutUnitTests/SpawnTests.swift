import Glibc
import SproutCore
import SproutRuntime
@testable import SproutSystem
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

    @Test("a child inherits only 0, 1 and 2, also where descriptors are closed one by one (gVisor refuses glibc's close_range)")
    func onlyStandardDescriptorsCross() async throws {
        #expect(Spawn.closeRangeWorks, "Linux takes close_range(fd, ~0U, 0)")
        var open: [Int32] = [0, 0]
        try sysCall("pipe") { pipe(&open) }  // no O_CLOEXEC: a child would keep these
        defer { open.forEach { close($0) } }
        let marked = try Spawn.pipe()  // O_CLOEXEC: gone at exec anyway
        defer { close(marked.read); close(marked.write) }
        let listed = Spawn.inheritableDescriptors()
        #expect(listed.contains(open[0]) && listed.contains(open[1]), "\(listed) lists the pipe without O_CLOEXEC")
        #expect(!listed.contains(marked.read) && !listed.contains(marked.write))
        for byList in [false, true] {
            var options = Spawn.Options()
            options.closeDescriptorsByList = byList
            let (pid, output) = try Spawn.withOutputPipe(options) { options in
                try Spawn.spawn(path: "/bin/ls", argv: ["ls", "/proc/self/fd"], env: [], options: options)
            }
            let text = String(decoding: try Descriptor.readAll(output, limit: 1 << 16, what: "ls"), as: UTF8.self)
            close(output)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
            let fds = Set(text.split(separator: "\n").compactMap { Int32($0) })
            // ls's own directory descriptor is the only one above 2.
            #expect(fds.filter { $0 > 2 }.count == 1, "by list: \(byList); the child had \(fds.sorted())")
            #expect(!fds.contains(open[0]) && !fds.contains(open[1]))
        }
    }

    @Test("a program started in a mount namespace after an overlay mount sees the mount, which the host does not; a failed mount names its step")
    func inMountNamespace() async throws {
        let dir = try FileSystem.makeTemporaryDirectory(prefix: "sprout-spawn-ns")
        defer { try? FileSystem.removeTree(dir) }
        for sub in ["lower", "upper", "work", "root"] { try FileSystem.makeDirectories("\(dir)/\(sub)") }
        try FileSystem.writeAtomically("\(dir)/lower/file", "from the lower layer\n")
        let namespace = try MountNamespace()
        defer { namespace.close() }  // its mounts go with it
        let overlay = Spawn.OverlayMount(options: "lowerdir=\(dir)/lower,upperdir=\(dir)/upper,workdir=\(dir)/work", mountPoint: "\(dir)/root")
        let (pid, output) = try Spawn.withOutputPipe { options in
            try Spawn.spawnInMountNamespace(namespace.path, overlay: overlay, path: "/bin/sh",
                                            argv: ["sh", "-c", "cat \"$0\"/file; ls /proc/self/fd", overlay.mountPoint], env: [],
                                            stdout: options.stdout, stderr: nil)
        }
        let text = String(decoding: try Descriptor.readAll(output, limit: 1 << 16, what: "sh"), as: UTF8.self)
        close(output)
        #expect(Spawn.waitForExit(pid, timeout: 60).map { decodeWaitStatus($0).code } == 0)
        let lines = text.split(separator: "\n")
        #expect(lines.first == "from the lower layer", "\(text)")
        // 0, 1, 2 and ls's own directory descriptor.
        #expect(lines.dropFirst().compactMap { Int32($0) }.filter { $0 > 2 }.count == 1, "\(text)")
        #expect(try FileSystem.children("\(dir)/root").isEmpty, "the mount is the namespace's only")

        let missing = Spawn.OverlayMount(options: "lowerdir=\(dir)/nope,upperdir=\(dir)/upper,workdir=\(dir)/work", mountPoint: "\(dir)/root")
        #expect(throws: SproutError.system("cannot mount the overlay at \(dir)/root", errno: ENOENT)) {
            try Spawn.spawnInMountNamespace(namespace.path, overlay: missing, path: "/bin/true", argv: ["true"], env: [], stdout: nil, stderr: nil)
        }
        #expect(throws: SproutError.system("cannot start /nope", errno: ENOENT)) {
            try Spawn.spawnInMountNamespace(namespace.path, overlay: nil, path: "/nope", argv: ["/nope"], env: [], stdout: nil, stderr: nil)
        }
    }

    @Test("a loopback port's listener is found among the processes that hold it, and only there")
    func loopbackListenerOwner() throws {
        let (fd, port) = try Socket.listenTCP(host: "127.0.0.1", port: 0)
        #expect(Socket.loopbackListener(port: port, isHeldByOneOf: [getpid()]), "this process listens on \(port)")
        #expect(!Socket.loopbackListener(port: port, isHeldByOneOf: [getppid()]), "its parent does not")
        close(fd)
        #expect(!Socket.loopbackListener(port: port, isHeldByOneOf: [getpid()]), "nobody listens once it is closed")
    }
}

