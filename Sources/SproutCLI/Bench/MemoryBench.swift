import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutRuntime
import SproutSystem
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// Memory-snapshot metrics: resume, live fork, warm creates, and what
/// repeated pauses cost in the image store.
extension BenchRunner {
    static let counterScript = "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done) >/dev/null 2>&1 </dev/null &"

    func memorySnapshotsAvailable(_ name: String, unit: String) -> MetricResult? {
        bare.kind == .gvisor ? nil
            : .unavailable(name, unit: unit, why: "\(bare.kind.rawValue) has no memory snapshots on this host (CRIU fails here)")
    }

    /// A sandbox with a running counter, as the memory metrics' subject.
    func counterSandbox() async throws -> API.Sandbox {
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", fromPool: false))
        _ = try await api.run(sandbox.id, API.Exec(shell: Self.counterScript))
        return sandbox
    }

    /// A sandbox running a web server that waits for requests.
    func serverSandbox() async throws -> API.Sandbox {
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", fromPool: false))
        _ = try await api.run(sandbox.id, API.Exec(shell: "mkdir -p /www && echo hi > /www/index.html && httpd -p 8080 -h /www"))
        return sandbox
    }

    /// Pause then resume, `runs` times; the resume is timed, next to a bare
    /// `runsc restore` of an equivalent container (the same shell loop on the
    /// same root, started with the sandbox's loop and checkpointed and
    /// restored at every run like it).
    func resume() async throws -> MetricResult {
        if let no = memorySnapshotsAvailable("resume", unit: "ms") { return no }
        let sandbox = try await counterSandbox()
        defer { Task { [api] in _ = try? await api.killSandbox(sandbox.id) } }
        // Also the baseline this row had before: one checkpoint of a loop 0.3 s old, restored again and again.
        let young = try await bare.checkpointedLoop(rootfs: "\(cache)/bases/empty")
        let loop = try await bare.runningLoop(rootfs: "\(cache)/bases/empty")
        var sprout = Samples()
        var pauses = Samples()
        var baseline = Samples()
        var youngBaseline = Samples()
        do {
            for _ in 0..<min(runs, 30) {
                // Both stop together; the loop runs again when the sandbox does.
                async let loopStopped: Void = bare.checkpointLoop(id: loop.id, bundle: loop.bundle)
                var t = monotonicSeconds()
                _ = try await api.pause(sandbox.id)
                pauses.record(seconds: monotonicSeconds() - t)
                try await loopStopped
                baseline.record(seconds: try await bare.restoreLoop(id: loop.id, bundle: loop.bundle))
                try await bare.freeze(loop.id)
                youngBaseline.record(seconds: try await bare.restoreOnce(bundle: young.bundle, image: young.image))
                t = monotonicSeconds()
                _ = try await api.resume(sandbox.id)
                sprout.record(seconds: monotonicSeconds() - t)
                try await bare.thaw(loop.id)
            }
        } catch {
            await bare.remove(loop.id)
            throw error
        }
        let loopState = bare.lastCheckpointBytes(bundle: loop.bundle) ?? 0
        await bare.remove(loop.id)
        let pause = pauses.summary()!
        let youngP50 = youngBaseline.summary()!.p50
        return MetricResult(
            name: "resume", unit: "ms", figures: sprout.summary()!, baselineName: "bare runsc restore (same loop, same age)", baseline: baseline.summary(),
            note: String(format: "resume of a paused sandbox (a counter loop) until its agent answers; pause p50 %.0f ms, p95 %.0f ms (beside the bare loop's checkpoint); "
                + "the bare loop's last kernel state %.2f MiB; a bare restore of a loop 0.3 s old (the row's earlier baseline) p50 %.0f ms",
                pause.p50, pause.p95, Double(loopState) / 1_048_576, youngP50))
    }

    /// One fork request for `count` copies of a running sandbox (a web
    /// server waiting for requests), until every copy's agent answers.
    func liveFork(count: Int) async throws -> MetricResult {
        let name = "fork.live.\(count)"
        if let no = memorySnapshotsAvailable(name, unit: "ms") { return no }
        let source = try await serverSandbox()
        defer { Task { [api] in _ = try? await api.killSandbox(source.id) } }
        var samples = Samples()
        for _ in 0..<max(1, min(runs, count == 1 ? 20 : 5)) {
            let t = monotonicSeconds()
            let forks = try await api.fork(source.id, count: count)
            samples.record(seconds: monotonicSeconds() - t)
            await killAll(forks.map(\.id))
        }
        return MetricResult(name: name, unit: "ms", figures: samples.summary()!,
                            note: "a sandbox running a web server: its checkpoint and restore, and \(count) restores with their own network, in one request")
    }

