import CSprout
import Glibc
import SproutCore

/// Host file system helpers.
public enum FileSystem {
    /// `mkdir -p`; a non-directory in the way is a `conflict`.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, mode) == 0 { continue }
            let e = errno
            guard e == EEXIST else { throw SproutError.system("mkdir \(current)", errno: e) }
            guard isDirectory(current) else {
                throw SproutError(.conflict, "\(current) exists and is not a directory")
            }
        }
    }

    /// A new directory `/tmp/<prefix>-XXXXXX` (mode 0700), made by `mkdtemp`; the caller removes it.
    public static func makeTemporaryDirectory(prefix: String) throws -> String {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw SproutError.system("mkdtemp") }
        return template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

        public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    /// A regular file (not following a symlink).
    public static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Marks the directory `path` as a top of a hierarchy for ext4's inode
    /// allocator (`chattr +T`): each subdirectory made in it is placed like
    /// a top-level one, in a block group of its own choosing, instead of
    /// beside its siblings, where a subdirectory deleted moments before left
    /// inodes the allocator steps over one by one. False where the file
    /// system has no such flag (it changes nothing there).
    @discardableResult
    public static func markTopDirectory(_ path: String) -> Bool { csprout_set_topdir(path) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Bytes a tree occupies on disk (allocated blocks; links not followed,
    /// unreadable parts skipped).
    public static func allocatedBytes(_ path: String) -> Int64 {
        var st = stat()
        guard lstat(path, &st) == 0 else { return 0 }
        var total = Int64(st.st_blocks) * 512
        if st.st_mode & S_IFMT == S_IFDIR {
            for name in (try? children(path)) ?? [] { total += allocatedBytes(path + "/" + name) }
        }
        return total
    }

    public static func children(_ dir: String) throws -> [String] {
        guard let d = opendir(dir) else { throw SproutError.system(dir) }
        defer { closedir(d) }
        return names(d)
    }

    /// The names in the open directory `fd` (which stays open and the caller's), sorted.
    public static func children(ofDirectory fd: Int32) throws -> [String] {
        // Close-on-exec: a child another thread starts meanwhile must not inherit it.
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0, let d = fdopendir(copy) else {
            if copy >= 0 { close(copy) }
            throw SproutError.system("read directory")
        }
        defer { closedir(d) }
        return names(d)
    }

    private static func names(_ d: OpaquePointer) -> [String] {
        var names: [String] = []
        while let entry = readdir(d) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `rm -rf`, without following symlinks and without crossing into mounts
    /// (a mount point is unmounted first, lazily).
    public static func removeTree(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            if errno == ENOENT { return }
            throw SproutError.system(path)
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in try children(path) { try removeTree(path + "/" + name) }
            if rmdir(path) != 0 {
                let e = errno
                if e == EBUSY {
                    umount2(path, Int32(MNT_DETACH))
                    if rmdir(path) == 0 { return }
                }
                throw SproutError.system("remove \(path)", errno: e)
            }
        } else if unlink(path) != 0 && errno != ENOENT {
            throw SproutError.system("remove \(path)")
        }
    }

    /// Writes a file atomically: temp file, fsync, rename.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
        // An executable is written with no spawn under way (see SpawnExclusion).
        if mode & 0o111 != 0 { return try SpawnExclusion.writingExecutable { try write(path, bytes, mode: mode) } }
        try write(path, bytes, mode: mode)
    }

    private static func write(_ path: String, _ bytes: [UInt8], mode: mode_t) throws {
        try writeAtomically(path, mode: mode) { try Descriptor.writeAll($0, bytes) }
    }

    /// `path` as `body` writes it to the descriptor it is given: into a
    /// temporary file beside it, synced (with `sync`) and renamed over `path`
    /// once `body` returns; removed if `body` throws, so `path` is the old
    /// file or the whole new one, never a part.
    public static func writeAtomically(_ path: String, mode: mode_t, sync: Bool = true, _ body: (Int32) throws -> Void) throws {
        let temp = path + ".tmp-\(Identifiers.random(length: 6))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SproutError.system("create \(temp)") }
        do {
            try body(fd)
            if sync { try sysCall("fsync \(path)") { fsync(fd) } }
            fchmod(fd, mode)
            close(fd)
            try sysCall("rename \(path)") { rename(temp, path) }
        } catch {
            close(fd)
            unlink(temp)
            throw error
        }
    }

    public static func writeAtomically(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
        try writeAtomically(path, Array(text.utf8), mode: mode)
    }

    /// Mount points at or below `prefix`, deepest first (from /proc/self/mounts).
    public static func mounts(under prefix: String) -> [String] {
        guard let bytes = try? Descriptor.readFile("/proc/self/mounts", limit: 64 << 20) else { return [] }
        let text = String(decoding: bytes, as: UTF8.self)
        var found: [String] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 1 else { continue }
            let point = unescapeMountPath(String(fields[1]))
            if point == prefix || point.hasPrefix(prefix.hasSuffix("/") ? prefix : prefix + "/") { found.append(point) }
        }
        return found.sorted { $0.count > $1.count }
    }

    private static func unescapeMountPath(_ s: String) -> String {
        // /proc/self/mounts escapes space, tab, newline and backslash as \ooo.
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let bytes = Array(s.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == 92, i + 3 < bytes.count, let v = UInt8(String(decoding: bytes[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Unmounts `path`; lazily if it is busy. Not mounted is not an error.
    public static func unmount(_ path: String) {
        if umount2(path, 0) != 0 && errno == EBUSY {
            umount2(path, Int32(MNT_DETACH))
        }
    }

    /// Free bytes on the file system holding `path`.
    public static func freeBytes(_ path: String) -> Int64? {
        var st = statvfs()
        guard statvfs(path, &st) == 0 else { return nil }
        return Int64(st.f_bavail) * Int64(st.f_frsize)
    }
}
