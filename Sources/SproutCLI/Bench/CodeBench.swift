import Foundation
import SproutAPI
import SproutClient
import SproutConfig
import SproutCore
import SproutHost
import SproutServer
import SproutStore

/// `code.first_result`: the stock e2b-code-interpreter SDK's
/// `Sandbox.create()` until `run_code("1+1")` has answered, on the built-in
/// env `code-interpreter-v1` (restored from its memory image, the kernel
/// running) beside the same env booted cold: the same files as a draft env
/// without `start`, whose interpreter the script starts after create. The
/// first create builds the env if the server has not (minutes, once).
extension BenchRunner {
    static let codeScript = "scripts/code-bench.py"

    func codeFirstResult() async throws -> MetricResult {
        let name = "code.first_result"
        guard FileManager.default.isExecutableFile(atPath: Self.e2bPython), FileManager.default.fileExists(atPath: Self.codeScript) else {
            return .unavailable(name, unit: "ms", why: "needs \(Self.e2bPython) and \(Self.codeScript): run from the repository after `make test`")
        }
        guard let envs = BuiltinEnvs.locate(explicit: nil) else {
            return .unavailable(name, unit: "ms", why: "the built-in envs' folder (envs/ of the source checkout) was not found")
        }
        try await ensureCodeInterpreter()

        // The cold twin: the same run steps and files (all cached), no start.
        let file = "\(envs)/code-interpreter-v1/sprout.toml"
        let config = try EnvConfig.parse(try String(contentsOfFile: file, encoding: .utf8), file: file)
        let files = try config.files.map { try LocalFiles.collect(root: "\(envs)/code-interpreter-v1/\($0)") } ?? []
        // Blobs belong to a team: the built-in env's are the server's own, so this key's team sends them (once).
        let missing = Set(try await api.missingBlobs(files.map(\.sha256)))
        for file in files where missing.contains(file.sha256) { try await api.uploadBlob(file.sha256, localPath: file.localPath) }
        let pushed = try await api.push(API.Push(
            id: "code-interpreter-cold", from: config.from, run: config.run, start: nil, ready: nil, cpu: config.cpu, memoryMB: config.memoryMB,
            files: files.map { API.Push.File(path: $0.path, mode: $0.mode, sha256: $0.sha256) }, draft: true, timeoutSeconds: config.timeoutSeconds))
        if let build = pushed.build {
            let done = try await api.build(build.id, wait: true)
            guard done.status == "succeeded" else { throw SproutError(.internal, "building the cold twin failed: \(done.error ?? "?")") }
        }
        // The floor of any start from a memory image on this machine, today: a
        // bare `runsc restore` of a shell loop, half before the warm runs, half after.
        let loop = try await checkpointedLoop()
        var floor = Samples()
        try await restores(loop, (runs + 1) / 2, into: &floor)
        let warm = try await e2bScript([Self.codeScript, "warm", String(runs), "code-interpreter-v1"], what: "the code interpreter benchmark (warm)")
        try await restores(loop, runs / 2, into: &floor)
        let cold = try await e2bScript([Self.codeScript, "cold", String(runs), pushed.envID], what: "the code interpreter benchmark (cold)")
        var note = "e2b-code-interpreter SDK: Sandbox.create() → run_code(\"1+1\") answered, a new sandbox each time"
        if let restore = floor.summary() {
            note += String(format: "; a bare runsc restore of a shell loop, same run: p50 %.0f ms", restore.p50)
        }
        return MetricResult(
            name: name, unit: "ms", figures: warm.summary()!, baselineName: "the same env booted, interpreter started after create",
            baseline: cold.summary(), note: note)
    }

    /// A checkpointed shell loop on `empty` for bare restores (gVisor only).
    private func checkpointedLoop() async throws -> (bundle: String, image: String)? {
        guard bare.kind == .gvisor else { return nil }
        let empty = try await api.createSandbox(API.CreateSandbox(env: "empty", fromPool: false))  // the base is built
        _ = try? await api.killSandbox(empty.id)
        return try await bare.checkpointedLoop(rootfs: "\(cache)/bases/empty")
    }

    private func restores(_ loop: (bundle: String, image: String)?, _ count: Int, into samples: inout Samples) async throws {
        guard let loop else { return }
        for _ in 0..<count { samples.record(seconds: try await bare.restoreOnce(bundle: loop.bundle, image: loop.image)) }
    }

    /// `code.first_result.pool`: the same, as a user of a server with its
    /// default warm pool sees it when the pool has a sandbox ready.
    func codeFirstResultPool() async throws -> MetricResult {
        let name = "code.first_result.pool"
        guard FileManager.default.isExecutableFile(atPath: Self.e2bPython), FileManager.default.fileExists(atPath: Self.codeScript) else {
            return .unavailable(name, unit: "ms", why: "needs \(Self.e2bPython) and \(Self.codeScript): run from the repository after `make test`")
        }
        try await ensureCodeInterpreter()
        let pooled = try await e2bScript([Self.codeScript, "pool", String(runs), "code-interpreter-v1"], what: "the code interpreter benchmark (pool)")
        return MetricResult(name: name, unit: "ms", figures: pooled.summary()!,
                            note: "as code.first_result, from the warm pool (2 s to refill between creates)")
    }

    /// Builds code-interpreter-v1 if the server has not (its first use does).
    private func ensureCodeInterpreter() async throws {
        if progress { FileHandle.standardError.write(Data("  code-interpreter-v1: building it if the server has not (minutes, once)\n".utf8)) }
        // The first create starts its build and answers not_ready until it is built.
        let deadline = ContinuousClock.now + .seconds(1800)
        while true {
            do {
                let first = try await api.createSandbox(API.CreateSandbox(env: "code-interpreter-v1", fromPool: false))
                _ = try? await api.killSandbox(first.id)
                return
            } catch let error as SproutError where error.code == .notReady && ContinuousClock.now < deadline {
                try await Task.sleep(for: .seconds(5))
            }
        }
    }
}
