import SproutAPI
import SproutAgentClient
import SproutAgentProtocol

// The REST API's own types from the agent's wire types: the agent's protocol
// can change without changing what clients of `/v1` see.

extension API.Exit {
    init(_ exit: ProcessExit) { self.init(code: exit.code, signal: exit.signal) }
}

extension API.Process {
    init(_ process: AgentProcess) {
        self.init(id: process.id, pid: process.pid, tag: process.tag, cmd: process.cmd, cwd: process.cwd, pty: process.pty,
                  startedAt: process.startedAt, exit: process.exit.map(API.Exit.init))
    }
}

extension API.FileEntry {
    init(_ info: FileInfo) {
        self.init(path: info.path, name: info.name, type: Kind(rawValue: info.type.rawValue) ?? .other, size: info.size, mode: info.mode,
                  mtime: info.mtime, target: info.target, uid: info.uid, gid: info.gid, owner: info.owner, group: info.group, xattrs: info.xattrs)
    }
}

extension API.ExecEvent {
    /// One piece of a process's life as a line of an exec stream.
    init(_ output: ProcessOutput) {
        switch output {
        case .stdout(let bytes): self.init(stdout: bytes)
        case .stderr(let bytes): self.init(stderr: bytes)
        case .error(let error): self.init(error: error)
        case .exit(let status): self.init(exit: API.Exit(status))
        }
    }
}
