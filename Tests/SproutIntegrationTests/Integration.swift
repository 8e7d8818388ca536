import Foundation
import Glibc
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

/// Every suite that starts real sandboxes nests in one of two lanes. A lane
/// runs its suites one at a time, and the two lanes run beside each other:
/// two cores do not take a storm of sandboxes, but they do take two servers,
/// and most of a suite's time is spent waiting (for a restart, a pause, a
/// timeout, the Debian mirror), so the second lane nearly halves the run.
/// The long suites go in the second lane (`LongIntegration`): the code
/// interpreter's first-use build, the crash loop, the E2B SDK. Each suite's
/// servers and host resources are its own (named after the server's
/// instance), so a check in one lane never counts the other's. They need root
/// and the runtimes (`make test` installs them); each test has a time limit.
@Suite("integration", .serialized, .enabled(if: hostCanRunSandboxes(), "needs root, runsc and runc (make test installs them)"),
       .timeLimit(.minutes(10)))
struct Integration {}

/// The second lane: see `Integration`.
@Suite("integration, long suites", .serialized, .enabled(if: hostCanRunSandboxes(), "needs root, runsc and runc (make test installs them)"),
       .timeLimit(.minutes(15)))
struct LongIntegration {}

/// Root, and both runtimes installed.
func hostCanRunSandboxes() -> Bool {
    getuid() == 0 && ["runsc", "runc"].allSatisfy { name in
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
    }
}

/// Fails the test if Sprout left anything on the host for `data`.
/// Waits until the host holds nothing of this data directory's sandboxes
/// (containers, namespaces, mounts, cgroups): what is killed in the
/// background is gone once this returns empty; else what is still there.
func waitUntilHostIsClear(_ data: String) async throws -> [String] {
    var left: [String] = []
    try await eventually {
        left = await HostResources.leftovers(data: data)
        return left.isEmpty
    }
    return left
}

func expectNoLeftovers(_ data: String, sourceLocation: SourceLocation = #_sourceLocation) async {
    let left = await HostResources.leftovers(data: data)
    #expect(left.isEmpty, "left on the host: \(left)", sourceLocation: sourceLocation)
}

extension String {
    var trimmedLines: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
