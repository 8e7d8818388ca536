import SproutAPI
import SproutClient
import Testing

/// Starts a counter (one increment every 0.1 s into /tmp/count) and a web
/// server on port 8080 in the background of `id`.
/// The counter replaces its file whole (write, then rename), so a read never
/// lands between a truncate and a write and sees it empty.
func startCounterAndServer(_ api: SproutAPIClient, _ id: String) async throws {
    let script = """
        mkdir -p /www && echo served > /www/index.html && httpd -p 8080 -h /www
        (i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.1; done) >/dev/null 2>&1 </dev/null &
        """
    #expect(try await api.run(id, API.Exec(shell: script)).exit == API.Exit(code: 0))
    #expect(try await eventually { try await counter(api, id) > 0 }, "the counter counts")
}

/// The counter's running time as the test sees it, for an upper bound on
/// its count that holds however busy the machine is: running from before the
/// read that gave `before`, stopped when a pause has returned, running again
/// from just before the resume. The counter sleeps 0.1 s between increments,
/// so it counts at most once per 0.1 s of that, plus one, plus one more for a
/// sleep that a restore cut short.
struct CounterClock {
    private var ran: Duration = .zero
    private var since: ContinuousClock.Instant? = .now

    mutating func paused() {
        if let since { ran += .now - since }
        since = nil
    }

    mutating func resumed() { since = .now }

    /// The most the counter can show now, having shown `before` after this clock started.
    func most(from before: Int) -> Int {
        let total = ran + (since.map { .now - $0 } ?? .zero)
        let seconds = Double(total.components.seconds) + Double(total.components.attoseconds) / 1e18
        return before + Int(seconds * 10) + 2
    }
}

func counter(_ api: SproutAPIClient, _ id: String, path: String = "/tmp/count") async throws -> Int {
    let text = try await api.run(id, API.Exec(cmd: ["cat", path])).stdoutText
    return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
}
