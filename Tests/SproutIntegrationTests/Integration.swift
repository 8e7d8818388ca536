import Foundation
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

/// Every suite that starts real sandboxes nests in here, so they run one at a
/// time: two cores do not take a parallel storm of sandboxes.
@Suite("integration", .serialized)
struct Integration {}

/// Fails the test if Sprout left anything on the host for `data`.
func expectNoLeftovers(_ data: String, sourceLocation: SourceLocation = #_sourceLocation) async {
    let left = await HostResources.leftovers(data: data)
    #expect(left.isEmpty, "left on the host: \(left)", sourceLocation: sourceLocation)
}

extension String {
    var trimmedLines: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
