/// The host's memory, from /proc/meminfo.
public enum MemInfo {
    /// MemAvailable in MiB: what the kernel estimates can be had without swapping.
    public static func availableMB() -> Int? { field("MemAvailable") }
    public static func totalMB() -> Int? { field("MemTotal") }

    /// A field of /proc/meminfo (given there in KiB), in MiB.
    public static func field(_ name: String) -> Int? {
        guard let bytes = try? Descriptor.readFile("/proc/meminfo", limit: 1 << 16) else { return nil }
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix(name + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 2, let kib = Int(parts[1]) else { return nil }
            return kib >> 10
        }
        return nil
    }
}
