/// A sandbox's root file system: an overlay of read-only layers (the env's
/// chain, top first) under the sandbox's own writable `upper` directory. The
/// runtime mounts it inside its private mount namespace (see `MountNamespace`).
public struct OverlayRootfs: Sendable {
    /// Layer directories, topmost first.
    public var layers: [String]
    /// The sandbox's directory: holds `upper`, `work` and the mount point `rootfs`.
    public var directory: String

    /// A layer that appears more than once (identical content is stored
    /// once, so e.g. the empty layer of every push without files) is kept
    /// only at its topmost place: overlayfs refuses a repeated lower
    /// directory (ELOOP, "conflicting lowerdir path"), and the lower copy
    /// changes nothing, since the upper copy shadows every path it has.
    public init(layers: [String], directory: String) {
        var seen = Set<String>()
        self.layers = layers.filter { seen.insert($0).inserted }
        self.directory = directory
    }

    public var upper: String { directory + "/upper" }
    public var work: String { directory + "/work" }
    public var mountPoint: String { directory + "/rootfs" }

}
