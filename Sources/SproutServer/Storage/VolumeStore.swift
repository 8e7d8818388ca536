import Glibc
import SproutBlocking
import SproutCore
import SproutHost
import SproutRuntime
import SproutSystem

/// Volumes on this host. Each is an ext4 file system in a sparse image file
/// of its size (`DATA/volumes/ID.ext4`: the host's disk holds only what was
/// written, and a write past the size is ENOSPC inside the volume, nowhere
/// else), loop-mounted at `/run/sprout/volumes/INSTANCE/ID` while this server
/// runs. `INSTANCE` is a shared mount (a bind of itself) this server makes
/// before its runtime's mount namespace, so mounts made later appear in it
/// too, and removes at shutdown; sandboxes bind the mount point. Everything is on the host, so a sandbox's runtime, a second
/// sandbox and the files API see one file system.
actor VolumeStore {
    static let sharedRoot = "/run/sprout/volumes"
    /// Smallest and largest volume, MiB (ext4 with its journal needs a few MiB).
    static let sizeRangeMB = 16...(16 << 20)
    /// The volume's root and what the files API creates belong to the
    /// `user` account of Sprout's envs (and E2B's), uid and gid 1000.
    static let owner: (uid: uid_t, gid: gid_t) = (1000, 1000)

    let imageDirectory: String
    let mountRoot: String
    private var mounted: Set<String> = []
    /// Volumes being moved to another node of a fleet: not mounted again
    /// here until the move ends (`endMove`, or the volume's removal). Kept
    /// in memory: a restart ends a move left half done.
    private var moving: Set<String> = []

    init(dataDirectory: String, instance: String) {
        imageDirectory = dataDirectory + "/volumes"
        mountRoot = Self.mountRoot(instance)
    }

    static func mountRoot(_ instance: String) -> String { "\(sharedRoot)/\(instance)" }

    func imagePath(_ id: String) -> String { "\(imageDirectory)/\(id).ext4" }
    nonisolated func mountPoint(_ id: String) -> String { "\(mountRoot)/\(id)" }

    /// Before the runtime's mount namespace is made.
    static func prepare(instance: String) async throws {
        try await HostMounts.share(mountRoot(instance))
    }

    /// Unmounts everything under the instance's folder, the folder's own
    /// bind last, and removes it: at shutdown, or when a start fails after `prepare`.
    static func release(instance: String) async { await release(root: mountRoot(instance)) }

    private static func release(root: String) async {
        _ = try? await onThread {
            for mount in FileSystem.mounts(under: root) { FileSystem.unmount(mount) }
            // The volumes' mount points, empty once unmounted (rmdir removes nothing else).
            for point in (try? FileSystem.children(root)) ?? [] { rmdir(root + "/" + point) }
            rmdir(root)
        }
    }

    /// Makes the volume's file system and mounts it.
    func create(_ id: String, sizeMB: Int) async throws {
        let image = imagePath(id)
        try FileSystem.makeDirectories(imageDirectory, mode: 0o700)
        do {
            try await onThread {
                let fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw SproutError.system("create \(image)") }
                defer { close(fd) }
                try sysCall("size \(image)") { ftruncate(fd, off_t(sizeMB) << 20) }
            }
            let owner = "\(Self.owner.uid):\(Self.owner.gid)"
            // No reserved blocks: the size asked for is the size writable.
            // The journal stays small (ext4 would give a large volume up to 1 GiB of it).
            let journal = sizeMB >= 4096 ? ["-J", "size=64"] : []
            try await HostCommand.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=\(owner)", "-L", String(id.suffix(16))] + journal + [image],
                                      timeout: .seconds(120))
            let point = try await mount(id)
            try? FileSystem.removeTree(point + "/lost+found")
        } catch {
            await unmount(id)
            unlink(image)
            throw error
        }
    }

    /// The volume's mount point, mounting it first if this server has not.
    @discardableResult
    func mount(_ id: String) async throws -> String {
        let point = mountPoint(id)
        guard !moving.contains(id) else { throw SproutError(.conflict, "volume \(id) is being moved to another node") }
        if mounted.contains(id) { return point }
        guard FileSystem.isRegularFile(imagePath(id)) else { throw SproutError(.notFound, "the file system of volume \(id) is missing") }
        try FileSystem.makeDirectories(point, mode: 0o755)
        // A mount left by a server of this data directory that was killed is reused.
        if !FileSystem.mounts(under: point).contains(point) {
            try await HostCommand.run(["mount", "-o", "loop,nosuid,nodev", imagePath(id), point], timeout: .seconds(60))
            // Direct I/O from the loop device to the image: no second copy in
            // the host's page cache, and fsync-heavy writes several times faster
            // (docs/performance.md). Where the host's file system refuses it,
            // the volume works without.
            let device = (try? await HostCommand.run(["losetup", "--associated", imagePath(id), "--output", "NAME", "--noheadings"]))?
                .split(separator: "\n").first.map { String($0).trimmed }
            if let device, !device.isEmpty { _ = try? await HostCommand.capture(["losetup", "--direct-io=on", device]) }
        }
        mounted.insert(id)
        return point
    }

    func unmount(_ id: String) async {
        let point = mountPoint(id)
        await onThreadIgnoringErrors {
            for mount in FileSystem.mounts(under: point) { FileSystem.unmount(mount) }
            rmdir(point)
        }
        mounted.remove(id)
    }

    /// Unmounts and removes the volume's file system.
    func remove(_ id: String) async {
        await unmount(id)
        unlink(imagePath(id))
        moving.remove(id)
    }

    /// Starts moving volume `id` off this host: it is mounted no more, its
    /// file system written out and unmounted; returns a new folder holding
    /// (a link to) its image, for the caller to store and remove.
    func beginMove(_ id: String) async throws -> String {
        guard !moving.contains(id) else { throw SproutError(.conflict, "volume \(id) is being moved already") }
        guard FileSystem.isRegularFile(imagePath(id)) else { throw SproutError(.notFound, "the file system of volume \(id) is missing") }
        moving.insert(id)
        let point = mountPoint(id)
        let folder = "\(imageDirectory)/.export-\(id)"
        do {
            // What is written to it reaches the image before the copy (a paused sandbox's bind may keep it mounted).
            if mounted.contains(id) { try await HostCommand.run(["sync", "--file-system", point], timeout: .seconds(300)) }
            await unmount(id)
            try? FileSystem.removeTree(folder)
            try FileSystem.makeDirectories(folder, mode: 0o700)
            try sysCall("link \(id)") { link(imagePath(id), "\(folder)/\(id).ext4") }
            return folder
        } catch {
            try? FileSystem.removeTree(folder)
            moving.remove(id)
            throw error
        }
    }

    /// The move of volume `id` ended without it leaving: it mounts here again.
    func endMove(_ id: String) { moving.remove(id) }

    /// Takes in volume `id` from another node: `fill` makes `folder` (a
    /// path that does not exist yet) hold its image, which becomes this
    /// host's, mounted. Nothing is left when it fails.
    func adopt(_ id: String, fill: (_ folder: String) async throws -> Void) async throws {
        let image = imagePath(id)
        guard !FileSystem.exists(image) else { throw SproutError(.alreadyExists, "volume \(id) is on this node already") }
        try FileSystem.makeDirectories(imageDirectory, mode: 0o700)
        let folder = "\(imageDirectory)/.import-\(id)"
        try? FileSystem.removeTree(folder)
        defer { try? FileSystem.removeTree(folder) }
        do {
            try await fill(folder)
            try sysCall("adopt \(id)") { rename("\(folder)/\(id).ext4", image) }
            try await mount(id)
        } catch {
            await unmount(id)
            unlink(image)
            throw error
        }
    }

    /// At shutdown: every volume, and the instance's folder.
    func unmountAll() async {
        mounted = []
        await Self.release(root: mountRoot)
    }

    /// Bytes used and the file system's size, if mounted.
    nonisolated func usage(_ id: String) -> (used: Int64, size: Int64)? {
        var st = statvfs()
        let point = mountPoint(id)
        guard FileSystem.mounts(under: point).contains(point), statvfs(point, &st) == 0 else { return nil }
        let size = Int64(st.f_blocks) * Int64(st.f_frsize)
        return (size - Int64(st.f_bfree) * Int64(st.f_frsize), size)
    }

    private func onThreadIgnoringErrors(_ body: @escaping @Sendable () -> Void) async {
        _ = try? await onThread { body() }
    }
}
