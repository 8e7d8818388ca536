import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Watches a directory (optionally its whole tree) with inotify and sends each
/// change as an `Event` until the client closes the connection.
final class DirectoryWatcher {
    private let inotifyFD: Int32
    private let recursive: Bool
    private var paths: [Int32: String] = [:]

    /// IN_CLOSE_WRITE is not reported, but asked for: between two writes of
    /// one file it keeps them from being identical neighbours in the
    /// kernel's queue, which it would merge into one event.
    private static let mask = UInt32(IN_CREATE | IN_DELETE | IN_MODIFY | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE)

    init(root: String, recursive: Bool) throws {
        var st = stat()
        try sysCall(root) { stat(root, &st) }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw SproutError(.invalidArgument, "\(root) is not a directory")
        }
        inotifyFD = try sysCall("inotify_init") { inotify_init1(Int32(IN_CLOEXEC)) }
        self.recursive = recursive
        do {
            try add(root)
        } catch {
            close(inotifyFD)
            throw error
        }
    }

    deinit { close(inotifyFD) }

    private func add(_ dir: String, recursing: Bool = true) throws {
        let wd = inotify_add_watch(inotifyFD, dir, Self.mask | UInt32(IN_ONLYDIR))
        guard wd >= 0 else { throw SproutError.system("watch \(dir)") }
        paths[wd] = dir
        guard recursive && recursing else { return }
        for name in (try? FileSystem.children(dir)) ?? [] {
            let child = dir == "/" ? "/" + name : dir + "/" + name
            var st = stat()
            if lstat(child, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
                try? add(child)
            }
        }
    }

    /// Streams events until the peer closes `channel` or a send fails.
    func run(channel: FrameChannel) {
        let size = 64 * 1024
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [
            pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0),
            pollfd(fd: channel.readFD, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let r = poll(&fds, 2, -1)
            if r < 0 {
                if errno == EINTR { continue }
                return
            }
            // Anything from the client (data or EOF) ends the watch.
            if fds[1].revents != 0 { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            let n = read(inotifyFD, buffer.baseAddress!, size)
            guard n > 0 else { continue }
            var events: [WatchEvent] = []
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let base = buffer.baseAddress! + offset
                let wd = base.loadUnaligned(as: Int32.self)
                let mask = base.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
                let length = Int(base.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                let nameStart = base + MemoryLayout<inotify_event>.size
                let name = length > 0 ? String(cString: nameStart.assumingMemoryBound(to: CChar.self)) : ""
                offset += MemoryLayout<inotify_event>.size + length
                guard let dir = paths[wd] else { continue }
                if mask & UInt32(IN_IGNORED) != 0 {
                    paths.removeValue(forKey: wd)
                    continue
                }
                let path = name.isEmpty ? dir : (dir == "/" ? "/" + name : dir + "/" + name)
                let isDir = mask & UInt32(IN_ISDIR) != 0
                let kind: WatchEvent.Kind
                if mask & UInt32(IN_CREATE | IN_MOVED_TO) != 0 {
                    kind = .create
                } else if mask & UInt32(IN_DELETE) != 0 {
                    kind = .remove
                } else if mask & UInt32(IN_MOVED_FROM) != 0 {
                    kind = .rename
                } else if mask & UInt32(IN_MODIFY) != 0 {
                    kind = .write
                } else {
                    continue
                }
                // Every event, as it came (two writes are two events).
                events.append(WatchEvent(type: kind, path: path, isDir: isDir))
                // A directory made under a recursive watch may have had
                // entries made in it before its own watch began: report them.
                if kind == .create && isDir && recursive { events += existing(under: path) }
            }
            for event in events {
                do { try channel.send(message: Event(watch: event)) } catch { return }
            }
        }
    }

    /// Watches a directory that appeared (and, through `add`, those in it),
    /// and the creation of everything already in it, parents first.
    private func existing(under dir: String) -> [WatchEvent] {
        guard (try? add(dir, recursing: false)) != nil else { return [] }
        var found: [WatchEvent] = []
        for name in ((try? FileSystem.children(dir)) ?? []).sorted() {
            let child = dir + "/" + name
            var st = stat()
            guard lstat(child, &st) == 0 else { continue }
            let isDir = (st.st_mode & S_IFMT) == S_IFDIR
            found.append(WatchEvent(type: .create, path: child, isDir: isDir))
            if isDir { found += existing(under: child) }
        }
        return found
    }
}
