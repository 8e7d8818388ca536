import ArgumentParser
import Dispatch
import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout sandbox shell ID`: an interactive terminal in the sandbox. The
/// local terminal is put in raw mode; window size changes (SIGWINCH) resize
/// the remote terminal.
struct SandboxShell: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "shell", abstract: "Open an interactive terminal.")
    @OptionGroup var client: ClientOptions
    @Argument var id: String
    @Option(help: "Command to run instead of the login shell.") var command: String?

    func run() async throws {
        let size = Self.windowSize() ?? (80, 24)
        let ws = try await client.client().terminal(id, cols: size.0, rows: size.1, command: command)
        let raw = RawTerminal()
        defer { raw.restore() }

        signal(SIGWINCH, SIG_IGN)
        let winch = DispatchSource.makeSignalSource(signal: SIGWINCH, queue: .global())
        winch.setEventHandler {
            if let (cols, rows) = Self.windowSize() {
                Task { try? await ws.send(.text(#"{"resize":{"cols":\#(cols),"rows":\#(rows)}}"#)) }
            }
        }
        winch.resume()
        defer { winch.cancel() }

        // Keystrokes: a thread blocks in read(2) and hands them, in order, to
        // the task that sends them.
        let keys = HandoffQueue<[UInt8]>(limit: 16)
        startThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(0, &buffer, buffer.count)
                if n <= 0 || !keys.push(Array(buffer[0..<n])) { break }
            }
            keys.finish()
        }
        let sender = Task {
            while let chunk = try await keys.next() { try await ws.send(.binary(chunk)) }
        }
        defer { sender.cancel() }
        var exitCode: Int32 = 0
        // Output goes straight to the terminal: small writes to a tty.
        receiving: while let message = try await ws.receive() {
            switch message {
            case .binary(let bytes): try Descriptor.writeAll(1, bytes)
            case .text(let text):
                if let event = try? JSONDecoder().decode(API.ExecEvent.self, from: Data(text.utf8)), let exit = event.exit {
                    ws.close()
                    exitCode = exit.code ?? (128 + (exit.signal ?? 0))
                    break receiving
                }
            }
        }
        raw.restore()
        if exitCode != 0 { throw ExitCode(exitCode) }
    }

    static func windowSize() -> (UInt16, UInt16)? {
        var ws = winsize()
        guard ioctl(1, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0, ws.ws_row > 0 else { return nil }
        return (ws.ws_col, ws.ws_row)
    }
}

/// Puts the local terminal in raw mode while alive (if stdin is a terminal).
final class RawTerminal: @unchecked Sendable {
    private var saved = termios()
    private var active = false

    init() {
        guard isatty(0) == 1, tcgetattr(0, &saved) == 0 else { return }
        var raw = saved
        cfmakeraw(&raw)
        active = tcsetattr(0, TCSANOW, &raw) == 0
    }

    func restore() {
        guard active else { return }
        active = false
        tcsetattr(0, TCSANOW, &saved)
    }
}
