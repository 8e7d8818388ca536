/// The TCP endpoints of a `/proc/net/tcp` or `/proc/net/tcp6` table: what
/// the server reads of a sandbox before a checkpoint (gVisor cannot save a
/// connection), what the agent waits on to empty (`net.quiesce`), and which
/// socket listens on a port (`Socket.loopbackListener`).
public struct TCPEndpoint: Sendable, Equatable {
    /// `127.0.0.1:8080`; an IPv6 address other than a mapped IPv4 one is shown in brackets, as the table has it.
    public var local: String
    public var remote: String
    public var localPort: UInt16
    public var remotePort: UInt16
    /// The kernel's state number (`/proc/net/tcp`'s `st`, hex there).
    public var state: UInt8
    /// The socket's inode, as a descriptor's `socket:[…]` link names it.
    public var inode: String

    public static let established: UInt8 = 0x01
    public static let closed: UInt8 = 0x07
    public static let listening: UInt8 = 0x0A

    /// Not a listener and not closed: a connection, or one still closing.
    public var isConnection: Bool { state != Self.listening && state != Self.closed }
    /// SYN_SENT, SYN_RECV and ESTABLISHED are open; every later state is closing.
    public var isClosing: Bool { state > 0x03 && isConnection }
    public var description: String { "\(local) -> \(remote)" }

    /// Every endpoint of a table (its header line skipped).
    public static func parse(_ table: String) -> [TCPEndpoint] {
        table.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ")
            guard fields.count > 3, let state = UInt8(fields[3], radix: 16) else { return nil }
            let local = decodeAddress(fields[1])
            let remote = decodeAddress(fields[2])
            return TCPEndpoint(local: local.text, remote: remote.text, localPort: local.port, remotePort: remote.port, state: state,
                               inode: fields.count > 9 ? String(fields[9]) : "")
        }
    }

    /// `0100007F:1F90` → `127.0.0.1:8080` (IPv4, or IPv4 mapped into IPv6).
    static func decodeAddress(_ field: Substring) -> (text: String, port: UInt16) {
        let parts = field.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1], radix: 16) else { return (String(field), 0) }
        // IPv4 mapped into IPv6: the last 32 bits after ::ffff.
        let hex = parts[0].count == 32 && parts[0].hasPrefix("0000000000000000FFFF0000") ? parts[0].suffix(8) : parts[0]
        guard hex.count == 8, let raw = UInt32(hex, radix: 16) else { return ("[\(parts[0])]:\(port)", port) }
        return ("\(raw & 0xFF).\(raw >> 8 & 0xFF).\(raw >> 16 & 0xFF).\(raw >> 24):\(port)", port)
    }
}
