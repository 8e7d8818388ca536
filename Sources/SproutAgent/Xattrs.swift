import CSprout
import Glibc
import SproutCore
import SproutSystem

/// Extended attributes of files in the sandbox. Only the `user.` namespace
/// is offered: the others carry the kernel's and the security modules' state.
enum Xattrs {
    static func validate(_ name: String) throws { try ExtendedAttributes.validate(name) }

    static func validate(value: String, of name: String) throws { try ExtendedAttributes.validate(name, value: value) }

    static func read(_ path: String) -> [String: String]? { ExtendedAttributes.read(path, followLinks: false) }

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
