import SproutCore

/// Every operation the agent offers. On the wire: `{"op": "<name>", ...fields}`.
public enum AgentRequest: Sendable {
    case health
    case startProcess(ProcessSpec)
    case attachProcess(ProcessSelector)
    case listProcesses
    case signalProcess(SignalRequest)
    case stat(PathRequest)
    case list(ListRequest)
    case read(PathRequest)
    case write(WriteRequest)
    case mkdir(MakeDirRequest)
    case move(MoveRequest)
    case remove(RemoveRequest)
    case watch(WatchRequest)
    case setXattrs(XattrRequest)
    case setClock(ClockRequest)
    /// Ends the process holding the most memory (never the agent): the sandbox is at its memory limit.
    case killLargest
    /// A user of the sandbox, as its /etc/passwd and /etc/group say now.
    case lookupUser(UserRequest)
    /// Waits until the sandbox holds no TCP connection but this one, then
    /// ends this one with a reset once the client has the answer (before a
    /// checkpoint, which cannot save a connection).
    case quiesce

    /// The operation's name on the wire.
    public var op: String {
        switch self {
        case .health: "health"
        case .startProcess: "process.start"
        case .attachProcess: "process.attach"
        case .listProcesses: "process.list"
        case .signalProcess: "process.signal"
        case .stat: "file.stat"
        case .list: "file.list"
        case .read: "file.read"
        case .write: "file.write"
        case .mkdir: "file.mkdir"
        case .move: "file.move"
        case .remove: "file.remove"
        case .watch: "file.watch"
        case .setXattrs: "file.xattrs"
        case .setClock: "clock.set"
        case .killLargest: "memory.killLargest"
        case .lookupUser: "user.lookup"
        case .quiesce: "net.quiesce"
        }
    }
}

extension AgentRequest: Codable {
    private enum OpKey: String, CodingKey { case op }

    public init(from decoder: Decoder) throws {
        let op = try decoder.container(keyedBy: OpKey.self).decode(String.self, forKey: .op)
        switch op {
        case "health": self = .health
        case "process.start": self = .startProcess(try ProcessSpec(from: decoder))
        case "process.attach": self = .attachProcess(try ProcessSelector(from: decoder))
        case "process.list": self = .listProcesses
        case "process.signal": self = .signalProcess(try SignalRequest(from: decoder))
        case "file.stat": self = .stat(try PathRequest(from: decoder))
        case "file.list": self = .list(try ListRequest(from: decoder))
        case "file.read": self = .read(try PathRequest(from: decoder))
        case "file.write": self = .write(try WriteRequest(from: decoder))
        case "file.mkdir": self = .mkdir(try MakeDirRequest(from: decoder))
        case "file.move": self = .move(try MoveRequest(from: decoder))
        case "file.xattrs": self = .setXattrs(try XattrRequest(from: decoder))
        case "file.remove": self = .remove(try RemoveRequest(from: decoder))
        case "file.watch": self = .watch(try WatchRequest(from: decoder))
        case "clock.set": self = .setClock(try ClockRequest(from: decoder))
        case "memory.killLargest": self = .killLargest
        case "user.lookup": self = .lookupUser(try UserRequest(from: decoder))
        case "net.quiesce": self = .quiesce
        default:
            throw DecodingError.dataCorrupted(.init(codingPath: [OpKey.op], debugDescription: "unknown op '\(op)'"))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: OpKey.self)
        try c.encode(op, forKey: .op)
        switch self {
        case .health, .listProcesses, .killLargest, .quiesce: break
        case .startProcess(let r): try r.encode(to: encoder)
        case .attachProcess(let r): try r.encode(to: encoder)
        case .signalProcess(let r): try r.encode(to: encoder)
        case .stat(let r), .read(let r): try r.encode(to: encoder)
        case .mkdir(let r): try r.encode(to: encoder)
        case .list(let r): try r.encode(to: encoder)
        case .write(let r): try r.encode(to: encoder)
        case .move(let r): try r.encode(to: encoder)
        case .remove(let r): try r.encode(to: encoder)
        case .watch(let r): try r.encode(to: encoder)
        case .setXattrs(let r): try r.encode(to: encoder)
        case .setClock(let r): try r.encode(to: encoder)
        case .lookupUser(let r): try r.encode(to: encoder)
        }
    }
}

