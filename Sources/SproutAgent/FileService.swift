import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// File operations inside the sandbox. Paths are absolute, or relative to the
/// agent's working directory; they are normalised (`.`, `..`, repeated `/`)
/// before use.
enum FileService {
    /// Makes `path` absolute and normalised.
    static func resolve(_ path: String, base: String) throws -> String {
        guard !path.isEmpty else { throw SproutError(.invalidArgument, "path is empty") }
        guard !path.utf8.contains(0) else { throw SproutError(.invalidArgument, "path contains a NUL byte") }
        let full = path.hasPrefix("/") ? path : base + "/" + path
        var parts: [Substring] = []
        for part in full.split(separator: "/") {
            switch part {
            case ".": continue
            case "..": if !parts.isEmpty { parts.removeLast() }
            default: parts.append(part)
            }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func info(_ path: String, names: Accounts.Names = Accounts.names()) throws -> FileInfo {
        var st = stat()
        try sysCall("\(path)") { lstat(path, &st) }
        return makeInfo(path: path, st: st, names: names)
    }

    static func makeInfo(path: String, st: stat, names: Accounts.Names) -> FileInfo {
        let type: FileInfo.Kind
        var target: String?
        switch st.st_mode & S_IFMT {
        case S_IFREG: type = .file
        case S_IFDIR: type = .dir
        case S_IFLNK:
            type = .symlink
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(path, &buf, buf.count - 1)
            if n >= 0 {
                buf[n] = 0
                target = cStringToString(buf)
            }
        default: type = .other
        }
        let name = path == "/" ? "/" : String(path.split(separator: "/").last ?? "")
        return FileInfo(
            path: path, name: name, type: type, size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
            mtime: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9, target: target,
            uid: st.st_uid, gid: st.st_gid, owner: names.user(st.st_uid), group: names.group(st.st_gid),
            xattrs: Xattrs.read(path))
    }

    /// Entries below `path`, sorted by path; `depth` 1 lists only its children.
    static func list(_ path: String, depth: Int) throws -> [FileInfo] {
        guard depth >= 1 && depth <= 64 else {
            throw SproutError(.invalidArgument, "depth must be between 1 and 64, got \(depth)")
        }
        let root = try info(path)
        guard root.type == .dir else { throw SproutError(.invalidArgument, "\(path) is not a directory") }
        var out: [FileInfo] = []
        try walk(path, depth: depth, names: Accounts.names(), into: &out)
        return out
    }

    private static func walk(_ dir: String, depth: Int, names: Accounts.Names, into out: inout [FileInfo]) throws {
        for name in try FileSystem.children(dir) {
            let child = dir == "/" ? "/" + name : dir + "/" + name
            guard let entry = try? info(child, names: names) else { continue }  // vanished meanwhile
            out.append(entry)
            if entry.type == .dir && depth > 1 {
                try? walk(child, depth: depth - 1, names: names, into: &out)
            }
        }
    }

    static func move(from: String, to: String) throws {
        guard from != "/" && to != "/" else { throw SproutError(.invalidArgument, "cannot move /") }
        var st = stat()
        try sysCall(from) { lstat(from, &st) }
        try FileSystem.makeDirectories(parent(of: to))
        try sysCall("move \(from) to \(to)") { rename(from, to) }
    }

    static func remove(_ path: String, recursive: Bool) throws {
        guard path != "/" else { throw SproutError(.invalidArgument, "refusing to remove /") }
        var st = stat()
        try sysCall(path) { lstat(path, &st) }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            if recursive {
                for name in try FileSystem.children(path) { try remove(path + "/" + name, recursive: true) }
            }
            if rmdir(path) != 0 {
                let e = errno
                if e == ENOTEMPTY || e == EEXIST {
                    throw SproutError(.conflict, "directory \(path) is not empty (remove it recursively)")
                }
                throw SproutError.system("rmdir \(path)", errno: e)
            }
        } else {
            try sysCall("remove \(path)") { unlink(path) }
        }
    }

    static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return "/" }
        return String(path[..<slash])
    }

    static func baseName(of path: String) -> String {
        String(path.split(separator: "/").last ?? "")
    }

    static func setClock(unixNanos: Int64) throws {
        guard unixNanos > 0 else { throw SproutError(.invalidArgument, "time must be after 1970") }
        var ts = timespec(tv_sec: Int(unixNanos / 1_000_000_000), tv_nsec: Int(unixNanos % 1_000_000_000))
        try sysCall("set the clock") { clock_settime(CLOCK_REALTIME, &ts) }
    }
}
