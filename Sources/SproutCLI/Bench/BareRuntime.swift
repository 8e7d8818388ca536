import Foundation
import Glibc
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig
import SproutBlocking

/// The baseline: the runtime binary alone, on the same root file system,
/// with no Sprout in the way (no network namespace set-up, no overlay, no agent).
struct BareRuntime: Sendable {
    let kind: RuntimeKind
    let directory: String
    /// gVisor's platform: the same as the measured server's.
    var platform: GVisorPlatform = .ptrace

    var stateRoot: String { directory + "/state-\(kind.rawValue)" }

    func bundleDirectory(_ id: String, rootfs: String, args: [String]) throws -> String {
        let dir = "\(directory)/\(id)"
        try FileSystem.makeDirectories(dir)
        let config: [String: Any] = [
            "ociVersion": "1.0.2",
            "process": ["terminal": false, "user": ["uid": 0, "gid": 0], "args": args, "env": ["PATH=/bin:/usr/bin"], "cwd": "/",
                        "capabilities": ["bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]],
                        "noNewPrivileges": true],
            "root": ["path": rootfs, "readonly": true],
            "hostname": id,
            "mounts": [["destination": "/proc", "type": "proc", "source": "proc"],
                       ["destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]]],
            "linux": ["namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"], ["type": "network"]]],
        ]
        let data = try JSONSerialization.data(withJSONObject: config)
        try FileSystem.writeAtomically(dir + "/config.json", Array(data))
        return dir
    }

    var base: [String] {
        kind == .gvisor ? ["runsc", "--root", stateRoot, "--network=none", "--overlay2=none", "--platform=\(platform.rawValue)"] : ["runc", "--root", stateRoot]
    }

    /// `run` of `echo` until its marker line arrives; returns seconds.
    func runUntilMarker(rootfs: String) async throws -> Double {
        let id = "bench-\(Identifiers.random(length: 10))"
        let dir = try bundleDirectory(id, rootfs: rootfs, args: ["/bin/echo", "sprout-bench-ready"])
        do {
            let seconds = try await onThread { [self] in try runBlocking(id: id, dir: dir) }
            await remove(id)
            return seconds
        } catch {
            await remove(id)
            throw error
        }
    }

    /// Starts the container and reads its stdout until the marker: on a thread of its own.
    private func runBlocking(id: String, dir: String) throws -> Double {
        let out = try Spawn.pipe()
        var options = Spawn.Options()
        options.stdout = out.write
        let started = monotonicSeconds()
        guard let path = Spawn.resolveExecutable(base[0], searchPath: "/usr/sbin:/usr/bin:/sbin:/bin") else {
            throw SproutError(.unavailable, "\(base[0]) is not installed")
        }
        let pid = try Spawn.spawn(path: path, argv: base + ["run", "--bundle", dir, id], env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], options: options)
        close(out.write)
        defer {
            close(out.read)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(out.read, &byte, 1) == 1 {
            if byte == 10 {
                if line == Array("sprout-bench-ready".utf8) { return monotonicSeconds() - started }
                line = []
            } else {
                line.append(byte)
            }
        }
        throw SproutError(.internal, "bare \(kind.binary) run exited without printing its marker")
    }

    /// Starts an idle container (`sleep`), for memory baselines. Returns its
    /// id and the host pid of its first process.
    func startIdle(rootfs: String) async throws -> (id: String, pid: Int32) {
        let id = "bench-idle-\(Identifiers.random(length: 8))"
        let dir = try bundleDirectory(id, rootfs: rootfs, args: ["/bin/sleep", "1000"])
        try await HostCommand.runDetached(base + ["run", "--detach", "--bundle", dir, id])
        let state = try await HostCommand.run(base + ["state", id])
        let object = try JSONSerialization.jsonObject(with: Data(state.utf8)) as? [String: Any]
        return (id, Int32(object?["pid"] as? Int ?? 0))
    }

    func remove(_ id: String) async {
        _ = try? await HostCommand.capture(base + ["delete", "--force", id])
        try? FileSystem.removeTree("\(directory)/\(id)")
    }

    func cleanUp() async {
        for id in (try? await HostCommand.capture(base + ["list", "--quiet"]))?.stdout.split(separator: "\n") ?? [] {
            await remove(String(id))
        }
        try? FileSystem.removeTree(stateRoot)
    }
}

/// Host memory of a sandbox's processes.
enum HostMemory {
    /// Sum of PSS (KiB) of every process whose command line mentions `id`,
    /// and all their descendants (gVisor's sentry, gofer and ptrace stubs;
    /// runc's container processes are found by cgroup instead).
    static func pssKiB(containerID id: String, alsoPID extra: Int32? = nil) -> Int {
        var parent: [Int32: Int32] = [:]
        var roots: Set<Int32> = []
        for name in (try? FileSystem.children("/proc")) ?? [] {
            guard let pid = Int32(name) else { continue }
            if let stat = try? Descriptor.readFile("/proc/\(pid)/stat", limit: 4096) {
                let text = String(decoding: stat, as: UTF8.self)
                if let close = text.lastIndex(of: ")") {
                    let fields = text[text.index(after: close)...].split(separator: " ")
                    if fields.count > 1, let ppid = Int32(fields[1]) { parent[pid] = ppid }
                }
            }
            if let cmd = try? Descriptor.readFile("/proc/\(pid)/cmdline", limit: 65536),
                String(decoding: cmd, as: UTF8.self).contains(id)
            {
                roots.insert(pid)
            }
        }
        for controller in ["memory", "pids"] {
            if let procs = try? Descriptor.readFile("/sys/fs/cgroup/\(controller)/sprout/\(id)/cgroup.procs", limit: 1 << 20) {
                for line in String(decoding: procs, as: UTF8.self).split(separator: "\n") { if let p = Int32(line) { roots.insert(p) } }
            }
        }
        if let extra, extra > 0 { roots.insert(extra) }
        var members = roots
        var changed = true
        while changed {
            changed = false
            for (pid, ppid) in parent where !members.contains(pid) && members.contains(ppid) {
                members.insert(pid)
                changed = true
            }
        }
        var total = 0
        for pid in members {
            guard let rollup = try? Descriptor.readFile("/proc/\(pid)/smaps_rollup", limit: 65536) else { continue }
            for line in String(decoding: rollup, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Pss:") {
                total += Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
        }
        return total
    }
}

/// Disk usage of the layer store.
enum LayerStoreSize {
    static func bytes(_ path: String) async -> Int64 {
        guard FileSystem.exists(path) else { return 0 }
        return await LayerStore.diskUsage(path)
    }
}

extension BareRuntime {
    /// A bare container running a shell loop, checkpointed once: the image
    /// a `runsc restore` baseline restores again and again.
    func checkpointedLoop(rootfs: String) async throws -> (bundle: String, image: String) {
        let id = "bench-ckpt-\(Identifiers.random(length: 8))"
        let dir = try bundleDirectory(id, rootfs: rootfs, args: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); sleep 0.1; done"])
        try await HostCommand.runDetached(base + ["run", "--detach", "--bundle", dir, id])
        try await Task.sleep(for: .milliseconds(300))
        let image = dir + "/image"
        try FileSystem.makeDirectories(image)
        // As Sprout takes its checkpoints: uncompressed.
        try await HostCommand.run(base + ["checkpoint", "--compression", "none", "--image-path", image, id])
        _ = try? await HostCommand.capture(base + ["delete", "--force", id])
        return (dir, image)
    }

