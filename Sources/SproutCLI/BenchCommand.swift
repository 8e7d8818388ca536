import ArgumentParser
import Dispatch
import Foundation
import Glibc
import SproutClient
import SproutCore
import SproutRuntime
import SproutSystem
import SproutAPI
import SproutAgentProtocol
import SproutAgentClient
import SproutHost
import SproutConfig

/// `sprout bench`: measures Sprout against bare baselines in the same run.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure start, exec, transfer and density against baselines run alongside.")

    @Flag(help: "Print one JSON document.") var json = false
    @Option(help: "Only these metrics (comma-separated).") var only: String?
    @Option(help: "Runs per latency metric.") var runs = 30
    @Option(help: "Runtime: gvisor or runc.") var runtime = "gvisor"
    @Option(help: "gVisor's platform for the benchmark's server (the workload rows measure the other one beside it).")
    var platform = GVisorPlatform.ptrace.rawValue
    @Option(help: "Another runsc binary (scripts/fetch-runsc-bookworm.sh fetches Debian 12's) for the workload rows to measure bare, in the same run.")
    var compareRunsc: String?
    @Option(help: "Cache for base envs (debian is built once, ~30 s).") var cache = "/var/cache/sprout"
    @Option(help: "Sandboxes for the density metric.") var density = 50
    @Option(help: "Measure create, exec, wake and memory per sandbox with this many idle running sandboxes beside an empty host (the scale.* rows; alone unless --only names others).")
    var scale = 0
    @Option(help: "With --scale: paused sandboxes to hold as well.") var scalePaused = 0
    @Option(name: .customLong("api-url"), help: "Measure an existing server instead of starting one.") var apiURL: String?
    @Option(name: .customLong("api-key"), help: "API key for --api-url.") var apiKey: String?

    static let allMetrics = [
        "create.empty", "create.empty.cold", "create.debian", "create.debian.cold", "exec.true", "files.upload", "files.download", "create.concurrent", "density",
        "fork.storage", "resume", "fork.live.1", "fork.live.10", "create.warm", "snapshot.storage.10",
        "e2b.create.first_command", "e2b.commands.true", "wake.http", "density.paused", "exec.true.https", "code.first_result", "code.first_result.pool",
    ] + BenchRunner.volumeMetrics + BenchRunner.scaleMetrics + WorkloadBench.metrics + BenchRunner.imageMetrics + BenchRunner.fleetMetrics
    /// Measured only when --only names them: the code interpreter's env, and
    /// the workloads' (pandas), take minutes to build the first time.
    static let onlyWhenNamed: Set<String> = Set(["code.first_result", "code.first_result.pool"] + WorkloadBench.metrics + BenchRunner.imageMetrics + BenchRunner.fleetMetrics)

    func run() async throws {
        guard let kind = RuntimeKind(rawValue: runtime) else { throw SproutError(.invalidArgument, "unknown runtime '\(runtime)'") }
        guard let platform = GVisorPlatform(rawValue: platform) else { throw SproutError(.invalidArgument, "unknown platform '\(self.platform)'") }
        guard runs >= 1 && runs <= 10_000 else { throw SproutError(.invalidArgument, "--runs must be 1-10000") }
        guard (0...16_000).contains(scale), (0...100_000).contains(scalePaused) else {
            throw SproutError(.invalidArgument, "--scale must be 0-16000 and --scale-paused 0-100000")
        }
        let scaleRows = Set(BenchRunner.scaleMetrics)
        let selected = only.map { Set($0.split(separator: ",").map(String.init)) }
            ?? (scale > 0 ? scaleRows : Set(Self.allMetrics).subtracting(scaleRows).subtracting(Self.onlyWhenNamed))
        for name in selected where !Self.allMetrics.contains(name) {
            throw SproutError(.invalidArgument, "unknown metric '\(name)'; known: \(Self.allMetrics.joined(separator: ", "))")
        }
        if scale == 0 && !selected.isDisjoint(with: scaleRows) {
            throw SproutError(.invalidArgument, "the scale.* rows need --scale N (the running sandboxes to measure among)")
        }
        let started = Date()
        let t0 = monotonicSeconds()
        // runsc's daemons outlive the commands that start them; reap them here, promptly.
        OrphanReaper.startForRuntimes()
        let server: BenchServer? = apiURL == nil ? try BenchServer(runtime: runtime, cache: cache, platform: kind == .gvisor ? platform : nil) : nil
        let api = try server?.client ?? SproutAPIClient(url: apiURL!, apiKey: apiKey ?? ProcessInfo.processInfo.environment["SPROUT_API_KEY"])
        let bare = BareRuntime(kind: kind, directory: try FileSystem.makeTemporaryDirectory(prefix: "sprout-bench-bare"), platform: platform)
        let cleanUp: @Sendable () async -> Void = {
            if server != nil { await BenchRunner.killEverything(api) }
            server?.stop()
            await bare.cleanUp()
            try? FileSystem.removeTree(bare.directory)
        }
        // An interrupted benchmark still leaves nothing behind.
        var interrupts: [DispatchSourceSignal] = []
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("interrupted: cleaning up\n".utf8))
                // A Dispatch thread, not the cooperative pool: it may wait here.
                let done = DispatchSemaphore(value: 0)
                Task {
                    await cleanUp()
                    done.signal()
                }
                done.wait()
                Foundation.exit(130)
            }
            source.resume()
            interrupts.append(source)
        }
        defer { interrupts.forEach { $0.cancel() } }
        let runner = BenchRunner(api: api, server: server, bare: bare, cache: cache, runs: runs, progress: !json)
        var results: [MetricResult] = []
        do {
            let workloads = Set(WorkloadBench.metrics)
            for name in Self.allMetrics where selected.contains(name) && !scaleRows.contains(name) && !workloads.contains(name) {
                if !json { FileHandle.standardError.write(Data("measuring \(name)...\n".utf8)) }
                results.append(try await runner.measure(name, densityCount: density))
            }
            if !selected.isDisjoint(with: workloads) {
                results += try await WorkloadBench(runner: runner, platform: platform, compareRunsc: compareRunsc)
                    .run(WorkloadBench.metrics.filter(selected.contains))
            }
            if !selected.isDisjoint(with: scaleRows) {
                if !json { FileHandle.standardError.write(Data("measuring scale: \(scale) running, \(scalePaused) paused...\n".utf8)) }
                results += try await runner.scale(running: scale, paused: scalePaused).filter { selected.contains($0.name) }
            }
        } catch {
            await cleanUp()
            throw error
        }
        await cleanUp()
        let report = BenchReport(machine: await Self.machine(kind, platform: kind == .gvisor ? platform.rawValue : nil), startedAt: ISO8601DateFormatter().string(from: started),
                                 seconds: monotonicSeconds() - t0, metrics: results, servers: BenchServer.stopped.current,
                                 scratch: [bare.directory])
        if json { try Output.json(report) } else { report.printTable() }
    }
}

