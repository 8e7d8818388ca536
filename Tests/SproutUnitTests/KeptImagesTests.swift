import Foundation
@testable import SproutServer
import SproutSystem
import Testing

@Suite("Unit: kept memory images")
struct KeptImagesTests {
    /// A sandbox directory holding a fresh `image` folder of `bytes` written bytes.
    static func checkpoint(_ root: String, _ sandbox: String, bytes: Int) throws -> (sandboxDirectory: String, image: String) {
        let directory = root + "/" + sandbox
        try FileSystem.makeDirectories(directory + "/image")
        try Data(repeating: 7, count: bytes).write(to: URL(fileURLWithPath: directory + "/image/checkpoint.img"))
        return (directory, directory + "/image")
    }

    @Test("within the budget the newest are kept, the oldest dropped first; a resume takes only the image it asks for; a stale copy is removed; too big is never kept")
    func budget() async throws {
        let root = try FileSystem.makeTemporaryDirectory(prefix: "sprout-kept")
        defer { try? FileSystem.removeTree(root) }
        let kept = KeptImages(budget: 3 << 20)
        for (sandbox, image) in [("a", "img-a"), ("b", "img-b"), ("c", "img-c")] {
            let made = try Self.checkpoint(root, sandbox, bytes: 1 << 20)
            await kept.keep(sandbox: sandbox, image: image, directory: made.image, sandboxDirectory: made.sandboxDirectory)
            #expect(!FileSystem.exists(made.image) && FileSystem.isDirectory(KeptImages.path(made.sandboxDirectory)))
        }
        // Over the budget (3 MiB of data plus the files' own blocks): the oldest, a's, goes.
        #expect(!FileSystem.exists(KeptImages.path(root + "/a")) && FileSystem.isDirectory(KeptImages.path(root + "/c")))
        #expect(await kept.usage.images == 2)
        // Another image of b (a newer pause elsewhere): not taken, and b's stale copy goes.
        #expect(await kept.take(sandbox: "b", image: "img-other", sandboxDirectory: root + "/b") == nil)
        #expect(!FileSystem.exists(KeptImages.path(root + "/b")))
        // c's own image is taken: the caller has it now.
        #expect(await kept.take(sandbox: "c", image: "img-c", sandboxDirectory: root + "/c") == KeptImages.path(root + "/c"))
        let count = await kept.usage.images
        #expect(count == 0 && FileSystem.isRegularFile(KeptImages.path(root + "/c") + "/checkpoint.img"))
        // One bigger than the whole budget is removed, never kept.
        let big = try Self.checkpoint(root, "d", bytes: 4 << 20)
        await kept.keep(sandbox: "d", image: "img-d", directory: big.image, sandboxDirectory: big.sandboxDirectory)
        let left = await kept.usage.bytes
        #expect(!FileSystem.exists(big.image) && !FileSystem.exists(KeptImages.path(big.sandboxDirectory)) && left == 0)
    }
}
