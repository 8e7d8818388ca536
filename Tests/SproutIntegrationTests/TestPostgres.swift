import SproutCluster

/// A real PostgreSQL of a test's own (`LocalPostgres`: Debian's, initdb'd in
/// a temporary directory), stopped and removed after `body`, also when it throws.
func withTestPostgres(_ body: (LocalPostgres) async throws -> Void) async throws {
    try await LocalPostgres.withTemporary(body)
}
