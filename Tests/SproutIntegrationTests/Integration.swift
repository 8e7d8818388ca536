import Foundation
import Glibc
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

/// Every suite that starts real sandboxes nests in here, so they run one at a
/// time: two cores do not take a parallel storm of sandboxes. They need root
/// and the runtimes (`make test` installs them); each test has a time limit.
@Suite("integration", .serialized, .enabled(if: hostCanRunSandboxes(), "needs root, runsc and runc (make test installs them)"),
       .timeLimit(.minutes(10)))
struct Integration {}

/// Root, and both runtimes installed.
func hostCanRunSandboxes() -> Bool {
    getuid() == 0 && ["runsc", "runc"].allSatisfy { name in
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
    }
}

/// Fails the test if Sprout left anything on the host for `data`.
func expectNoLeftovers(_ data: String, sourceLocation: SourceLocation = #_sourceLocation) async {
    let left = await HostResources.leftovers(data: data)
    #expect(left.isEmpty, "left on the host: \(left)", sourceLocation: sourceLocation)
}

extension String {
    var trimmedLines: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
