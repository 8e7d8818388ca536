import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Streaming file download and upload over a frame channel. Memory use is
/// bounded by one chunk, whatever the file's size.
enum FileTransfer {
    /// Reply with the file's info, then `data` frames, then `end`.
    static func send(path: String, over channel: FrameChannel) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SproutError.system(path) }
        defer { close(fd) }
        var st = stat()
        try sysCall(path) { fstat(fd, &st) }
        guard (st.st_mode & S_IFMT) != S_IFDIR else {
            throw SproutError(.invalidArgument, "\(path) is a directory")
        }
        try channel.send(message: Reply(file: FileService.makeInfo(path: path, st: st, names: Accounts.names())))
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: AgentProtocol.fileChunkSize, alignment: 8)
        defer { chunk.deallocate() }
        while true {
            let n = Glibc.read(fd, chunk.baseAddress!, chunk.count)
            if n < 0 {
                if errno == EINTR { continue }
                // The reply is out already: report the failure as an event.
                try channel.send(message: Event(error: ErrorBody(SproutError.system("read \(path)"))))
                return
            }
            if n == 0 { break }
            try channel.send(.data, UnsafeRawBufferPointer(rebasing: chunk[0..<n]))
        }
        try channel.send(.end, [])
    }

    /// Receives `data` frames up to `end` into a temporary file beside `path`,
    /// then syncs and renames it into place. A failed or interrupted upload
    /// leaves nothing under the target name (or a temporary file behind).
    static func receive(_ request: WriteRequest, path: String, over channel: FrameChannel) throws {
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            throw SproutError(.invalidArgument, "\(path) is a directory")
        }
        guard path != "/" else { throw SproutError(.invalidArgument, "cannot write to /") }
        let mode = mode_t(request.mode ?? 0o644) & 0o7777
        let owner = try Accounts.find(optional: request.owner)
        for (name, value) in request.xattrs ?? [:] {
            try Xattrs.validate(name)
            try Xattrs.validate(value: value, of: name)
        }
        let dir = FileService.parent(of: path)
        try Accounts.makeDirectories(dir, owner: owner)
        let temp = "\(dir == "/" ? "" : dir)/.\(FileService.baseName(of: path)).upload-\(Identifiers.random(length: 8))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else { throw SproutError.system("create \(temp)") }
        var committed = false
        defer {
            close(fd)
            if !committed { unlink(temp) }
        }
        try channel.send(message: Reply.ok)  // ready for data

        var size: Int64 = 0
        var failure: SproutError?
        receiving: while true {
            guard let frame = try channel.receive() else {
                throw SproutError(.unavailable, "connection closed before the upload of \(path) was complete")
            }
            switch frame.kind {
            case .data:
                guard failure == nil else { continue }  // drain the rest, then report
                do {
                    try Descriptor.writeAll(fd, frame.payload)
                    size += Int64(frame.payload.count)
                } catch let error as SproutError {
                    failure = SproutError(error.code, "write \(path): \(error.message)")
                }
            case .end:
                break receiving
            default:
                throw SproutError(.malformed, "unexpected \(frame.kind) frame during an upload")
            }
        }
        if let failure { throw failure }
        try sysCall("fsync \(path)") { fsync(fd) }
        fchmod(fd, mode)
        if let owner { try sysCall("chown \(path)") { fchown(fd, owner.uid, owner.gid) } }
        if let xattrs = request.xattrs { try Xattrs.set(xattrs, on: fd, path: path) }
        try sysCall("rename into \(path)") { rename(temp, path) }
        committed = true
        try channel.send(message: Reply(size: size))
    }
}