/// A terminal's size in character cells.
public struct TerminalSize: Codable, Sendable, Equatable {
    public var cols: UInt16
    public var rows: UInt16
    public init(cols: UInt16, rows: UInt16) {
        self.cols = cols
        self.rows = rows
    }
}

/// What to run. Give `cmd` (an argv) or `shell` (run by `/bin/sh -c`), not both.
public struct ProcessSpec: Codable, Sendable {
    public var cmd: [String]?
    public var shell: String?
    public var cwd: String?
    public var env: [String: String]?
    /// A user-chosen name to find the process by later.
    public var tag: String?
    /// Open a pipe for standard input (otherwise it reads /dev/null).
    public var stdin: Bool?
    /// Run on a pseudo-terminal of this size instead of pipes.
    public var pty: TerminalSize?
    /// Run as this user of the sandbox (its /etc/passwd), with its groups,
    /// HOME and, unless `cwd` says otherwise, starting in its home.
    /// Default: the agent's own user (root).
    public var user: String?

    public init(
        cmd: [String]? = nil, shell: String? = nil, cwd: String? = nil, env: [String: String]? = nil,
        tag: String? = nil, stdin: Bool? = nil, pty: TerminalSize? = nil, user: String? = nil
    ) {
        self.user = user
        self.cmd = cmd
        self.shell = shell
        self.cwd = cwd
        self.env = env
        self.tag = tag
        self.stdin = stdin
        self.pty = pty
    }
}

extension ProcessSpec {
    /// Flushes the sandbox's file systems (before its writable layer is
    /// frozen): the agent's own `sync`, as a root need not have one.
    public static let sync = ProcessSpec(cmd: ["/.sprout/sprout-agent", "--sync"])
}

/// Names a process by its id or its tag.
public struct ProcessSelector: Codable, Sendable {
    public var id: String?
    public var tag: String?
    public init(id: String? = nil, tag: String? = nil) {
        self.id = id
        self.tag = tag
    }
}

public struct SignalRequest: Codable, Sendable {
    public var id: String?
    public var tag: String?
    public var signal: Int32
    public init(id: String? = nil, tag: String? = nil, signal: Int32) {
        self.id = id
        self.tag = tag
        self.signal = signal
    }
}

/// How a process ended: `code` for a normal exit, `signal` when killed by one.
public struct ProcessExit: Codable, Sendable, Equatable {
    public var code: Int32?
    public var signal: Int32?
    public init(code: Int32? = nil, signal: Int32? = nil) {
        self.code = code
        self.signal = signal
    }
}

/// What `run` collects.
public struct ProcessResult: Sendable {
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    public var exit: ProcessExit
    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    public init(stdout: [UInt8], stderr: [UInt8], exit: ProcessExit) {
        self.stdout = stdout
        self.stderr = stderr
        self.exit = exit
    }
}

/// A process the agent started.
public struct AgentProcess: Codable, Sendable {
    public var id: String
    public var pid: Int32
    public var tag: String?
    public var cmd: [String]
    public var cwd: String
    public var pty: Bool
    /// Seconds since the Unix epoch.
    public var startedAt: Double
    /// Set once the process has ended.
    public var exit: ProcessExit?

