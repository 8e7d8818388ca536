import CSprout
import Glibc
import SproutCore

/// The `user.*` extended attributes of files: the only namespace Sprout
/// offers (the others carry the kernel's and the security modules' state).
public enum ExtendedAttributes {
    public static let prefix = "user."

    /// A name Sprout accepts, and a value (text, at most 64 KiB).
    public static func validate(_ name: String, value: String = "") throws {
        guard name.hasPrefix(prefix), name.utf8.count > prefix.utf8.count, name.utf8.count <= 255, !name.contains("\0") else {
            throw SproutError(.invalidArgument, "extended attribute names start with 'user.' and are at most 255 bytes: '\(name.prefix(300))'")
        }
        guard value.utf8.count <= 65536, !value.contains("\0") else {
            throw SproutError(.invalidArgument, "the value of \(name) must be at most 64 KiB of text")
        }
    }

    /// The `user.*` attributes of `path` whose values are UTF-8 text; nil
    /// when it has none or its file system keeps none. `followLinks: false`
    /// reads a symlink's own.
    public static func read(_ path: String, followLinks: Bool) -> [String: String]? {
        let list = followLinks ? listxattr : llistxattr
        let get = followLinks ? getxattr : lgetxattr
        let size = list(path, nil, 0)
        guard size > 0 else { return nil }
        var names = [CChar](repeating: 0, count: size)
        let got = list(path, &names, size)
        guard got > 0 else { return nil }
        var out: [String: String] = [:]
        for raw in names[..<got].split(separator: 0) {
            let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard name.hasPrefix(prefix) else { continue }
            let length = get(path, name, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: max(length, 1))
            let n = get(path, name, &value, value.count)
            guard n >= 0, let text = String(validating: value[..<n], as: UTF8.self) else { continue }
            out[name] = text
        }
        return out.isEmpty ? nil : out
    }
}
