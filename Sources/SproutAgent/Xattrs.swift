import CSprout
import Glibc
import SproutCore

/// Extended attributes of files in the sandbox. Only the `user.` namespace
/// is offered: the others carry the kernel's and the security modules' state.
enum Xattrs {
    static let prefix = "user."

    static func validate(_ name: String) throws {
        guard name.hasPrefix(prefix), name.utf8.count > prefix.utf8.count, name.utf8.count <= 255, !name.contains("\0") else {
            throw SproutError(.invalidArgument, "extended attribute names start with 'user.' and are at most 255 bytes: '\(name.prefix(300))'")
        }
    }

    static func validate(value: String, of name: String) throws {
        guard value.utf8.count <= 65536, !value.contains("\0") else {
            throw SproutError(.invalidArgument, "the value of \(name) must be at most 64 KiB of text")
        }
    }

    /// The `user.*` attributes of `path` (not following a symlink) whose
    /// values are UTF-8 text; nil when it has none or the file system keeps none.
    static func read(_ path: String) -> [String: String]? {
        let size = llistxattr(path, nil, 0)
        guard size > 0 else { return nil }
        var names = [CChar](repeating: 0, count: size)
        let got = llistxattr(path, &names, size)
        guard got > 0 else { return nil }
        var out: [String: String] = [:]
        for raw in names[..<got].split(separator: 0) {
            let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard name.hasPrefix(prefix) else { continue }
            let length = lgetxattr(path, name, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: max(length, 1))
            let n = lgetxattr(path, name, &value, value.count)
            guard n >= 0, let text = String(validating: value[..<n], as: UTF8.self) else { continue }
            out[name] = text
        }
        return out.isEmpty ? nil : out
    }

    /// Sets `attributes` on an open file.
    static func set(_ attributes: [String: String], on fd: Int32, path: String) throws {
        for (name, value) in attributes.sorted(by: { $0.key < $1.key }) {
            try validate(name)
            try validate(value: value, of: name)
            let bytes = Array(value.utf8)
            guard fsetxattr(fd, name, bytes, bytes.count, 0) == 0 else { throw failure(errno, name, path) }
        }
    }

    /// Sets and removes attributes of `path` (not following a symlink).
    static func update(_ path: String, set: [String: String], remove: [String]) throws {
        for name in remove { try validate(name) }
        for (name, value) in set {
            try validate(name)
            try validate(value: value, of: name)
        }
        for (name, value) in set.sorted(by: { $0.key < $1.key }) {
            let bytes = Array(value.utf8)
            guard lsetxattr(path, name, bytes, bytes.count, 0) == 0 else { throw failure(errno, name, path) }
        }
        for name in remove where lremovexattr(path, name) != 0 && errno != ENODATA {
            throw failure(errno, name, path)
        }
    }

    static func failure(_ code: Int32, _ name: String, _ path: String) -> SproutError {
        if code == EOPNOTSUPP {
            return SproutError(.unavailable, "the file system of \(path) keeps no extended attributes (setting \(name))")
        }
        return SproutError.system("set \(name) on \(path)", errno: code)
    }
}
