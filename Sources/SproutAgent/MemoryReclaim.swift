import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// What the agent does when the server says the sandbox reached its memory
/// limit: end the one process holding the most memory, so that only it
/// dies (not the sandbox, not the agent, not the other processes).
enum MemoryReclaim {
    /// SIGKILLs the process with the largest resident set, other than `except`
    /// (the agent) and PID 1. Returns it, or nil if there is none.
    static func killLargest(except agent: pid_t) -> ProcessMemory? {
        var largest: ProcessMemory?
        for name in (try? FileSystem.children("/proc")) ?? [] {
            guard let pid = Int32(name), pid != agent, pid != 1, let usage = usage(pid) else { continue }
            if usage.rssBytes > (largest?.rssBytes ?? 0) { largest = usage }
        }
        guard let largest else { return nil }
        kill(largest.pid, SIGKILL)
        return largest
    }

    /// The process's resident set (VmRSS) and command name, from /proc.
    static func usage(_ pid: Int32) -> ProcessMemory? {
        guard let bytes = try? Descriptor.readFile("/proc/\(pid)/status", limit: 16384) else { return nil }
        var command = ""
        var rss: Int64 = 0
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            if line.hasPrefix("Name:") {
                command = String(line.dropFirst(5)).trimmed
            } else if line.hasPrefix("VmRSS:") {
                // "VmRSS:\t    3992 kB": a tab, then spaces.
                let fields = line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" })
                rss = (fields.first.flatMap { Int64($0) } ?? 0) * 1024
            }
        }
        return rss > 0 ? ProcessMemory(pid: pid, command: command, rssBytes: rss) : nil
    }
}
