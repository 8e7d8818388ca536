import Glibc
import SproutCore
import SproutSystem

/// A sandbox's cgroup v1 groups (`/sys/fs/cgroup/<controller>/sprout/<id>`,
/// made by the runtime from the OCI spec's `cgroupsPath`).
public enum Cgroups {
    static let root = "/sys/fs/cgroup"

    static func path(_ controller: String, _ id: String) -> String { "\(root)/\(controller)/sprout/\(id)" }

    /// Sandbox `id`'s memory cgroup.
    public static func memoryPath(_ id: String) -> String { path("memory", id) }

    static func read(_ path: String) -> String? {
        (try? Descriptor.readFile(path, limit: 1 << 16)).map { String(decoding: $0, as: UTF8.self) }
    }

    static func number(_ path: String) -> Int64? { read(path).flatMap { Int64($0.trimmed) } }

    /// `key value` lines of a stat file.
    static func fields(_ text: String) -> [Substring: Int64] {
        var out: [Substring: Int64] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = Int64(parts[1]) { out[parts[0]] = value }
        }
        return out
    }

    public static func usage(_ id: String) -> ResourceUsage? {
        let memory = path("memory", id)
        guard let bytes = number(memory + "/memory.usage_in_bytes") else { return nil }
        let stat = read(memory + "/memory.stat").map(fields) ?? [:]
        let inactiveFile = stat["total_inactive_file"] ?? 0
        let oom = read(memory + "/memory.oom_control").map(fields)?["oom_kill"] ?? 0
        let cpu = number(path("cpuacct", id) + "/cpuacct.usage") ?? 0
        return ResourceUsage(
            memoryBytes: bytes, workingSetBytes: max(0, bytes - inactiveFile), cpuNanoseconds: UInt64(max(0, cpu)), oomKills: Int(oom),
            cacheBytes: stat["total_cache"] ?? 0)
    }

    public static func setMemoryLimit(_ id: String, bytes: Int64) throws {
        let file = path("memory", id) + "/memory.limit_in_bytes"
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system("open \(file)") }
        defer { close(fd) }
        try Descriptor.writeAll(fd, Array("\(bytes)\n".utf8))
    }

    /// The runtime removes a container's cgroups on delete, but not those of
    /// a container whose start failed half way; remove whatever is left.
    public static func remove(_ id: String) async {
        let controllers = (try? FileSystem.children(root)) ?? []
        for attempt in 0..<20 {
            let left = controllers.map { path($0, id) }.filter { FileSystem.exists($0) }
            if left.isEmpty { return }
            for dir in left { rmdir(dir) }
            if attempt > 0 { try? await Task.sleep(for: .milliseconds(50)) }
        }
    }
}

/// Host processes that stand for a container: is it still the same process?
public enum ProcessWatch {
    /// `pid` with its start time, if it exists.
    public static func identify(_ pid: Int32) -> ContainerProcess? {
        guard let stat = stat(pid), stat.state != "Z" else { return nil }
        return ContainerProcess(pid: pid, startTime: stat.startTime)
    }

    /// True while the process exists, is not a zombie, and is the one that was identified (not a reused pid).
    public static func isAlive(_ process: ContainerProcess) -> Bool {
        guard let stat = stat(process.pid) else { return false }
        return stat.state != "Z" && stat.startTime == process.startTime
    }

    /// State and start time from /proc/PID/stat (the fields after the command, which may hold spaces).
    static func stat(_ pid: Int32) -> (state: Character, startTime: UInt64)? {
        guard let bytes = try? Descriptor.readFile("/proc/\(pid)/stat", limit: 4096) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        guard let close = text.lastIndex(of: ")") else { return nil }
        let rest = text[text.index(after: close)...].split(separator: " ")
        // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
        guard rest.count > 19, let state = rest[0].first, let start = UInt64(rest[19]) else { return nil }
        return (state, start)
    }
}
