import CSprout
import Glibc
import SproutCore

/// TCP sockets with blocking I/O.
public enum Socket {
    /// Opens a listening IPv4 TCP socket. Port 0 picks a free port.
    /// Returns the descriptor and the bound port.
    public static func listenTCP(host: String, port: UInt16, backlog: Int32 = 512) throws -> (fd: Int32, port: UInt16) {
        let fd = try sysCall("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var addr = try ipv4Address(host: host, port: port)
            try withUnsafePointer(to: &addr) { p in
                try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    _ = try sysCall("bind \(host):\(port)") { bind(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
            try sysCall("listen") { listen(fd, backlog) }
            return (fd, try localPort(fd))
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Accepts one connection; the new descriptor is close-on-exec.
    public static func accept(_ listener: Int32) throws -> Int32 {
        try sysCall("accept") { csprout_accept4_cloexec(listener) }
    }

    /// Connects to an IPv4 TCP address, with a timeout. `resetOnClose`: see
    /// `setAbortiveClose` (every connection into a sandbox uses it).
    /// `unacknowledgedTimeoutSeconds`: see `setUnacknowledgedTimeout` (0: the kernel's own).
    public static func connectTCP(
        host: String, port: UInt16, timeoutSeconds: Double = 10, resetOnClose: Bool = false,
        unacknowledgedTimeoutSeconds: Double = 11
    ) throws -> Int32 {
        let fd = try sysCall("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            var addr = try ipv4Address(host: host, port: port)
            Descriptor.setNonBlocking(fd, true)
            let rc = withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    connect(fd, sa, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            if rc != 0 {
                let e = errno
                guard e == EINPROGRESS || e == EINTR else {
                    throw SproutError(.unavailable, "connect \(host):\(port): \(errnoText(e))")
                }
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&pfd, 1, Int32(timeoutSeconds * 1000))
                if ready == 0 { throw SproutError(.timeout, "connect \(host):\(port): timed out") }
                var soError: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
                if soError != 0 {
                    throw SproutError(.unavailable, "connect \(host):\(port): \(errnoText(soError))")
                }
            }
            Descriptor.setNonBlocking(fd, false)
            setNoDelay(fd)
            if resetOnClose { setAbortiveClose(fd) }
            setKeepAlive(fd)
            setUnacknowledgedTimeout(fd, seconds: unacknowledgedTimeoutSeconds)
            return fd
        } catch {
            Glibc.close(fd)
            throw error
        }
    }

    /// Disables Nagle's algorithm: our frames are small and latency matters.
    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Probes an idle connection after 5 s, every 2 s, 3 times: a peer that
    /// vanished without a FIN (a killed sandbox whose network is gone) is
    /// noticed within ≈ 11 s instead of never.
    public static func setKeepAlive(_ fd: Int32) {
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, socklen_t(MemoryLayout<Int32>.size))
        var idle: Int32 = 5
        var interval: Int32 = 2
        var count: Int32 = 3
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Ends the connection (reads and writes fail with ETIMEDOUT) once data
    /// sent has gone unacknowledged for `seconds` (TCP_USER_TIMEOUT; 0 leaves
    /// the kernel's retransmissions, about fifteen minutes). Keepalive does
    /// not probe a connection with data in flight, so without it a peer that
    /// vanished without a word (a sandbox whose container a checkpoint ended
    /// just after a request went out; nothing there answers with a reset)
    /// held a read for many minutes. A live peer acknowledges at once, even
    /// one not reading (a zero window is probed and answered). On an idle
    /// connection it replaces keepalive's probe count as the verdict: the
    /// default (11 s) is what `setKeepAlive` alone gives.
    public static func setUnacknowledgedTimeout(_ fd: Int32, seconds: Double) {
        guard seconds > 0 else { return }
        var milliseconds = UInt32(seconds * 1000)
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_USER_TIMEOUT, &milliseconds, socklen_t(MemoryLayout<UInt32>.size))
    }

    /// Sets (or clears, with 0) the receive timeout.
    public static func setReceiveTimeout(_ fd: Int32, seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Makes `close` reset the connection (SO_LINGER 0) instead of sending a
    /// FIN. The host's connections into sandboxes use it: whichever end
    /// closes first waits in TIME_WAIT for a minute, and gVisor cannot
    /// checkpoint a sandbox holding an endpoint in that state (nor in
    /// FIN_WAIT or LAST_ACK); a reset takes the sandbox's end straight to
    /// CLOSED, whichever side finished first.
    public static func setAbortiveClose(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    }

    /// A loopback TCP port free a moment ago (bound, then let go), for a
    /// server that takes its port from its command line. Another process can
    /// take it in between: a caller that cannot start on it tries another.
    public static func freeLoopbackPort() throws -> Int {
        let (fd, port) = try listenTCP(host: "127.0.0.1", port: 0)
        Glibc.close(fd)
        return Int(port)
    }

    /// Whether one of `pids` holds the socket listening on 127.0.0.1:`port`
    /// (from /proc/net/tcp and the processes' descriptors). A port picked
    /// free may be taken by another process before the program it was meant
    /// for binds it: then something answers there, but not that program.
    public static func loopbackListener(port: UInt16, isHeldByOneOf pids: [pid_t]) -> Bool {
        guard let table = try? Descriptor.readFile("/proc/net/tcp", limit: 16 << 20) else { return false }
        let inodes = Set(TCPEndpoint.parse(String(decoding: table, as: UTF8.self))
            .filter { $0.state == TCPEndpoint.listening && $0.local == "127.0.0.1:\(port)" }.map(\.inode))
        guard !inodes.isEmpty else { return false }
        var buffer = [CChar](repeating: 0, count: 64)
        for pid in pids {
            for fd in (try? FileSystem.children("/proc/\(pid)/fd")) ?? [] {
                let n = readlink("/proc/\(pid)/fd/\(fd)", &buffer, buffer.count - 1)
                guard n > 0 else { continue }
                let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if target.hasPrefix("socket:["), inodes.contains(String(target.dropFirst(8).dropLast())) { return true }
            }
        }
        return false
    }

    /// Whether something accepts connections at host:port (the probe
    /// connection is reset, not closed: see `setAbortiveClose`).
    public static func answers(host: String, port: UInt16, timeoutSeconds: Double) -> Bool {
        guard let fd = try? connectTCP(host: host, port: port, timeoutSeconds: timeoutSeconds, resetOnClose: true) else { return false }
        Descriptor.close(fd)
        return true
    }

    /// Half-closes the sending side.
    public static func shutdownWrite(_ fd: Int32) {
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Shuts down both directions, waking any thread blocked on the socket.
    public static func shutdownBoth(_ fd: Int32) {
        shutdown(fd, Int32(SHUT_RDWR))
    }

    public static func localPort(_ fd: Int32) throws -> UInt16 {
        try port(fd, "getsockname", getsockname)
    }

    /// The port of the other end of a connected IPv4 socket.
    public static func remotePort(_ fd: Int32) throws -> UInt16 {
        try port(fd, "getpeername", getpeername)
    }

    private static func port(
        _ fd: Int32, _ call: String, _ name: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) throws -> UInt16 {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &addr) { p in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                _ = try sysCall(call) { name(fd, sa, &len) }
            }
        }
        return UInt16(bigEndian: addr.sin_port)
    }

    static func ipv4Address(host: String, port: UInt16) throws -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        let name = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, name, &addr.sin_addr) == 1 else {
            throw SproutError(.invalidArgument, "not an IPv4 address: \(host)")
        }
        return addr
    }
}