    /// Time until a web server in a new sandbox answers: from a warm env
    /// (restored with the server running) vs. from the same env cold (boot,
    /// then start the server, then wait for its port).
    func createWarm() async throws -> MetricResult {
        if let no = memorySnapshotsAvailable("create.warm", unit: "ms") { return no }
        // A server whose start-up does some work first (≈ 1 s of shell
        // arithmetic here), as real ones load code and data before they listen.
        let start = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec httpd -f -p 8080 -h /"
        // The same env twice: with `start` (warm) and without (cold; the server is started by hand).
        let warmEnv = try await pushAndWait(API.Push(id: "bench-warm", from: "empty", run: ["echo warm > /index.html"], start: start,
                                                     ready: "port:8080", cpu: nil, memoryMB: nil, files: [], timeoutSeconds: 120))
        let coldEnv = try await pushAndWait(API.Push(id: "bench-cold", from: "empty", run: ["echo warm > /index.html"], start: nil,
                                                     ready: nil, cpu: nil, memoryMB: nil, files: [])).id
        guard warmEnv.warm == true else { return .unavailable("create.warm", unit: "ms", why: "the env did not come out warm") }
        var warm = Samples()
        var cold = Samples()
        var pending: [String] = []
        for _ in 0..<min(runs, 30) {
            var t = monotonicSeconds()
            let w = try await api.createSandbox(API.CreateSandbox(env: warmEnv.id, fromPool: false))
            try await waitForPort(w.address ?? "", 8080)
            warm.record(seconds: monotonicSeconds() - t)
            t = monotonicSeconds()
            let c = try await api.createSandbox(API.CreateSandbox(env: coldEnv, fromPool: false))
            _ = try await api.run(c.id, API.Exec(shell: "(\(start)) >/dev/null 2>&1 </dev/null &"))
            try await waitForPort(c.address ?? "", 8080)
            cold.record(seconds: monotonicSeconds() - t)
            pending += [w.id, c.id]
            if pending.count >= 10 {
                await killAll(pending)
                pending = []
            }
        }
        await killAll(pending)
        return MetricResult(name: "create.warm", unit: "ms", figures: warm.summary()!, baselineName: "cold create + start", baseline: cold.summary(),
                            note: "create until the env's web server answers on its port: restored from the env's memory image vs. booted, then started")
    }

    func pushAndWait(_ push: API.Push) async throws -> API.Env {
        let pushed = try await api.push(push)
        if let build = pushed.build {
            let done = try await api.build(build.id, wait: true)
            guard done.status == "succeeded" else { throw SproutError(.internal, "the bench's env \(push.id) did not build: \(done.error ?? done.status)") }
        }
        return try await api.env(pushed.envID)
    }

    func waitForPort(_ host: String, _ port: UInt16) async throws {
        let deadline = monotonicSeconds() + 10
        while monotonicSeconds() < deadline {
            if Socket.answers(host: host, port: port, timeoutSeconds: 1) { return }
            try await Task.sleep(for: .milliseconds(2))
        }
        throw SproutError(.timeout, "nothing answered on \(host):\(port)")
    }

    /// Ten pause/resume cycles of one sandbox: the bytes the image store
    /// holds for them, next to one image. Two workloads: a busy counter
    /// (a shell starting `sleep` ten times a second: the headline figure)
    /// and an idle web server.
    func pauseStorage(count: Int) async throws -> MetricResult {
        if let no = memorySnapshotsAvailable("snapshot.storage.10", unit: "MiB") { return no }
        let busy = try await counterSandbox()
        let idle = try await serverSandbox()
        defer { Task { [api] in for id in [busy.id, idle.id] { _ = try? await api.killSandbox(id) } } }
        func cycle(_ id: String) async throws -> (one: Int64, all: API.MemoryImages) {
            var last: API.MemoryImages?
            var first: Int64 = 0
            for i in 0..<count {
                let paused = try await api.pause(id)
                last = paused.memory
                if i == 0 { first = paused.memory?.logicalBytes ?? 0 }
                _ = try await api.resume(id)
            }
            guard let last else { throw SproutError(.internal, "no memory images were reported") }
            return (first, last)
        }
        let (one, all) = try await cycle(busy.id)
        let (idleOne, idleAll) = try await cycle(idle.id)
        let mib = { (bytes: Int64) in Double(bytes) / Double(1 << 20) }
        return MetricResult(
            name: "snapshot.storage.10", unit: "MiB", figures: .single(mib(all.storedBytes), runs: count),
            baselineName: "one image", baseline: .single(mib(one)),
            note: String(format: "%d pause/resume snapshots of a busy sandbox: %.1f MiB of images, %.1f MiB stored (dedup %.2fx); of an idle web server: %.1f MiB stored, %.2fx one image",
                         all.count, mib(all.logicalBytes), mib(all.storedBytes), Double(all.logicalBytes) / Double(max(1, all.storedBytes)),
                         mib(idleAll.storedBytes), Double(idleAll.storedBytes) / Double(max(1, idleOne))))
    }
}
