/// A sandbox's root file system: an overlay of read-only layers (the env's
/// chain, top first) under the sandbox's own writable `upper` directory. The
/// runtime mounts it inside its private mount namespace (see `MountNamespace`).
public struct OverlayRootfs: Sendable {
    /// Layer directories, topmost first.
    public var layers: [String]
    /// The sandbox's directory: holds `upper`, `work` and the mount point `rootfs`.
    public var directory: String

    public init(layers: [String], directory: String) {
        self.layers = layers
        self.directory = directory
    }

    public var upper: String { directory + "/upper" }
    public var work: String { directory + "/work" }
    public var mountPoint: String { directory + "/rootfs" }

}
