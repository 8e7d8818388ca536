import Glibc
import SproutCore
import SproutHost
import SproutSystem
import SproutBlocking

/// The root file systems env chains start from; `BaseImages` is the real one.
public protocol BaseProvider: Sendable {
    /// The root directory of base `name`, building it first if needed.
    func ensure(_ name: String, progress: @escaping @Sendable (String) -> Void) async throws -> String
    func path(_ name: String) -> String
}

/// The built-in root file systems every env chain starts from:
/// `empty` (busybox), `debian` (debootstrap minbase, bookworm), `base`
/// (`debian` with what E2B's base template offers a program: python3 and pip,
/// git, curl, sudo, and the user `user`, uid 1000, with passwordless sudo)
/// and `scratch` (nothing but the mount points: what an image's layers go on).
/// Built once into the cache directory, atomically (temp dir + rename), under
/// a host-wide lock so two servers sharing a cache never build twice.
public struct BaseImages: BaseProvider {
    public static let names = ["empty", "debian", "base", "scratch"]
    /// What `base` adds to minbase.
    static let basePackages = [
        "python3", "python3-pip", "python3-venv", "git", "curl", "ca-certificates", "ncurses-bin", "sudo", "procps", "less",
    ]
    public let cacheDirectory: String

    public init(cacheDirectory: String) {
        self.cacheDirectory = cacheDirectory
    }

    public func path(_ name: String) -> String { "\(cacheDirectory)/bases/\(name)" }

    public func isBuilt(_ name: String) -> Bool { FileSystem.isDirectory(path(name)) }

