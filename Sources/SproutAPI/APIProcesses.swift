#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// Processes and files in a sandbox.
extension API {
    public struct Exec: Codable, Sendable {
        public var cmd: [String]?
        public var shell: String?
        public var cwd: String?
        public var env: [String: String]?
        /// Bytes for standard input (base64); stdin is closed after them.
        public var stdin: String?
        public var tag: String?
        /// Run as this user of the sandbox (default root).
        public var user: String?
        /// Answer once the process has started, leaving it running; its
        /// output is read later with `GET .../processes/{id}/output`.
        public var detach: Bool?

        public init(cmd: [String]? = nil, shell: String? = nil, cwd: String? = nil, env: [String: String]? = nil,
                    stdin: [UInt8]? = nil, tag: String? = nil, user: String? = nil, detach: Bool? = nil) {
            self.user = user
            self.detach = detach
            self.cmd = cmd
            self.shell = shell
            self.cwd = cwd
            self.env = env
            self.stdin = stdin.map { Data($0).base64EncodedString() }
            self.tag = tag
        }
    }

    /// `POST /v1/sandboxes/{id}/files/xattrs`: sets and removes `user.*`
    /// extended attributes of a file.
    public struct Xattrs: Codable, Sendable {
        public var path: String
        public var set: [String: String]?
        public var remove: [String]?
        public init(path: String, set: [String: String]? = nil, remove: [String]? = nil) {
            self.path = path
            self.set = set
            self.remove = remove
        }
    }

    /// What a client sends as text on a streamed exec (WebSocket
    /// `GET /v1/sandboxes/{id}/exec`), besides its input as binary messages.
    public struct ExecControl: Codable, Sendable {
        /// The input has ended: the process's standard input is closed.
        public var endOfInput: Bool?
        public var signal: Int32?
        public init(endOfInput: Bool? = nil, signal: Int32? = nil) {
            self.endOfInput = endOfInput
            self.signal = signal
        }
    }

    /// One line of an exec's NDJSON stream. Exactly one field is set.
    public struct ExecEvent: Codable, Sendable {
        public var started: Process?
        /// Base64 of the bytes.
        public var stdout: String?
        public var stderr: String?
        public var exit: Exit?
        public var error: ErrorDetail?

        public init(started: Process? = nil, stdout: [UInt8]? = nil, stderr: [UInt8]? = nil, exit: Exit? = nil, error: ErrorDetail? = nil) {
            self.started = started
            self.stdout = stdout.map { Data($0).base64EncodedString() }
            self.stderr = stderr.map { Data($0).base64EncodedString() }
            self.exit = exit
            self.error = error
        }

        public var stdoutBytes: [UInt8]? { stdout.flatMap { Data(base64Encoded: $0) }.map { Array($0) } }
        public var stderrBytes: [UInt8]? { stderr.flatMap { Data(base64Encoded: $0) }.map { Array($0) } }
    }

    public struct Signal: Codable, Sendable {
        public var signal: Int32
        public init(signal: Int32) { self.signal = signal }
    }

    public struct Entries: Codable, Sendable {
        public var entries: [FileEntry]
        public init(entries: [FileEntry]) { self.entries = entries }
    }

    /// How a process ended: `code` for a normal exit, `signal` when a signal ended it.
    public struct Exit: Codable, Sendable, Equatable {
        public var code: Int32?
        public var signal: Int32?
        public init(code: Int32? = nil, signal: Int32? = nil) {
            self.code = code
            self.signal = signal
        }
    }

    /// A process in a sandbox (`GET .../processes`, an exec's `started` event).
    public struct Process: Codable, Sendable, Equatable {
        /// `p1`, `p2`, ...: the handle for output, signals and stdin.
        public var id: String
        public var pid: Int32
        public var tag: String?
        public var cmd: [String]
        public var cwd: String
        public var pty: Bool
        /// Seconds since the Unix epoch.
        public var startedAt: Double
        /// Set once the process has ended.
        public var exit: Exit?

        public init(id: String, pid: Int32, tag: String?, cmd: [String], cwd: String, pty: Bool, startedAt: Double, exit: Exit?) {
            self.id = id
            self.pid = pid
            self.tag = tag
            self.cmd = cmd
            self.cwd = cwd
            self.pty = pty
            self.startedAt = startedAt
            self.exit = exit
        }
    }

    /// What a finished exec produced (the client collects it from the stream).
    public struct Output: Sendable, Equatable {
        public var stdout: [UInt8]
        public var stderr: [UInt8]
        public var exit: Exit
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

        public init(stdout: [UInt8] = [], stderr: [UInt8] = [], exit: Exit = Exit()) {
            self.stdout = stdout
            self.stderr = stderr
            self.exit = exit
        }
    }

    /// A file system entry in a sandbox.
    public struct FileEntry: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable { case file, dir, symlink, other }
        public var path: String
        public var name: String
        public var type: Kind
        public var size: Int64
        /// Permission bits.
        public var mode: UInt32
        /// Seconds since the Unix epoch.
        public var mtime: Double
        /// Where a symlink points.
        public var target: String?
        /// The owner and group, as numbers and as the sandbox's names for them.
        public var uid: UInt32?
        public var gid: UInt32?
        public var owner: String?
        public var group: String?
        /// The file's `user.*` extended attributes whose values are text.
        public var xattrs: [String: String]?

        public init(
            path: String, name: String, type: Kind, size: Int64, mode: UInt32, mtime: Double, target: String?,
            uid: UInt32? = nil, gid: UInt32? = nil, owner: String? = nil, group: String? = nil, xattrs: [String: String]? = nil
        ) {
            self.path = path
            self.name = name
            self.type = type
            self.size = size
            self.mode = mode
            self.mtime = mtime
            self.target = target
            self.uid = uid
            self.gid = gid
            self.owner = owner
            self.group = group
            self.xattrs = xattrs
        }
    }
}
