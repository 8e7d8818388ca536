import Glibc
import SproutAgentProtocol
import SproutCore
import SproutSystem

/// Reads the sandbox's account files on every call: a process inside may add
/// a user at any time (`useradd`), and the files are small.
enum Accounts {
    static let passwdPath = "/etc/passwd"
    static let groupPath = "/etc/group"

    /// The account named `name`; `root` exists even without an /etc/passwd.
    static func find(_ name: String) throws -> Account {
        guard !name.isEmpty, !name.contains(":"), !name.contains("\0"), !name.contains("\n") else {
            throw SproutError(.invalidArgument, "invalid user name '\(name)'")
        }
        guard let entry = passwd().first(where: { $0.name == name }) else {
            if name == "root" { return .root }
            // A user id (an image's `USER 1000`): its line's account, or one of its own.
            if let uid = uid_t(name) { return try find(uid: uid) }
            throw SproutError(.notFound, "no user '\(name)' in this sandbox")
        }
        var account = entry
        account.groups = [entry.gid] + groupEntries().filter { $0.members.contains(Substring(name)) && $0.gid != entry.gid }.map(\.gid)
        return account
    }

    /// The account with user id `uid` (the first such line); a user id with no
    /// line is a nameless account of its own (its name is its number).
    static func find(uid: uid_t) throws -> Account {
        if let entry = passwd().first(where: { $0.uid == uid }) { return try find(entry.name) }
        if uid == 0 { return .root }
        return Account(name: String(uid), uid: uid, gid: gid_t(uid), home: "/", shell: "/bin/sh", groups: [gid_t(uid)])
    }

    /// The account named `name`, or nil for none (the agent's own user).
    static func find(optional name: String?) throws -> Account? {
        guard let name else { return nil }
        let account = try find(name)
        return account.uid == 0 && account.gid == 0 ? nil : account
    }

    /// Names for numeric ids, for file listings.
    struct Names {
        var users: [uid_t: String]
        var groups: [gid_t: String]
        func user(_ uid: uid_t) -> String { users[uid] ?? String(uid) }
        func group(_ gid: gid_t) -> String { groups[gid] ?? String(gid) }
    }

    static func names() -> Names {
        var users: [uid_t: String] = [:]
        for entry in passwd().reversed() { users[entry.uid] = entry.name }
        var groups: [gid_t: String] = [:]
        for entry in groupEntries().reversed() { groups[entry.gid] = entry.name }
        if users[0] == nil { users[0] = "root" }
        if groups[0] == nil { groups[0] = "root" }
        return Names(users: users, groups: groups)
    }

    private static func lines(_ path: String) -> [[Substring]] {
        guard let bytes = try? Descriptor.readFile(path, limit: 8 << 20) else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map {
            $0.split(separator: ":", omittingEmptySubsequences: false)
        }
    }

    private static func passwd() -> [Account] {
        lines(passwdPath).compactMap { f in
            guard f.count >= 7, let uid = uid_t(f[2]), let gid = gid_t(f[3]) else { return nil }
            return Account(name: String(f[0]), uid: uid, gid: gid, home: f[5].isEmpty ? "/" : String(f[5]),
                           shell: f[6].isEmpty ? "/bin/sh" : String(f[6]), groups: [gid])
        }
    }

    private static func groupEntries() -> [(name: String, gid: gid_t, members: [Substring])] {
        lines(groupPath).compactMap { f in
            guard f.count >= 4, let gid = gid_t(f[2]) else { return nil }
            return (String(f[0]), gid, f[3].split(separator: ","))
        }
    }

    /// Gives `path` to `account` (no-op for root); a failure is an error, so
    /// a file never silently stays root's.
    static func chown(_ path: String, to account: Account?) throws {
        guard let account else { return }
        try sysCall("chown \(path)") { lchown(path, account.uid, account.gid) }
    }

    /// Creates the missing directories of `path`, giving each new one to `account`.
    static func makeDirectories(_ path: String, owner account: Account?) throws {
        var missing: [String] = []
        var current = path
        while !current.isEmpty && current != "/" && !FileSystem.exists(current) {
            missing.append(current)
            current = FileService.parent(of: current)
        }
        try FileSystem.makeDirectories(path)
        for dir in missing.reversed() { try chown(dir, to: account) }
    }
}

/// `sprout-agent --exec-as UID GID GROUPS PATH ARGV0 [ARG...]`: the agent
/// re-executes itself to start a process as another user. `posix_spawn`
/// cannot change credentials, and forking a threaded process to call
/// `setuid` is not safe; this small exec in between is.
public enum ExecAs {
    public static let flag = "--exec-as"

    /// The arguments that run `argv` (found at `path`) as `account`.
    static func arguments(agent: String, account: Account, path: String, argv: [String]) -> [String] {
        [agent, flag, String(account.uid), String(account.gid), account.groups.map(String.init).joined(separator: ","), path] + argv
    }

    /// Runs in the re-executed agent: drops to the user and executes the program.
    public static func run(_ args: [String]) -> Never {
        func fail(_ message: String, _ code: Int32 = 127) -> Never {
            try? Descriptor.writeAll(2, Array("sprout-agent: \(message)\n".utf8))
            exit(code)
        }
        guard args.count >= 5, let uid = uid_t(args[0]), let gid = gid_t(args[1]) else {
            fail("usage: --exec-as UID GID GROUPS PATH ARGV0 [ARG...]", 2)
        }
        let groups = args[2].split(separator: ",").compactMap { gid_t($0) }
        let path = args[3]
        let argv = Array(args[4...])
        guard setgroups(groups.count, groups) == 0 else { fail("setgroups: \(String(cString: strerror(errno)))") }
        guard setgid(gid) == 0 else { fail("setgid \(gid): \(String(cString: strerror(errno)))") }
        guard setuid(uid) == 0 else { fail("setuid \(uid): \(String(cString: strerror(errno)))") }
        let cArgv = argv.map { strdup($0) } + [nil]
        execv(path, cArgv)
        fail("cannot run \(path): \(String(cString: strerror(errno)))", errno == ENOENT ? 127 : 126)
    }
}
