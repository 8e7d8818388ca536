import Glibc
import SproutCore
import SproutSystem

/// `net.quiesce`: waits until the sandbox holds no TCP connection but the
/// one asking. The server has just reset every connection it held into the
/// sandbox (`ss -K`), and the sandbox's ends go to CLOSED only once its
/// network stack has taken those resets in, which on a busy host takes
/// longer than any fixed wait would assume; gVisor cannot checkpoint a
/// sandbox while one is still open, and a failed checkpoint ends it.
enum NetworkQuiet {
    /// Returns once `/proc/net/tcp{,6}` list no connection but the one on
    /// `fd`; throws `conflict` naming what is still open after `timeoutSeconds`.
    static func wait(except fd: Int32, timeoutSeconds: Double) throws {
        let ownLocal = try Socket.localPort(fd)
        let ownRemote = try Socket.remotePort(fd)
        let deadline = monotonicSeconds() + timeoutSeconds
        while true {
            let open = connections().filter { !($0.localPort == ownLocal && $0.remotePort == ownRemote) }
            if open.isEmpty { return }
            guard monotonicSeconds() < deadline else {
                throw SproutError(.conflict,
                    "the sandbox still holds TCP connections (\(open.prefix(4).map(\.description).joined(separator: ", ")))")
            }
            // Asked again until the state changes: the resets are on their way in.
            usleep(2_000)
        }
    }

    /// Every connection (not a listener, not closed) in the sandbox.
    static func connections() -> [TCPEndpoint] {
        ["/proc/net/tcp", "/proc/net/tcp6"].flatMap { table in
            TCPEndpoint.parse(String(decoding: (try? Descriptor.readFile(table, limit: 4 << 20)) ?? [], as: UTF8.self))
        }.filter(\.isConnection)
    }
}