    /// A bare container running the shell loop, left running: checkpointed
    /// and restored like the sandbox it stands beside, and
    /// frozen while that sandbox is paused (`freeze`, `thaw`), so the two
    /// run alike. That matters under gVisor 20240729, where every process
    /// that looks at /proc/self (busybox's `sleep` does) leaves its procfs
    /// inodes behind for good: the kernel state a restore reads grows with
    /// the time the loop has run, about 80 KB per `sleep`.
    func runningLoop(rootfs: String) async throws -> (id: String, bundle: String) {
        let id = "bench-loop-\(Identifiers.random(length: 8))"
        let dir = try bundleDirectory(id, rootfs: rootfs, args: ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); sleep 0.1; done"])
        try await HostCommand.runDetached(base + ["run", "--detach", "--bundle", dir, id])
        return (id, dir)
    }

    /// Checkpoints the running loop (it stops).
    func checkpointLoop(id: String, bundle: String) async throws {
        let image = bundle + "/image-cycle"
        try? FileSystem.removeTree(image)
        try FileSystem.makeDirectories(image)
        try await HostCommand.run(base + ["checkpoint", "--compression", "none", "--image-path", image, id])
        _ = try? await HostCommand.capture(base + ["delete", "--force", id])
    }

    /// `runsc restore --detach` of the loop's last checkpoint under the same
    /// id until it returns (running); seconds.
    func restoreLoop(id: String, bundle: String) async throws -> Double {
        let started = monotonicSeconds()
        try await HostCommand.runDetached(base + ["restore", "--detach", "--bundle", bundle, "--image-path", bundle + "/image-cycle", id])
        return monotonicSeconds() - started
    }

    /// Stops the loop's processes where they are (`runsc pause`).
    func freeze(_ id: String) async throws { try await HostCommand.run(base + ["pause", id]) }

    /// Lets them go on (`runsc resume`).
    func thaw(_ id: String) async throws { try await HostCommand.run(base + ["resume", id]) }

    /// Bytes of kernel state in the loop's last checkpoint.
    func lastCheckpointBytes(bundle: String) -> Int64? {
        var st = stat()
        return stat(bundle + "/image-cycle/checkpoint.img", &st) == 0 ? Int64(st.st_size) : nil
    }

    /// `runsc restore --detach` of that image until it returns (running); seconds.
    func restoreOnce(bundle: String, image: String) async throws -> Double {
        let id = "bench-restore-\(Identifiers.random(length: 8))"
        let started = monotonicSeconds()
        try await HostCommand.runDetached(base + ["restore", "--detach", "--bundle", bundle, "--image-path", image, id])
        let seconds = monotonicSeconds() - started
        _ = try? await HostCommand.capture(base + ["delete", "--force", id])
        return seconds
    }
}
