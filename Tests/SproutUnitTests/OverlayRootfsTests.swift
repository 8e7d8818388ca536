import SproutRuntime
import Testing

@Suite("Unit: overlay root")
struct OverlayRootfsTests {
    /// overlayfs refuses a lower directory given twice ("conflicting lowerdir
    /// path"); identical layers are stored once, so a chain of pushes without
    /// files repeats the empty layer. The integration tier mounts such a chain
    /// for real (the dashboard's three-deep chain).
    @Test("a repeated layer is kept only at its topmost place; the order is otherwise kept")
    func repeatedLayers() {
        let root = OverlayRootfs(layers: ["/l/c", "/l/empty", "/l/b", "/l/empty", "/l/a", "/l/base"], directory: "/s/x")
        #expect(root.layers == ["/l/c", "/l/empty", "/l/b", "/l/a", "/l/base"])
        #expect(OverlayRootfs(layers: ["/l/a", "/l/b"], directory: "/s/x").layers == ["/l/a", "/l/b"])
    }
}
