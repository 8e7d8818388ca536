import Foundation

/// Waits until `condition` holds, asking again every `every`, for at most
/// `seconds`: a bound far above what the wait takes, so that a busy machine
/// is slower but never fails it. The one place integration tests wait by
/// asking again; they wait on states, never on a length of time.
@discardableResult
func eventually(_ seconds: Double = 60, every: Duration = .milliseconds(100), _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while true {
        if try await condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        try await Task.sleep(for: every)
    }
}
