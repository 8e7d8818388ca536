import SproutHost
import SproutSystem

/// Shared mounts of the host's, as far as Sprout needs them.
public enum HostMounts {
    /// Makes `directory` a shared mount (a bind of itself if it is not a
    /// mount yet), so what is mounted under it later also appears in
    /// Sprout's runtime mount namespace, a slave of the host's. Must run
    /// before that namespace is created.
    public static func share(_ directory: String) async throws {
        try FileSystem.makeDirectories(directory)
        let info = (try? Descriptor.readFile("/proc/self/mountinfo", limit: 16 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let line = info.split(separator: "\n").last { $0.split(separator: " ").dropFirst(4).first.map(String.init) == directory }
        if let line, line.contains("shared:") { return }
        if line == nil {
            try await HostCommand.run(["mount", "--bind", directory, directory])
        }
        try await HostCommand.run(["mount", "--make-shared", directory])
    }
}