/// Runs each metric with its baseline.
struct BenchRunner: Sendable {
    let api: SproutAPIClient
    /// The server the benchmark started (nil with --api-url: then the
    /// direct-agent baselines, which need its catalog, are not measured).
    let server: BenchServer?
    let bare: BareRuntime
    let cache: String
    let runs: Int
    let progress: Bool

    func measure(_ name: String, densityCount: Int) async throws -> MetricResult {
        switch name {
        case "create.empty", "create.debian", "create.empty.cold", "create.debian.cold":
            let parts = name.split(separator: ".")
            return try await create(env: String(parts[1]), name: name, pooled: parts.count == 2)
        case "exec.true": return try await execTrue()
        case "files.upload", "files.download": return try await transfer(upload: name == "files.upload")
        case "volume.write", "volume.read": return try await volumeIO(write: name == "volume.write")
        case "create.concurrent": return try await concurrent(count: 20)
        case "density": return try await densityMetric(count: densityCount)
        case "fork.storage": return try await forkStorage(count: 100)
        case "resume": return try await resume()
        case "fork.live.1": return try await liveFork(count: 1)
        case "fork.live.10": return try await liveFork(count: 10)
        case "create.warm": return try await createWarm()
        case "snapshot.storage.10": return try await pauseStorage(count: 10)
        case "e2b.create.first_command", "e2b.commands.true": return try await e2b(name)
        case "wake.http": return try await wakeHTTP()
        case "density.paused": return try await densityPaused(count: densityCount)
        case "exec.true.https": return try await execOverHTTPS()
        case "code.first_result": return try await codeFirstResult()
        case "code.first_result.pool": return try await codeFirstResultPool()
        case "image.pull", "image.push.unchanged": return try await image(name)
        case "fleet.create", "fleet.exec.true", "fleet.resume.other", "fleet.place": return try await fleetRow(name)
        default:
            throw SproutError(.invalidArgument, "unknown metric '\(name)'")
        }
    }

