import Glibc
import SproutCore
import SproutSystem

/// The newest memory images' files, kept whole as runsc wrote them, so that
/// a resume on this host restores from them at once instead of writing the
/// image again from its chunks (a read, a decode and a SHA-256 of every
/// byte: ≈ 40 ms for an idle shell, `docs/performance.md`). A cache within
/// `budget` bytes, the oldest dropped first: every image is in the image
/// store all the same, and a restart forgets what was kept (a resume then
/// removes the stale copy and reassembles). Each is in its sandbox's
/// directory (`kept-image`), so a sandbox's removal takes its copy with it.
actor KeptImages {
    let budget: Int64
    private var kept: [(sandbox: String, image: String, bytes: Int64, path: String)] = []  // oldest first
    private var total: Int64 = 0

    init(budget: Int64) { self.budget = budget }

    static func path(_ sandboxDirectory: String) -> String { sandboxDirectory + "/kept-image" }

    /// Keeps `directory` (image `image`'s files, just stored) as the
    /// sandbox's kept copy, when it fits the budget; otherwise removes it.
    func keep(sandbox: String, image: String, directory: String, sandboxDirectory: String) {
        let bytes = FileSystem.allocatedBytes(directory)
        let target = Self.path(sandboxDirectory)
        forget(sandbox, removing: target)
        guard bytes <= budget, rename(directory, target) == 0 else {
            try? FileSystem.removeTree(directory)
            return
        }
        kept.append((sandbox, image, bytes, target))
        total += bytes
        while total > budget, let oldest = kept.first {
            kept.removeFirst()
            total -= oldest.bytes
            try? FileSystem.removeTree(oldest.path)
        }
    }

    /// The kept copy of `image` for the sandbox, now the caller's (it
    /// removes it once restored); nil when there is none, after removing
    /// any stale copy.
    func take(sandbox: String, image: String, sandboxDirectory: String) -> String? {
        let path = Self.path(sandboxDirectory)
        guard let index = kept.firstIndex(where: { $0.sandbox == sandbox }), kept[index].image == image, FileSystem.isDirectory(path) else {
            forget(sandbox, removing: path)
            return nil
        }
        total -= kept.remove(at: index).bytes
        return path
    }

    /// A sandbox that ended (its directory, and the copy with it, removed).
    func forget(_ sandbox: String) {
        if let index = kept.firstIndex(where: { $0.sandbox == sandbox }) { total -= kept.remove(at: index).bytes }
    }

    private func forget(_ sandbox: String, removing path: String) {
        if let index = kept.firstIndex(where: { $0.sandbox == sandbox }) { total -= kept.remove(at: index).bytes }
        if FileSystem.exists(path) { try? FileSystem.removeTree(path) }
    }

    /// What is kept now, for `/metrics` and tests.
    var usage: (images: Int, bytes: Int64) { (kept.count, total) }
}
