import Foundation
import Crypto
import Glibc
import SproutCore
import SproutSystem

/// The files of a push: every regular file under the folder. Symlinks that
/// point outside the folder are refused, never followed. Used by `sprout env
/// push` and by the server for its built-in envs.
public enum LocalFiles {
    public struct Entry: Sendable {
        public var path: String
        public var localPath: String
        public var mode: UInt32
        public var sha256: String

        public init(path: String, localPath: String, mode: UInt32, sha256: String) {
            self.path = path
            self.localPath = localPath
            self.mode = mode
            self.sha256 = sha256
        }
    }

    public static func collect(root: String) throws -> [Entry] {
        guard let resolvedRoot = realPath(root) else {
            throw SproutError(.notFound, "the files folder \(root) does not exist")
        }
        var out: [Entry] = []
        func walk(_ relative: String) throws {
            let dir = relative.isEmpty ? resolvedRoot : resolvedRoot + "/" + relative
            for name in try FileSystem.children(dir) {
                let rel = relative.isEmpty ? name : relative + "/" + name
                let full = resolvedRoot + "/" + rel
                var st = stat()
                guard lstat(full, &st) == 0 else { throw SproutError.system(full) }
                var target = full
                if (st.st_mode & S_IFMT) == S_IFLNK {
                    guard let real = realPath(full), real.hasPrefix(resolvedRoot + "/")
                    else {
                        throw SproutError(.invalidArgument, "\(rel) is a symlink that points outside \(root); refused")
                    }
                    target = real
                    guard stat(real, &st) == 0 else { throw SproutError.system(real) }
                }
                switch st.st_mode & S_IFMT {
                case S_IFDIR: try walk(rel)
                case S_IFREG:
                    out.append(Entry(path: rel, localPath: target, mode: UInt32(st.st_mode & 0o7777), sha256: try sha256(target)))
                default: continue
                }
            }
        }
        try walk("")
        return out
    }

    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    public static func sha256(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system(path) }
        defer { close(fd) }
        var hasher = SHA256()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = try buffer.withUnsafeMutableBytes { try Descriptor.read(fd, into: $0.baseAddress!, count: $0.count) }
            if n == 0 { break }
            hasher.update(data: buffer[0..<n])
        }
        return hexString(hasher.finalize())
    }

    /// What `COPY sources destination` writes, as Docker does: a destination
    /// ending in `/` (or several sources) is a directory the sources go
    /// into (a directory's contents, not the directory itself); otherwise a
    /// single file is written at the destination. Returns the directory and
    /// the files, relative to it.
    public static func copied(_ sources: [String], to destination: String, context root: String, where location: String) throws
        -> (String, [Entry])
    {
        var matches: [String] = []
        for source in sources {
            let found = try glob(source, in: root, where: location)
            guard !found.isEmpty else {
                throw SproutError(.invalidArgument, "\(location): COPY source '\(source)' is not in the build context \(root)")
            }
            matches += found
        }
        let isDirectory = namesDirectory(destination) || matches.count > 1 || matches.contains(where: FileSystem.isDirectory)
        var files: [Entry] = []
        for match in matches {
            if FileSystem.isDirectory(match) {
                files += try collect(root: match)
            } else {
                var st = stat()
                guard stat(match, &st) == 0 else { throw SproutError.system(match) }
                let name = isDirectory ? (match as NSString).lastPathComponent : (destination as NSString).lastPathComponent
                files.append(Entry(path: name, localPath: match, mode: UInt32(st.st_mode & 0o7777), sha256: try sha256(match)))
            }
        }
        let trimmed = destination.count > 1 && destination.hasSuffix("/") ? String(destination.dropLast()) : destination
        let directory = isDirectory ? trimmed : ((trimmed as NSString).deletingLastPathComponent.isEmpty ? "." : (trimmed as NSString).deletingLastPathComponent)
        return (directory, files)
    }

    /// Whether a `COPY` destination is written as a directory (`dir/`, `.`, `dir/.`).
    public static func namesDirectory(_ destination: String) -> Bool {
        destination.hasSuffix("/") || destination == "." || destination.hasSuffix("/.")
    }

    /// `pattern` (`*`, `?`, `[…]`) matched in the context; nothing outside it.
    static func glob(_ pattern: String, in root: String, where location: String) throws -> [String] {
        let relative = pattern.split(separator: "/").filter { $0 != "." }.joined(separator: "/")
        let full = relative.isEmpty ? root : root + "/" + relative
        var result = glob_t()
        defer { globfree(&result) }
        guard Glibc.glob(full, 0, nil, &result) == 0 else { return [] }
        var paths: [String] = []
        for i in 0..<Int(result.gl_pathc) {
            guard let cString = result.gl_pathv[i] else { continue }
            let path = String(cString: cString)
            guard let real = realPath(path), real == root || real.hasPrefix(root + "/") else {
                throw SproutError(.invalidArgument, "\(location): COPY source '\(pattern)' is outside the build context \(root)")
            }
            paths.append(path)
        }
        return paths.sorted()
    }
}
