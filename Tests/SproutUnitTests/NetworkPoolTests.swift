import Glibc
import SproutCore
import SproutRuntime
import SproutSystem
import Testing

@Suite("Unit: network slots")
struct NetworkPoolTests {
    @Test("a slot file appears with its owner in it; release removes it; nothing else is left in the directory")
    func slots() throws {
        let directory = "/tmp/sprout-slots-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(directory) }
        let pool = NetworkPool(directory: directory)
        let first = try pool.allocate(owner: "server-a/sbx_1")
        let second = try pool.allocate(owner: "server-a/sbx_2")
        #expect(first != second)
        #expect(String(decoding: try Descriptor.readFile("\(directory)/slot-\(first.index)"), as: UTF8.self) == "server-a/sbx_1")
        #expect(pool.owns(first, owner: "server-a/sbx_1") && !pool.owns(first, owner: "server-a/sbx_2"))
        #expect(Set(pool.slots { $0.hasPrefix("server-a/") }.map(\.1)) == ["server-a/sbx_1", "server-a/sbx_2"])
        pool.release(first, owner: "server-a/sbx_2")  // not its owner: kept
        #expect(try FileSystem.children(directory).sorted() == ["slot-\(first.index)", "slot-\(second.index)"].sorted())
        pool.release(first, owner: "server-a/sbx_1")
        #expect(try FileSystem.children(directory) == ["slot-\(second.index)"])
    }
}
