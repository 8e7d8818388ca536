import CSprout
import Glibc
import SproutAPI
import SproutBlocking
import SproutCore
import SproutSystem

/// Files of a mounted volume, without a sandbox. Every path is resolved
/// beneath the volume's root (openat2 `RESOLVE_IN_ROOT`): `..` and symlinks
/// of a sandbox's making never lead out of it. The last component is never
/// followed when it is a symlink that is written, made or removed.
public struct VolumeFiles: Sendable {
    /// The volume's mount point.
    let root: String

    /// Linux's values; Glibc's Swift module leaves out these GNU ones.
    static let O_PATH: Int32 = 0o10000000
    static let AT_EMPTY_PATH: Int32 = 0x1000

    /// `path` as the volume's own absolute path (`/a/b`), or an error for a bad one.
    static func clean(_ path: String) throws -> String {
        guard !path.contains("\0"), path.utf8.count <= 4096 else { throw SproutError(.invalidArgument, "invalid path") }
        let parts = path.split(separator: "/").filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    /// The parent directory's descriptor and the last component's name.
    private static func split(_ path: String) throws -> (parent: String, name: String) {
        let clean = try clean(path)
        guard clean != "/" else { throw SproutError(.invalidArgument, "the volume's root cannot be written or removed") }
        let name = String(clean.split(separator: "/").last!)
        guard name != ".." else { throw SproutError(.invalidArgument, "invalid path \(path)") }
        return (String(clean.dropLast(name.count)), name)
    }

    private func withRoot<T>(_ body: (Int32) throws -> T) throws -> T {
        let fd = Glibc.open(root, Self.O_PATH | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError(.unavailable, "the volume is not mounted") }
        defer { close(fd) }
        return try body(fd)
    }

    private static func open(_ rootfd: Int32, _ path: String, _ flags: Int32, mode: mode_t = 0) throws -> Int32 {
        let fd = csprout_open_in_root(rootfd, path, flags, Int32(mode))
        guard fd >= 0 else { throw error(errno, path) }
        return fd
    }

    /// Permission bits only (and setuid, setgid, sticky).
    static func checkMode(_ mode: UInt32?) throws {
        if let mode, mode > 0o7777 { throw SproutError(.invalidArgument, "mode must be at most 0o7777") }
    }

    static func error(_ code: Int32, _ path: String) -> SproutError {
        switch code {
        case ENOENT: SproutError(.notFound, "no such file or directory: \(path)")
        case ENOTDIR: SproutError(.invalidArgument, "not a directory: \(path)")
        case EISDIR: SproutError(.invalidArgument, "is a directory: \(path)")
        case EEXIST: SproutError(.alreadyExists, "already exists: \(path)")
        case ENOTEMPTY: SproutError(.conflict, "directory not empty: \(path)")
        case ENOSPC, EDQUOT: SproutError(.tooLarge, "the volume is full")
        case ELOOP: SproutError(.invalidArgument, "too many symlinks: \(path)")
        default: SproutError(.io, "\(path): \(String(cString: strerror(code)))")
        }
    }

    static func entry(_ st: stat, path: String, name: String, target: String?) -> API.FileEntry {
        let kind: API.FileEntry.Kind = switch st.st_mode & S_IFMT {
        case S_IFREG: .file
        case S_IFDIR: .dir
        case S_IFLNK: .symlink
        default: .other
        }
        return API.FileEntry(path: path, name: name, type: kind, size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777),
                             mtime: Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9, target: target,
                             uid: st.st_uid, gid: st.st_gid)
    }

    /// An entry as the kernel describes it.
    struct Item: Sendable {
        var path: String
        var name: String
        var st: stat
        var target: String?
        var entry: API.FileEntry { VolumeFiles.entry(st, path: path, name: name, target: target) }
    }

    /// What is at `path` (a symlink itself, not what it points to).
    func item(_ path: String) async throws -> Item {
        let clean = try Self.clean(path)
        return try await onThread {
            try withRoot { rootfd in
                let fd = try Self.open(rootfd, clean, Self.O_PATH | O_NOFOLLOW)
                defer { close(fd) }
                var st = Glibc.stat()
                try sysCall("stat \(clean)") { fstatat(fd, "", &st, Self.AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) }
                let target = (st.st_mode & S_IFMT) == S_IFLNK ? Self.readLink(fd) : nil
                return Item(path: clean, name: clean == "/" ? "" : String(clean.split(separator: "/").last!), st: st, target: target)
            }
        }
    }

