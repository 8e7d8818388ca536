import Crypto
import Glibc
import SproutCore
import SproutSystem

/// A file written piece by piece while its SHA-256 and size are counted:
/// downloads and uploads checked against the digest they claim. Closed when
/// released.
public final class HashingFile: @unchecked Sendable {
    public let path: String
    let fd: Int32
    private var hasher = SHA256()
    public private(set) var size: Int64 = 0

    /// Creates `path` (truncating it, or failing if it exists when `exclusive`).
    public init(creating path: String, exclusive: Bool = false) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC), 0o600)
        guard fd >= 0 else { throw SproutError.system("create \(path)") }
    }

    deinit { close(fd) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        hasher.update(bufferPointer: bytes)
        try Descriptor.writeAll(fd, bytes)
        size += Int64(bytes.count)
    }

    /// The hex SHA-256 of everything written.
    public func digest() -> String { hexString(hasher.finalize()) }

    public func sync() throws { try sysCall("fsync \(path)") { fsync(fd) } }
}
