import CSprout
import Glibc
import SproutCore

/// Blocking I/O helpers over raw file descriptors.
public enum Descriptor {
    /// Reads up to `count` bytes into `buffer`; returns 0 at end of file.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        try sysCall("read") { Glibc.read(fd, buffer, count) }
    }

    /// Writes every byte, retrying partial writes.
    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < buffer.count {
            let n = try sysCall("write") {
                Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            }
            offset += n
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try writeAll(fd, $0) }
    }

    /// Writes several buffers with as few system calls as possible.
    public static func writeAll(_ fd: Int32, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws {
        var iov = [
            iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count),
        ]
        let total = first.count + second.count
        let n = try sysCall("writev") { writev(fd, &iov, 2) }
        if n == total { return }
        // Rare partial write: finish the rest plainly.
        if n < first.count {
            try writeAll(fd, UnsafeRawBufferPointer(rebasing: first[n...]))
            try writeAll(fd, second)
        } else {
            try writeAll(fd, UnsafeRawBufferPointer(rebasing: second[(n - first.count)...]))
        }
    }

    /// An anonymous in-memory file holding `bytes`, positioned at its start
    /// (close-on-exec; the caller closes it).
    public static func memoryFile(_ name: String, containing bytes: [UInt8]) throws -> Int32 {
        let fd = try sysCall("memfd_create") { csprout_memfd(name) }
        do {
            try writeAll(fd, bytes)
            _ = try sysCall("lseek") { lseek(fd, 0, SEEK_SET) }
        } catch {
            Glibc.close(fd)
            throw error
        }
        return fd
    }

    public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    public static func setNonBlocking(_ fd: Int32, _ on: Bool) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK)
    }

    /// Reads a whole (small) file.
    public static func readFile(_ path: String, limit: Int = 16 << 20) throws -> [UInt8] {
        let fd = try sysCall("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { Glibc.close(fd) }
        return try readAll(fd, limit: limit, what: path)
    }

    /// Everything `fd` has until its end; `tooLarge` past `limit` bytes.
    public static func readAll(_ fd: Int32, limit: Int, what: String) throws -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try read(fd, into: $0.baseAddress!, count: $0.count) }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
            if out.count > limit { throw SproutError(.tooLarge, "\(what) is larger than \(limit) bytes") }
        }
        return out
    }
}