    func stat(_ path: String) async throws -> API.FileEntry { try await item(path).entry }

    private static func readLink(_ fd: Int32, _ name: String = "") -> String? {
        var buffer = [CChar](repeating: 0, count: 4097)
        let n = readlinkat(fd, name, &buffer, 4096)
        return n < 0 ? nil : String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A directory's entries, sorted by name; with `depth` over 1, those of
    /// its subdirectories too (symlinks are not followed).
    func items(_ path: String, depth: Int = 1) async throws -> [Item] {
        let clean = try Self.clean(path)
        return try await onThread {
            try withRoot { rootfd in
                let fd = try Self.open(rootfd, clean, O_RDONLY | O_DIRECTORY)
                return try Self.walk(fd, clean, depth: depth)
            }
        }
    }

    /// Reads the directory `fd` (and closes it).
    private static func walk(_ fd: Int32, _ path: String, depth: Int) throws -> [Item] {
        defer { close(fd) }
        var out: [Item] = []
        for name in try FileSystem.children(ofDirectory: fd) {
            var st = Glibc.stat()
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            let item = Item(path: path == "/" ? "/" + name : path + "/" + name, name: name, st: st,
                            target: (st.st_mode & S_IFMT) == S_IFLNK ? readLink(fd, name) : nil)
            out.append(item)
            if depth > 1, (st.st_mode & S_IFMT) == S_IFDIR {
                let child = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                if child >= 0 { out += try walk(child, item.path, depth: depth - 1) }
            }
        }
        return out
    }

    func list(_ path: String) async throws -> [API.FileEntry] { try await items(path).map(\.entry) }

    /// Sets an entry's owner and mode (a symlink's mode is left alone: Linux has none).
    func setAttributes(_ path: String, uid: UInt32?, gid: UInt32?, mode: UInt32?) async throws {
        try Self.checkMode(mode)
        let clean = try Self.clean(path)
        try await onThread {
            try withRoot { rootfd in
                let fd = try Self.open(rootfd, clean, Self.O_PATH | O_NOFOLLOW)
                defer { close(fd) }
                try Self.apply(fd, uid: uid, gid: gid, mode: mode, path: clean)
            }
        }
    }

    /// On an O_PATH descriptor: chown through it; chmod through the file reopened by it (not for a symlink).
    private static func apply(_ fd: Int32, uid: UInt32?, gid: UInt32?, mode: UInt32?, path: String) throws {
        if uid != nil || gid != nil {
            let (u, g) = (uid.map { uid_t($0) } ?? uid_t.max, gid.map { gid_t($0) } ?? gid_t.max)
            guard fchownat(fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 else { throw error(errno, path) }
        }
        guard let mode else { return }
        var st = Glibc.stat()
        guard fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0, (st.st_mode & S_IFMT) != S_IFLNK else { return }
        guard chmod("/proc/self/fd/\(fd)", mode_t(mode)) == 0 else { throw error(errno, path) }
    }

    /// Opens a file for reading (symlinks inside the volume are followed,
    /// within it); the caller closes the descriptor.
    func openRead(_ path: String) async throws -> (fd: Int32, size: Int64) {
        let clean = try Self.clean(path)
        return try await onThread {
            try withRoot { rootfd in
                let fd = try Self.open(rootfd, clean, O_RDONLY)
                var st = Glibc.stat()
                guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
                    close(fd)
                    throw SproutError(.invalidArgument, "not a regular file: \(clean)")
                }
                return (fd, Int64(st.st_size))
            }
        }
    }

    /// A file being written: under a temporary name beside its place, renamed
    /// into it by `finish` (so a failed upload changes nothing), or removed by `abort`.
    struct Upload: Sendable {
        let directory: Int32
        let temporary: String
        let name: String
        let fd: Int32

        func finish() async throws {
            let (directory, temporary, name, fd) = (directory, temporary, name, fd)
            // On failure the caller's `abort` removes the file and closes.
            try await onThread {
                guard renameat(directory, temporary, directory, name) == 0 else { throw VolumeFiles.error(errno, name) }
                close(fd)
                close(directory)
            }
        }

        func abort() {
            unlinkat(directory, temporary, 0)
            close(fd)
            close(directory)
        }
    }

    /// Opens `path` to be written whole (its parent directories made if
    /// missing), owned by `uid`:`gid` (default the volume's user) with `mode` (default 644).
    func openWrite(_ path: String, uid: UInt32? = nil, gid: UInt32? = nil, mode: UInt32? = nil) async throws -> Upload {
        try Self.checkMode(mode)
        let (parent, name) = try Self.split(path)
        try await makeDirectory(parent, parents: true)
        return try await onThread {
            try withRoot { rootfd in
                let dirfd = try Self.open(rootfd, parent, Self.O_PATH | O_DIRECTORY)
                let temporary = ".\(name.prefix(200)).upload-\(Identifiers.random(length: 8))"
                let fd = openat(dirfd, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
                guard fd >= 0 else {
                    let code = errno
                    close(dirfd)
                    throw Self.error(code, path)
                }
                fchown(fd, uid.map { uid_t($0) } ?? VolumeStore.owner.uid, gid.map { gid_t($0) } ?? VolumeStore.owner.gid)
                if let mode { fchmod(fd, mode_t(mode)) }
                return Upload(directory: dirfd, temporary: temporary, name: name, fd: fd)
            }
        }
    }

    /// Writes all of `bytes` at the descriptor's offset; a full volume is `tooLarge`.
    static func write(_ fd: Int32, _ bytes: [UInt8]) async throws {
        try await onThread {
            var done = 0
            while done < bytes.count {
                let n = bytes[done...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw error(errno, "write")
                }
                done += n
            }
        }
    }

    /// Makes a directory (and, with `parents`, those above it; an existing
    /// directory is then no error).
    func makeDirectory(_ path: String, parents: Bool, uid: UInt32? = nil, gid: UInt32? = nil, mode: UInt32? = nil) async throws {
        try Self.checkMode(mode)
        let clean = try Self.clean(path)
        guard clean != "/" else { return }
        try await onThread {
            try withRoot { rootfd in
                var current = "/"
                let parts = clean.split(separator: "/").map(String.init)
                for (i, part) in parts.enumerated() {
                    let last = i == parts.count - 1
                    guard part != ".." else { throw SproutError(.invalidArgument, "invalid path \(path)") }
                    let dirfd = try Self.open(rootfd, current, Self.O_PATH | O_DIRECTORY)
                    defer { close(dirfd) }
                    current += (current == "/" ? "" : "/") + part
                    // Without `parents`, only the last is made: a missing one above it is not found.
                    guard last || parents else { continue }
                    if mkdirat(dirfd, part, 0o755) == 0 {
                        let (u, g) = last ? (uid.map { uid_t($0) }, gid.map { gid_t($0) }) : (nil, nil)
                        fchownat(dirfd, part, u ?? VolumeStore.owner.uid, g ?? VolumeStore.owner.gid, AT_SYMLINK_NOFOLLOW)
                        if last, let mode { fchmodat(dirfd, part, mode_t(mode), 0) }
                    } else if errno != EEXIST || (last && !parents) {
                        throw Self.error(errno, "/" + parts[...i].joined(separator: "/"))
                    }
                }
            }
        }
    }

    /// Removes a file, a symlink (not what it points to) or a directory with
    /// everything in it.
    func remove(_ path: String) async throws {
        let (parent, name) = try Self.split(path)
        try await onThread {
            try withRoot { rootfd in
                let dirfd = try Self.open(rootfd, parent, Self.O_PATH | O_DIRECTORY)
                defer { close(dirfd) }
                try Self.removeEntry(dirfd, name, path)
            }
        }
    }

    private static func removeEntry(_ dirfd: Int32, _ name: String, _ path: String) throws {
        if unlinkat(dirfd, name, 0) == 0 { return }
        guard errno == EISDIR else { throw error(errno, path) }
        let fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw error(errno, path) }
        defer { close(fd) }
        for child in try FileSystem.children(ofDirectory: fd) { try removeEntry(fd, child, path + "/" + child) }
        guard unlinkat(dirfd, name, AT_REMOVEDIR) == 0 else { throw error(errno, path) }
    }
}
