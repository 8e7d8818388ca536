import Glibc
import SproutCore
import SproutSystem

/// A sandbox's place on the host network: a /30 out of 10.88.0.0/16 with the
/// host's end of the veth at .1 and the sandbox at .2.
public struct NetworkSlot: Sendable, Equatable, Codable {
    public var index: Int
    public init(index: Int) { self.index = index }

    private var base: Int { index * 4 }
    public var hostAddress: String { "10.88.\(base >> 8).\((base & 0xFF) + 1)" }
    public var sandboxAddress: String { "10.88.\(base >> 8).\((base & 0xFF) + 2)" }
    public static let poolCIDR = "10.88.0.0/16"
    public static let capacity = 16384
}

/// Hands out sandbox addresses; `NetworkPool` is the real one.
public protocol AddressPool: Sendable {
    /// Takes a free slot for `owner` (a sandbox id, prefixed with the server instance).
    func allocate(owner: String) throws -> NetworkSlot
    func release(_ slot: NetworkSlot, owner: String)
    /// Every slot whose owner matches, for reconciliation.
    func slots(ownedBy predicate: (String) -> Bool) -> [(NetworkSlot, String)]
}

/// Hands out network slots, host-wide: a slot is taken by creating a lock file
/// with O_EXCL in a directory shared by every Sprout server on the host, so
/// two servers (or two test suites) never hand out the same addresses.
public struct NetworkPool: AddressPool {
    public let directory: String

    public init(directory: String = "/run/sprout/net") {
        self.directory = directory
    }

    /// Takes a free slot for `owner` (a sandbox id). The slot file appears
    /// with its owner already in it: written to a file with no name
    /// (`O_TMPFILE`), then linked in, which fails if the slot is taken. A
    /// server killed between creating the file and writing it left an empty
    /// slot file that no one owned and so no one ever released.
    public func allocate(owner: String) throws -> NetworkSlot {
        try FileSystem.makeDirectories(directory)
        let fd = try sysCall("open a slot file in \(directory)") { open(directory, Self.tmpfile | O_WRONLY | O_CLOEXEC, 0o600) }
        defer { close(fd) }
        try Descriptor.writeAll(fd, Array(owner.utf8))
        let start = Int.random(in: 0..<NetworkSlot.capacity)
        for offset in 0..<NetworkSlot.capacity {
            let index = (start + offset) % NetworkSlot.capacity
            if linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, path(index), AT_SYMLINK_FOLLOW) == 0 {
                return NetworkSlot(index: index)
            }
            guard errno == EEXIST else { throw SproutError.system("allocate a network slot") }
        }
        throw SproutError(.unavailable, "no free sandbox network addresses (all \(NetworkSlot.capacity) in use)")
    }

    /// Claims a specific slot for `owner` again (after a restart); true if it is ours.
    public func owns(_ slot: NetworkSlot, owner: String) -> Bool {
        guard let bytes = try? Descriptor.readFile(path(slot.index), limit: 256) else { return false }
        return String(decoding: bytes, as: UTF8.self) == owner
    }

    public func release(_ slot: NetworkSlot, owner: String) {
        if owns(slot, owner: owner) { unlink(path(slot.index)) }
    }

    /// Every slot held by one of `owners`, for reconciliation.
    public func slots(ownedBy predicate: (String) -> Bool) -> [(NetworkSlot, String)] {
        guard let names = try? FileSystem.children(directory) else { return [] }
        return names.compactMap { name in
            guard name.hasPrefix("slot-"), let index = Int(name.dropFirst(5)),
                let bytes = try? Descriptor.readFile(path(index), limit: 256)
            else { return nil }
            let owner = String(decoding: bytes, as: UTF8.self)
            return predicate(owner) ? (NetworkSlot(index: index), owner) : nil
        }
    }

    /// `O_TMPFILE` (Linux's generic `__O_TMPFILE | O_DIRECTORY`), which Swift's Glibc does not export.
    static let tmpfile: Int32 = 0o20000000 | O_DIRECTORY

    private func path(_ index: Int) -> String { "\(directory)/slot-\(index)" }
}