    public init(id: String, pid: Int32, tag: String?, cmd: [String], cwd: String, pty: Bool, startedAt: Double, exit: ProcessExit?) {
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

public struct UserRequest: Codable, Sendable {
    public var name: String
    public init(name: String) { self.name = name }
}

/// A user of the sandbox, as its own `/etc/passwd` and `/etc/group` say.
public struct Account: Codable, Sendable, Equatable {
    public var name: String
    public var uid: UInt32
    public var gid: UInt32
    public var home: String
    public var shell: String
    /// Supplementary groups (from `/etc/group`), the primary one included.
    public var groups: [UInt32]

    public init(name: String, uid: UInt32, gid: UInt32, home: String, shell: String, groups: [UInt32]) {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
        self.shell = shell
        self.groups = groups
    }

    public static let root = Account(name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/sh", groups: [0])
}

public struct PathRequest: Codable, Sendable {
    public var path: String
    public init(path: String) { self.path = path }
}

public struct ListRequest: Codable, Sendable {
    public var path: String
    /// 1 lists the directory itself; 2 includes its children's entries, and so on.
    public var depth: Int?
    public init(path: String, depth: Int? = nil) {
        self.path = path
        self.depth = depth
    }
}

public struct WriteRequest: Codable, Sendable {
    public var path: String
    /// Permission bits for a new file (default 0644).
    public var mode: UInt32?
    /// The user (a name in the sandbox's /etc/passwd) who owns the file and
    /// any directory the write creates; default the agent's user (root).
    public var owner: String?
    /// Extended attributes set on the file before it takes its name
    /// (full names, such as `user.origin`).
    public var xattrs: [String: String]?
    public init(path: String, mode: UInt32? = nil, owner: String? = nil, xattrs: [String: String]? = nil) {
        self.path = path
        self.mode = mode
        self.owner = owner
        self.xattrs = xattrs
    }
}

/// Sets and removes `user.*` extended attributes of a file.
public struct XattrRequest: Codable, Sendable {
    public var path: String
    public var set: [String: String]?
    public var remove: [String]?
    public init(path: String, set: [String: String]? = nil, remove: [String]? = nil) {
        self.path = path
        self.set = set
        self.remove = remove
    }
}

public struct MakeDirRequest: Codable, Sendable {
    public var path: String
    /// The user who owns every directory this creates (default root).
    public var owner: String?
    public init(path: String, owner: String? = nil) {
        self.path = path
        self.owner = owner
    }
}

public struct MoveRequest: Codable, Sendable {
    public var from: String
    public var to: String
    public init(from: String, to: String) {
        self.from = from
        self.to = to
    }
}

public struct RemoveRequest: Codable, Sendable {
    public var path: String
    /// Remove directories with everything in them.
    public var recursive: Bool?
    public init(path: String, recursive: Bool? = nil) {
        self.path = path
        self.recursive = recursive
    }
}

public struct WatchRequest: Codable, Sendable {
    public var path: String
    public var recursive: Bool?
    public init(path: String, recursive: Bool? = nil) {
        self.path = path
        self.recursive = recursive
    }
}

public struct ClockRequest: Codable, Sendable {
    /// The wall-clock time to set, in nanoseconds since the Unix epoch.
    public var unixNanos: Int64
    public init(unixNanos: Int64) { self.unixNanos = unixNanos }
}

/// A file system entry.
public struct FileInfo: Codable, Sendable, Equatable {
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
        self.uid = uid
        self.gid = gid
        self.owner = owner
        self.group = group
        self.xattrs = xattrs
        self.path = path
        self.name = name
        self.type = type
        self.size = size
        self.mode = mode
        self.mtime = mtime
        self.target = target
    }
}

/// A change seen by `file.watch`.
public struct WatchEvent: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable { case create, write, remove, rename }
    public var type: Kind
    public var path: String
    public var isDir: Bool
    public init(type: Kind, path: String, isDir: Bool) {
        self.type = type
        self.path = path
        self.isDir = isDir
    }
}

/// A process inside the sandbox and the memory it holds.
public struct ProcessMemory: Codable, Sendable, Equatable {
    public var pid: Int32
    public var command: String
    public var rssBytes: Int64
    public init(pid: Int32, command: String, rssBytes: Int64) {
        self.pid = pid
        self.command = command
        self.rssBytes = rssBytes
    }
}
