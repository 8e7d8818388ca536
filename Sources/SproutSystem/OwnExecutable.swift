import Glibc
import SproutCore

/// The running program's own file, and the folders above it: how Sprout
/// finds what it ships beside itself in a source checkout (the agent binary,
/// `envs/`, `dashboard/`) before the installed copies.
public enum OwnExecutable {
    /// The running program's path (`/proc/self/exe`).
    public static var path: String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        buffer[n] = 0
        return cStringToString(buffer)
    }

    /// The nearest folder above the running program that holds `relative`
    /// (and, with `accept`, whose `relative` passes it: executable, say).
    public static func folderAbove(holding relative: String, accept: (String) -> Bool = FileSystem.exists) -> String? {
        var folder = path ?? ""
        while let slash = folder.lastIndex(of: "/"), slash != folder.startIndex {
            folder = String(folder[..<slash])
            if accept(folder + "/" + relative) { return folder }
        }
        return nil
    }

    /// Whether `path` is a file this process may execute.
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 && !FileSystem.isDirectory(path) }
}