    /// Kills sandboxes in parallel, off the measured path.
    func killAll(_ ids: [String]) async { await Self.killAll(api, ids) }

    /// `pooled`: creates as users see them with the warm pool, refilled
    /// between requests; otherwise every create starts a new container.
    func create(env: String, name: String, pooled: Bool) async throws -> MetricResult {
        // Warm-up: builds the base env if needed, starts the pool, warms caches.
        let warm = try await api.createSandbox(API.CreateSandbox(env: env, fromPool: false))
        await killAll([warm.id])
        let rootfs = "\(cache)/bases/\(env)"
        _ = try await bare.runUntilMarker(rootfs: rootfs)
        var sprout = Samples()
        var baseline = Samples()
        var pending: [String] = []
        for i in 0..<runs {
            if pooled { await waitForPool(env) }
            // Interleave so both see the same machine conditions.
            baseline.record(seconds: try await bare.runUntilMarker(rootfs: rootfs))
            let t = monotonicSeconds()
            let sandbox = try await api.createSandbox(API.CreateSandbox(env: env, fromPool: pooled))
            sprout.record(seconds: monotonicSeconds() - t)
            pending.append(sandbox.id)
            if pending.count == 10 || i == runs - 1 {
                await killAll(pending)
                pending = []
            }
        }
        return MetricResult(
            name: name, unit: "ms", figures: sprout.summary()!, baselineName: "bare \(bare.kind.binary) run",
            baseline: baseline.summary()!,
            note: (pooled ? "from the warm pool (refilled between creates)" : "a new container each time")
                + ": create until the agent answers vs. runtime start until a marker prints")
    }

