import Glibc
import SproutCore
import SproutHost
import SproutSystem

/// The root file systems env chains start from; `BaseImages` is the real one.
public protocol BaseProvider: Sendable {
    /// The root directory of base `name`, building it first if needed.
    func ensure(_ name: String, progress: @escaping @Sendable (String) -> Void) async throws -> String
    func path(_ name: String) -> String
}

/// The built-in root file systems every env chain starts from:
/// `empty` (busybox) and `debian` (debootstrap minbase, bookworm).
/// Built once into the cache directory, atomically (temp dir + rename), under
/// a host-wide lock so two servers sharing a cache never build twice.
public struct BaseImages: BaseProvider {
    public static let names = ["empty", "debian"]
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
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "code", "var/tmp"] {
            try FileSystem.makeDirectories("\(root)/\(dir)")
        }
        chmod("\(root)/tmp", 0o1777)
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

    private func buildDebian(_ root: String, progress: @escaping @Sendable (String) -> Void) async throws {
        guard access("/usr/sbin/debootstrap", X_OK) == 0 else {
            throw SproutError(.unavailable, "debootstrap is not installed: apt-get install debootstrap")
        }
        let mirror = Self.hostMirror() ?? "http://deb.debian.org/debian"
        progress("building base env debian: debootstrap --variant=minbase bookworm from \(mirror) (about 30 s)")
        let output = try await HostCommand.capture(["debootstrap", "--variant=minbase", "bookworm", root, mirror], timeout: .seconds(900))
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
