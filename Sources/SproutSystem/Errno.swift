import Glibc
import SproutCore

/// The text of an errno value.
public func errnoText(_ code: Int32) -> String {
    String(cString: strerror(code))
}

extension SproutError {
    /// An error for a failed system call, naming what was attempted.
    public static func system(_ what: String, errno code: Int32 = errno) -> SproutError {
        let kind: SproutError.Code
        switch code {
        case ENOENT, ESRCH: kind = .notFound
        case EEXIST: kind = .alreadyExists
        case EACCES, EPERM: kind = .forbidden
        case EINVAL, ENOTDIR, EISDIR, ENAMETOOLONG, ELOOP: kind = .invalidArgument
        case ENOTEMPTY: kind = .conflict
        case ENOSPC, EDQUOT: kind = .tooLarge
        default: kind = .io
        }
        return SproutError(kind, "\(what): \(errnoText(code))")
    }
}

/// Runs a system call, retrying on EINTR, and throws on -1.
@discardableResult
public func sysCall<T: BinaryInteger>(_ what: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let r = body()
        if r != -1 { return r }
        let e = errno
        if e == EINTR { continue }
        throw SproutError.system(what(), errno: e)
    }
}

/// A Swift string from a NUL-terminated C buffer.
public func cStringToString(_ buffer: [CChar]) -> String {
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return String(decoding: bytes, as: UTF8.self)
}