    /// The root directory of base `name`, building it first if needed.
    /// `progress` receives human-readable lines while a build runs.
    public func ensure(_ name: String, progress: @escaping @Sendable (String) -> Void = { _ in }) async throws -> String {
        guard Self.names.contains(name) else { throw SproutError(.notFound, "no base env named '\(name)'") }
        let target = path(name)
        if FileSystem.isDirectory(target) { return target }
        try FileSystem.makeDirectories(cacheDirectory + "/bases")
        let lockFD = open("\(cacheDirectory)/bases/.\(name).lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw SproutError.system("lock \(name)") }
        defer { close(lockFD) }
        // flock blocks: wait for it on a thread of its own.
        try await onThread { while flock(lockFD, LOCK_EX) != 0 && errno == EINTR {} }
        if FileSystem.isDirectory(target) { return target }  // built while we waited
        let temp = "\(cacheDirectory)/bases/.\(name).build-\(Identifiers.random(length: 6))"
        do {
            switch name {
            case "empty": try await buildBusybox(temp)
            case "scratch": try Self.mountPoints(temp)
            case "base":
                try await buildDebian(temp, include: Self.basePackages, progress: progress)
                try addUser(temp)
            default: try await buildDebian(temp, progress: progress)
            }
            try sysCall("rename \(temp)") { rename(temp, target) }
        } catch {
            try? FileSystem.removeTree(temp)
            throw error
        }
        progress("base env \(name) ready")
        return target
    }

    private func buildBusybox(_ root: String) async throws {
        guard let busybox = ["/bin/busybox", "/usr/bin/busybox"].first(where: { (path: String) in access(path, X_OK) == 0 }) else {
            throw SproutError(.unavailable, "busybox is not installed: apt-get install busybox-static")
        }
        try Self.mountPoints(root)
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "root", "code", "var/tmp"] {
            try FileSystem.makeDirectories("\(root)/\(dir)")
        }
        chmod("\(root)/root", 0o700)
        try await HostCommand.run(["cp", busybox, "\(root)/bin/busybox"])
        let applets = try await HostCommand.run([busybox, "--list-full"])
        for applet in applets.split(separator: "\n") where !applet.isEmpty && applet != "bin/busybox" {
            let depth = applet.split(separator: "/").count - 1
            let target = String(repeating: "../", count: depth) + "bin/busybox"
            symlink(depth == 1 && applet.hasPrefix("bin/") ? "busybox" : target, "\(root)/\(applet)")
        }
        try FileSystem.writeAtomically("\(root)/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        try FileSystem.writeAtomically("\(root)/etc/group", "root:x:0:\n")
        for file in ["hosts", "hostname", "resolv.conf"] {
            try FileSystem.writeAtomically("\(root)/etc/\(file)", "")
        }
    }

    /// What every root needs before anything is in it: the directories the
    /// runtime mounts on and the sandbox's identity files go in.
    static func mountPoints(_ root: String) throws {
        for dir in ["etc", "proc", "sys", "dev", "tmp"] { try FileSystem.makeDirectories("\(root)/\(dir)") }
        chmod("\(root)/tmp", 0o1777)
    }

    private func buildDebian(_ root: String, include: [String] = [], progress: @escaping @Sendable (String) -> Void) async throws {
        guard access("/usr/sbin/debootstrap", X_OK) == 0 else {
            throw SproutError(.unavailable, "debootstrap is not installed: apt-get install debootstrap")
        }
        let mirror = Self.hostMirror() ?? "http://deb.debian.org/debian"
        let extra = include.isEmpty ? [] : ["--include=" + include.joined(separator: ",")]
        progress("building a base env: debootstrap --variant=minbase \(extra.joined()) bookworm from \(mirror) (\(include.isEmpty ? "about 30 s" : "about a minute"))")
        let output = try await HostCommand.capture(["debootstrap", "--variant=minbase"] + extra + ["bookworm", root, mirror], timeout: .seconds(900))
        for line in output.stdout.split(separator: "\n").suffix(5) { progress(String(line)) }
        guard output.status == 0 else {
            throw SproutError(.internal, "debootstrap failed (exit \(output.status)): \(String(output.stderr.suffix(1500)).trimmed)")
        }
        try FileSystem.makeDirectories("\(root)/code")
        // Build-time noise that would differ between two builds.
        for noise in ["var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin", "var/log/bootstrap.log"] {
            unlink("\(root)/\(noise)")
        }
    }

    /// The user E2B's base image has: `user`, uid and gid 1000, home
    /// /home/user from /etc/skel, bash, in group sudo, passwordless sudo.
    /// Written into the account files directly (no chroot: nothing from the
    /// new tree runs on the host). System-wide `pip install` is allowed, as
    /// in E2B's image: a sandbox is the environment to change.
    private func addUser(_ root: String) throws {
        func append(_ file: String, _ line: String) throws {
            let path = "\(root)/etc/\(file)"
            let old = (try? Descriptor.readFile(path, limit: 1 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            guard !old.split(separator: "\n").contains(where: { $0.hasPrefix("user:") }) else { return }
            try FileSystem.writeAtomically(path, old + (old.isEmpty || old.hasSuffix("\n") ? "" : "\n") + line + "\n")
        }
        try append("passwd", "user:x:1000:1000::/home/user:/bin/bash")
        try append("shadow", "user:!:20000:0:99999:7:::")
        try append("group", "user:x:1000:")
        try append("gshadow", "user:!::")
        chmod("\(root)/etc/shadow", 0o640)
        chmod("\(root)/etc/gshadow", 0o640)
        // Into the sudo group (members are the fourth field).
        let groupPath = "\(root)/etc/group"
        let groups = String(decoding: try Descriptor.readFile(groupPath, limit: 1 << 20), as: UTF8.self)
        let updated = groups.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard line.hasPrefix("sudo:") else { return String(line) }
            return line.hasSuffix(":") ? line + "user" : line + ",user"
        }
        try FileSystem.writeAtomically(groupPath, updated.joined(separator: "\n"))
        try FileSystem.makeDirectories("\(root)/etc/sudoers.d")
        try FileSystem.writeAtomically("\(root)/etc/sudoers.d/user", "user ALL=(ALL:ALL) NOPASSWD: ALL\n")
        chmod("\(root)/etc/sudoers.d/user", 0o440)
        try FileSystem.writeAtomically("\(root)/etc/pip.conf", "[global]\nbreak-system-packages = true\n")
        let home = "\(root)/home/user"
        try FileSystem.makeDirectories(home)
        for name in (try? FileSystem.children("\(root)/etc/skel")) ?? [] {
            let bytes = try Descriptor.readFile("\(root)/etc/skel/\(name)", limit: 1 << 20)
            try FileSystem.writeAtomically("\(home)/\(name)", String(decoding: bytes, as: UTF8.self))
            try sysCall("chown \(name)") { chown("\(home)/\(name)", 1000, 1000) }
        }
        chmod(home, 0o750)
        try sysCall("chown \(home)") { chown(home, 1000, 1000) }
    }

    /// The Debian mirror the host itself uses, if it names one.
    static func hostMirror() -> String? {
        var files = ["/etc/apt/sources.list"]
        files += ((try? FileSystem.children("/etc/apt/sources.list.d")) ?? []).map { "/etc/apt/sources.list.d/\($0)" }
        for file in files {
            guard let text = try? Descriptor.readFile(file, limit: 1 << 20) else { continue }
            for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
                let words = line.split(separator: " ")
                if words.first == "deb", let url = words.dropFirst().first(where: { $0.hasPrefix("http") }),
                    url.hasSuffix("/debian") || url.hasSuffix("/debian/")
                {
                    return String(url)
                }
                if words.first == "URIs:", let url = words.dropFirst().first, url.hasSuffix("/debian") || url.hasSuffix("/debian/") {
                    return String(url)
                }
            }
        }
        return nil
    }
}
