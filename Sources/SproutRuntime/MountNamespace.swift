import Glibc
import SproutCore
import SproutHost
import SproutSystem

/// A private mount namespace in which Sprout mounts sandbox root file systems
/// and starts the container runtime.
///
/// Two reasons. gVisor's runsc (Debian's 2022 build) refuses
/// `--network=sandbox` when `/proc/sys/net/core/rmem_default` exists, which on
/// new kernels it does in every network namespace; in this namespace
/// `/proc/sys` is a tmpfs holding only the real `vm` and `kernel` directories.
/// And overlay mounts made here are invisible on the host and die with the
/// last process using them, so a crash cannot strand them in the host's
/// mount table.
///
/// It is a slave of the host's mount tree, so the network namespaces that
/// `ip netns add` bind-mounts under the (shared) `/run/netns` after the
/// namespace was made still appear in it; nothing propagates back.
///
/// The namespace is held by a small shell process whose stdin is a pipe from
/// the server: when the server exits, however it exits, the holder does too.
public final class MountNamespace: @unchecked Sendable {
    public let holderPID: pid_t
    private let lifeline: Int32

    static let setupScript = """
        set -e
        mount -t tmpfs -o mode=0700 sprout-procsys /mnt
        mkdir /mnt/vm /mnt/kernel
        mount --bind /proc/sys/vm /mnt/vm
        mount --bind /proc/sys/kernel /mnt/kernel
        mount -t tmpfs -o mode=0555 sprout-sys /proc/sys
        mkdir /proc/sys/vm /proc/sys/kernel
        mount --bind /mnt/vm /proc/sys/vm
        mount --bind /mnt/kernel /proc/sys/kernel
        umount -l /mnt
        echo ready
        read _ || true
        """

    public init() throws {
        let input = try Spawn.pipe()
        let output = try Spawn.pipe()
        var options = Spawn.Options()
        options.stdin = input.read
        options.stdout = output.write
        options.stderr = output.write
        let pid: pid_t
        do {
            pid = try Spawn.spawn(
                path: "/usr/bin/unshare", argv: ["unshare", "--mount", "--propagation", "slave", "/bin/sh", "-c", Self.setupScript],
                env: HostCommand.environment, options: options)
        } catch {
            [input.read, input.write, output.read, output.write].forEach { Glibc.close($0) }
            throw error
        }
        Glibc.close(input.read)
        Glibc.close(output.write)
        defer { Glibc.close(output.read) }
        var line: [UInt8] = []
        var all: [UInt8] = []
        var byte: UInt8 = 0
        while read(output.read, &byte, 1) == 1 {
            all.append(byte)
            if byte == 10 {
                if line == Array("ready".utf8) { break }
                line = []
            } else {
                line.append(byte)
            }
        }
        guard line == Array("ready".utf8) else {
            Glibc.close(input.write)
            waitpid(pid, nil, 0)
            throw SproutError(.unavailable, "cannot set up the runtime mount namespace: \(String(decoding: all, as: UTF8.self).trimmed)")
        }
        holderPID = pid
        lifeline = input.write
    }

    /// The namespace itself, for `Spawn.spawnInMountNamespace`.
    public var path: String { "/proc/\(holderPID)/ns/mnt" }

    /// The argv prefix that runs a command inside the namespace.
    public var enter: [String] { ["nsenter", "--mount=\(path)", "--"] }

    /// Ends the holder. Mounts made in the namespace go with the last process in it.
    public func close() {
        Glibc.close(lifeline)
        var status: Int32 = 0
        while waitpid(holderPID, &status, 0) == -1 && errno == EINTR {}
    }
}
