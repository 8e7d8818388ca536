import CSprout
import Crypto
import Foundation
import Glibc
import SproutCore
import SproutSystem

/// The content address of a layer directory: SHA-256 over a canonical
/// listing of the tree. Every entry contributes its path, type, permission
/// bits, owner, and its content (files), target (symlinks), device numbers
/// (overlay whiteouts) or opaque marker (directories). Timestamps and inode
/// numbers do not count, so building the same thing twice gives the same
/// digest.
public enum LayerDigest {
    /// `salt`, if given, is hashed first: equal content, distinct layer.
    public static func of(directory root: String, salt: String? = nil) throws -> String {
        var hasher = SHA256()
        if let salt { hasher.update(data: Data(salt.utf8)) }
        try walk(root, relative: "", into: &hasher)
        return hexString(hasher.finalize())
    }

    private static func walk(_ root: String, relative: String, into hasher: inout SHA256) throws {
        let dir = relative.isEmpty ? root : root + "/" + relative
        for name in try FileSystem.children(dir) {
            let rel = relative.isEmpty ? name : relative + "/" + name
            let path = root + "/" + rel
            var st = stat()
            guard lstat(path, &st) == 0 else { throw SproutError.system(path) }
            var line = "\(rel)\0\(st.st_mode & 0o7777)\0\(st.st_uid):\(st.st_gid)\0"
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                line += "dir\0" + (isOpaque(path) ? "opaque" : "")
                hasher.update(data: Data(line.utf8 + [10]))
                try walk(root, relative: rel, into: &hasher)
                continue
            case S_IFREG:
                line += "file\0\(st.st_size)\0" + (try fileDigest(path))
            case S_IFLNK:
                var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(path, &buf, buf.count - 1)
                line += "link\0" + (n >= 0 ? cStringToString(Array(buf[0..<n]) + [0]) : "")
            case S_IFCHR, S_IFBLK:
                line += "dev\0\(st.st_rdev)"
            default:
                line += "other"
            }
            hasher.update(data: Data(line.utf8 + [10]))
        }
    }

    static func fileDigest(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system(path) }
        defer { close(fd) }
        var hasher = SHA256()
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = try Descriptor.read(fd, into: chunk.baseAddress!, count: chunk.count)
            if n == 0 { break }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
        }
        return hexString(hasher.finalize())
    }

    /// Overlayfs marks a directory that hides everything below it with this xattr.
    public static func isOpaque(_ path: String) -> Bool {
        csprout_is_overlay_opaque(path) == 1
    }
}
