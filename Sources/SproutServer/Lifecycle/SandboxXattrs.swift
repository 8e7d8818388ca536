import CSprout
import Glibc
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Extended attributes of a sandbox's files, wherever they can be kept.
///
/// The agent sets them inside the sandbox. Debian's runsc (release
/// 20221219) answers EOPNOTSUPP for any xattr on its gofer-served root file
/// system (only its in-sandbox tmpfs mounts keep them), so under gVisor the
/// server keeps them on the file's copy in the sandbox's writable layer on the
/// host — the same inode the sandbox's file is — resolved beneath that layer
/// (openat2 RESOLVE_IN_ROOT: no `..` or symlink of the sandbox's making leads
/// out of it).
struct SandboxXattrs: Sendable {
    /// Whether the runtime's root file system keeps no xattrs of its own (gVisor).
    let onHost: Bool
    /// The sandbox's writable layer on the host.
    let upper: String
    let sandbox: String


    /// Writes `bytes` with `request.xattrs` (atomically with the file where the
    /// sandbox keeps them; just after it under gVisor).
    func write(_ bytes: [UInt8], _ request: WriteRequest, agent: AgentClient) async throws {
        guard onHost, let xattrs = request.xattrs, !xattrs.isEmpty else {
            try await agent.write(bytes, request)
            return
        }
        for (name, value) in xattrs { try Self.validate(name, value) }
        var plain = request
        plain.xattrs = nil
        try await agent.write(bytes, plain)
        _ = try await update(request.path, set: xattrs, remove: [], agent: agent)
    }

    /// An upload for `request`; call `finished` after it completes.
    func openWrite(_ request: WriteRequest, agent: AgentClient) async throws -> FileUpload {
        guard onHost, let xattrs = request.xattrs, !xattrs.isEmpty else { return try await agent.openWrite(request) }
        for (name, value) in xattrs { try Self.validate(name, value) }
        var plain = request
        plain.xattrs = nil
        return try await agent.openWrite(plain)
    }

    func finished(_ request: WriteRequest, agent: AgentClient) async throws {
        guard onHost, let xattrs = request.xattrs, !xattrs.isEmpty else { return }
        _ = try await update(request.path, set: xattrs, remove: [], agent: agent)
    }

    /// Sets and removes attributes; returns the file as it is after.
    func update(_ path: String, set: [String: String], remove: [String], agent: AgentClient) async throws -> FileInfo {
        for (name, value) in set { try Self.validate(name, value) }
        for name in remove { try Self.validate(name, "") }
        do {
            return try await agent.setXattrs(path, set: set, remove: remove)
        } catch let error as SproutError where onHost && error.code == .unavailable {
            // Host syscalls of microseconds: done where the caller is.
            do {
                try hostUpdate(path, set: set, remove: remove)
            } catch let missing as SproutError where missing.code == .notFound {
                // A file only in the env's layers: opening it for writing (and
                // writing nothing) copies it up into the writable layer.
                let info = try await agent.stat(path)
                guard info.type == .file || info.type == .dir else { throw missing }
                let open = info.type == .file ? "exec 3>>\"$1\"" : "test -d \"$1\" && touch -c -m -r \"$1\" \"$1\""
                _ = try await agent.run(ProcessSpec(cmd: ["/bin/sh", "-c", open, "sh", path]))
                try hostUpdate(path, set: set, remove: remove)
            }
            return try await fill(try await agent.stat(path))
        }
    }

    /// `info` with the attributes kept on the host, when the agent saw none.
    func fill(_ info: FileInfo) async throws -> FileInfo {
        guard onHost, info.xattrs == nil, info.type != .symlink else { return info }
        var filled = info
        filled.xattrs = hostRead(info.path)
        return filled
    }

    func fill(_ infos: [FileInfo]) async throws -> [FileInfo] {
        guard onHost else { return infos }
        var out: [FileInfo] = []
        for info in infos { out.append(try await fill(info)) }
        return out
    }

    static func validate(_ name: String, _ value: String) throws { try ExtendedAttributes.validate(name, value: value) }

    // MARK: On the host

    /// Runs `body` with `/proc/self/fd/N` naming the sandbox file `path` in the writable layer.
    private func withHostFile<T>(_ path: String, _ body: (String) throws -> T) throws -> T {
        let root = open(upper, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard root >= 0 else { throw SproutError.system("open the writable layer of \(sandbox)") }
        defer { close(root) }
        let fd = csprout_open_path_in_root(root, path)
        guard fd >= 0 else {
            let e = errno
            if e == ENOENT { throw SproutError(.notFound, "\(path) is not in the sandbox's writable layer") }
            throw SproutError.system("open \(path) in the writable layer", errno: e)
        }
        defer { close(fd) }
        return try body("/proc/self/fd/\(fd)")
    }

    private func hostUpdate(_ path: String, set: [String: String], remove: [String]) throws {
        try withHostFile(path) { proc in
            for (name, value) in set.sorted(by: { $0.key < $1.key }) {
                let bytes = Array(value.utf8)
                guard setxattr(proc, name, bytes, bytes.count, 0) == 0 else { throw SproutError.system("set \(name) on \(path)") }
            }
            for name in remove where removexattr(proc, name) != 0 && errno != ENODATA {
                throw SproutError.system("remove \(name) from \(path)")
            }
        }
    }

    private func hostRead(_ path: String) -> [String: String]? {
        // The /proc link names the layer's file itself (never a symlink: those are skipped).
        (try? withHostFile(path) { ExtendedAttributes.read($0, followLinks: true) }) ?? nil
    }
}
