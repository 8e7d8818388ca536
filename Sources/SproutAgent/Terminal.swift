import CSprout
import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Pseudo-terminal helpers.
enum Terminal {
    /// Opens a new PTY pair; returns the master descriptor and the slave's path.
    static func open(size: TerminalSize) throws -> (master: Int32, slavePath: String) {
        var name = [CChar](repeating: 0, count: 128)
        let master = try sysCall("open a terminal") { csprout_open_pty(&name, name.count) }
        do {
            try setSize(master, size)
            return (master, cStringToString(name))
        } catch {
            Glibc.close(master)
            throw error
        }
    }

    static func setSize(_ fd: Int32, _ size: TerminalSize) throws {
        guard size.cols > 0 && size.rows > 0 else {
            throw SproutError(.invalidArgument, "terminal size must be at least 1x1, got \(size.cols)x\(size.rows)")
        }
        var ws = winsize(ws_row: size.rows, ws_col: size.cols, ws_xpixel: 0, ws_ypixel: 0)
        try sysCall("resize terminal") { ioctl(fd, UInt(TIOCSWINSZ), &ws) }
    }
}