    /// Waits (up to 10 s) until the server's pool for `env` is full again.
    func waitForPool(_ env: String) async {
        for _ in 0..<200 {
            if let text = try? await api.metrics(),
                let line = text.split(separator: "\n").first(where: { $0.hasPrefix(#"sprout_pool_ready{env="\#(env)"}"#) }),
                let value = Double(line.split(separator: " ").last ?? ""), value >= 2
            {
                return
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    func execTrue() async throws -> MetricResult {
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
        defer { Task { [api] in _ = try? await api.killSandbox(sandbox.id) } }
        let direct = try server.map { AgentClient(endpoint: try $0.agentEndpoint(sandbox.id, address: sandbox.address ?? "")) }
        for _ in 0..<20 {
            _ = try await api.exec(sandbox.id, API.Exec(cmd: ["/bin/true"]))
            _ = try await direct?.run(ProcessSpec(cmd: ["/bin/true"]))
        }
        var viaServer = Samples()
        var viaAgent = Samples()
        for _ in 0..<(runs * 10) {
            var t = monotonicSeconds()
            _ = try await api.exec(sandbox.id, API.Exec(cmd: ["/bin/true"]))
            viaServer.record(seconds: monotonicSeconds() - t)
            if let direct {
                t = monotonicSeconds()
                _ = try await direct.run(ProcessSpec(cmd: ["/bin/true"]))
                viaAgent.record(seconds: monotonicSeconds() - t)
            }
        }
        await killAll([sandbox.id])
        return MetricResult(name: "exec.true", unit: "ms", figures: viaServer.summary()!, baselineName: "agent directly",
                            baseline: viaAgent.summary(), note: "start `true` and receive its exit" + Self.noBaseline(direct))
    }

    /// `exec.true` through a second server of the same build serving HTTPS
    /// (a certificate made for the run, trusted as the CA file), beside the
    /// plain-HTTP server, interleaved.
    func execOverHTTPS() async throws -> MetricResult {
        guard server != nil else {
            return .unavailable("exec.true.https", unit: "ms", why: "needs the benchmark's own servers (it starts an HTTPS one beside)")
        }
        let secure = try BenchServer(runtime: bare.kind.rawValue, cache: cache, https: true)
        let tls = secure.client
        defer { secure.stop() }
        let plainSandbox = try await api.createSandbox(API.CreateSandbox(env: "empty"))
        let tlsSandbox = try await tls.createSandbox(API.CreateSandbox(env: "empty"))
        for _ in 0..<20 {
            _ = try await api.exec(plainSandbox.id, API.Exec(cmd: ["/bin/true"]))
            _ = try await tls.exec(tlsSandbox.id, API.Exec(cmd: ["/bin/true"]))
        }
        var overTLS = Samples()
        var overPlain = Samples()
        for _ in 0..<(runs * 10) {
            var t = monotonicSeconds()
            _ = try await tls.exec(tlsSandbox.id, API.Exec(cmd: ["/bin/true"]))
            overTLS.record(seconds: monotonicSeconds() - t)
            t = monotonicSeconds()
            _ = try await api.exec(plainSandbox.id, API.Exec(cmd: ["/bin/true"]))
            overPlain.record(seconds: monotonicSeconds() - t)
        }
        _ = try? await tls.killSandbox(tlsSandbox.id)
        await killAll([plainSandbox.id])
        return MetricResult(name: "exec.true.https", unit: "ms", figures: overTLS.summary()!, baselineName: "plain HTTP",
                            baseline: overPlain.summary(), note: "start `true` and receive its exit over HTTPS (TLS 1.3, kept-alive connections) vs plain HTTP, same build")
    }

    func transfer(upload: Bool) async throws -> MetricResult {
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", memoryMB: 1024))
        let direct = try server.map { AgentClient(endpoint: try $0.agentEndpoint(sandbox.id, address: sandbox.address ?? "")) }
        let scratch = server?.data ?? bare.directory
        let local = scratch + "/bench-64m.bin"
        let back = scratch + "/bench-back.bin"
        let fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        for _ in 0..<64 { try Descriptor.writeAll(fd, Identifiers.randomBytes(1 << 20)) }
        close(fd)
        defer {
            unlink(local)
            unlink(back)
        }
        let mb = 64 * 1.048576
        var viaServer: [Double] = []
        var viaAgent: [Double] = []
        try await api.upload(sandbox.id, localPath: local, to: "/tmp/bench.bin")
        for _ in 0..<Swift.max(3, Swift.min(runs, 7)) {
            if upload {
                var t = monotonicSeconds()
                try await api.upload(sandbox.id, localPath: local, to: "/tmp/bench.bin")
                viaServer.append(mb / (monotonicSeconds() - t))
                if let direct {
                    t = monotonicSeconds()
                    try await direct.upload(localPath: local, to: "/tmp/bench.bin")
                    viaAgent.append(mb / (monotonicSeconds() - t))
                }
            } else {
                let out = open(back, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
                var t = monotonicSeconds()
                try await api.download(sandbox.id, path: "/tmp/bench.bin", toDescriptor: out)
                viaServer.append(mb / (monotonicSeconds() - t))
                close(out)
                if let direct {
                    t = monotonicSeconds()
                    try await direct.download("/tmp/bench.bin", to: back)
                    viaAgent.append(mb / (monotonicSeconds() - t))
                }
            }
        }
        await killAll([sandbox.id])
        return MetricResult(name: upload ? "files.upload" : "files.download", unit: "MB/s", figures: Figures.of(viaServer)!,
                            baselineName: "agent directly", baseline: Figures.of(viaAgent), note: "64 MiB through the server" + Self.noBaseline(direct))
    }

    /// 100 chained forks over debian, each changing one 1 KiB file: how much
    /// the layer store grows, next to the bytes actually changed.
    func forkStorage(count: Int) async throws -> MetricResult {
        guard let server else {
            return .unavailable("fork.storage", unit: "MiB", why: "needs the benchmark's own server (its layer store is measured)")
        }
        let store = server.data + "/layers"
        let before = await LayerStoreSize.bytes(store)
        var env = "debian"
        var sandbox = try await api.createSandbox(API.CreateSandbox(env: env, fromPool: false))
        var kills: [Task<Void, Never>] = []
        var perFork = Samples()
        for _ in 0..<count {
            _ = try await api.run(sandbox.id, API.Exec(shell: "head -c 1024 /dev/urandom > /code/data.bin"))
            let t = monotonicSeconds()
            env = try await api.snapshot(sandbox.id).id
            perFork.record(seconds: monotonicSeconds() - t)
            let old = sandbox.id
            kills.append(Task { [api] in _ = try? await api.killSandbox(old) })
            sandbox = try await api.createSandbox(API.CreateSandbox(env: env, fromPool: false))
        }
        kills.append(Task { [api, sandbox] in _ = try? await api.killSandbox(sandbox.id) })
        for kill in kills { await kill.value }
        let grown = Double(await LayerStoreSize.bytes(store) - before) / Double(1 << 20)
        let snapshot = perFork.summary()!
        return MetricResult(
            name: "fork.storage", unit: "MiB", figures: .single(grown, runs: count),
            baselineName: "bytes changed", baseline: .single(Double(count * 1024) / Double(1 << 20)),
            note: String(format: "%d chained forks of debian, one 1 KiB file each; snapshot p50 %.0f ms, p95 %.0f ms", count, snapshot.p50, snapshot.p95))
    }

    static func noBaseline(_ direct: AgentClient?) -> String {
        direct == nil ? " (no direct-agent baseline against --api-url: it needs the server's catalog)" : ""
    }

    func concurrent(count: Int) async throws -> MetricResult {
        let rootfs = "\(cache)/bases/empty"
        _ = try await api.createSandbox(API.CreateSandbox(env: "empty")).id
        // Sprout: `count` creates at once.
        let t = monotonicSeconds()
        let created = try await withThrowingTaskGroup(of: (String, Double).self) { group in
            for _ in 0..<count {
                group.addTask {
                    let t0 = monotonicSeconds()
                    let s = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                    return (s.id, monotonicSeconds() - t0)
                }
            }
            var out: [(String, Double)] = []
            for try await r in group { out.append(r) }
            return out
        }
        let wall = monotonicSeconds() - t
        await killAll(try await api.sandboxes().map(\.id))
        // Baseline: the same number of bare runtime starts at once.
        let b0 = monotonicSeconds()
        let bareTimes = try await withThrowingTaskGroup(of: Double.self) { group in
            for _ in 0..<count { group.addTask { try await bare.runUntilMarker(rootfs: rootfs) } }
            var out: [Double] = []
            for try await r in group { out.append(r) }
            return out
        }
        let bareWall = monotonicSeconds() - b0
        var perCreate = Samples()
        created.forEach { perCreate.record(seconds: $0.1) }
        var perBare = Samples()
        bareTimes.forEach { perBare.record(seconds: $0) }
        let s = perCreate.summary()!
        let b = perBare.summary()!
        return MetricResult(
            name: "create.concurrent", unit: "ms", figures: s, baselineName: "\(count) bare runs at once", baseline: b,
            note: String(format: "%d creates at once: %.0f ms in all (bare: %.0f ms in all); figures are per create", count, wall * 1000, bareWall * 1000))
    }

    func densityMetric(count: Int) async throws -> MetricResult {
        var ids: [String] = []
        for _ in 0..<count {
            ids.append(try await api.createSandbox(API.CreateSandbox(env: "empty", timeoutSeconds: 3600)).id)
        }
        try await Task.sleep(for: .seconds(2))  // let them settle idle
        let perSandbox = ids.map { Double(HostMemory.pssKiB(containerID: $0)) / 1024 }
        await killAll(ids)
        let idle = try await bare.startIdle(rootfs: "\(cache)/bases/empty")
        try await Task.sleep(for: .seconds(2))
        let bareMiB = Double(HostMemory.pssKiB(containerID: idle.id, alsoPID: idle.pid)) / 1024
        await bare.remove(idle.id)
        return MetricResult(name: "density", unit: "MiB", figures: Figures.of(perSandbox)!, baselineName: "one bare idle sandbox",
                            baseline: .single(bareMiB), note: "host memory (PSS) per idle sandbox with \(count) running")
    }
}
