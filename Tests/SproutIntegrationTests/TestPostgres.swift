import Foundation
import Glibc
import SproutCluster
import SproutCore
import SproutSystem

/// A real PostgreSQL of a test's own (`LocalPostgres`: Debian's, initdb'd in
/// a temporary directory), stopped and removed after `body`, also when it throws.
func withTestPostgres(_ body: (LocalPostgres) async throws -> Void) async throws {
    let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-pg")
    defer { try? FileSystem.removeTree(directory) }
    let postgres = try await LocalPostgres(directory: directory)
    do {
        try await body(postgres)
    } catch {
        await postgres.stop()
        throw error
    }
    await postgres.stop()
}
