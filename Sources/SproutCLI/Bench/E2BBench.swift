import Foundation
import SproutAPI
import SproutClient
import SproutCore
import SproutHost
import SproutSystem

/// The E2B rows: the stock `e2b` SDK (the venv `make test` installs) against
/// the same server, beside Sprout's own client doing the same thing in the
/// same run. Both run `/bin/bash -l -c true` in the `debian` env, as the
/// SDK's `commands.run("true")` does.
extension BenchRunner {
    static let e2bPython = ".venv-e2b/bin/python"
    static let e2bScript = "scripts/e2b-bench.py"

    func e2b(_ name: String) async throws -> MetricResult {
        let create = name == "e2b.create.first_command"
        guard FileManager.default.isExecutableFile(atPath: Self.e2bPython), FileManager.default.fileExists(atPath: Self.e2bScript) else {
            return .unavailable(name, unit: "ms", why: "needs \(Self.e2bPython) and \(Self.e2bScript): run from the repository after `make test`")
        }
        let bash = API.Exec(cmd: ["/bin/bash", "-l", "-c", "true"])
        var native = Samples()
        let count = create ? runs : runs * 10
        if create {
            for i in 0..<(count + 2) {
                let t = monotonicSeconds()
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "debian"))
                _ = try await api.exec(sandbox.id, bash)
                let elapsed = monotonicSeconds() - t
                _ = try? await api.killSandbox(sandbox.id)
                if i >= 2 { native.record(seconds: elapsed) }
            }
        } else {
            let sandbox = try await api.createSandbox(API.CreateSandbox(env: "debian"))
            for i in 0..<(count + 20) {
                let t = monotonicSeconds()
                _ = try await api.exec(sandbox.id, bash)
                if i >= 20 { native.record(seconds: monotonicSeconds() - t) }
            }
            _ = try? await api.killSandbox(sandbox.id)
        }
        let sdk = try await e2bScript([Self.e2bScript, create ? "create" : "run", String(count), "debian"], what: "the E2B benchmark")
        return MetricResult(
            name: name, unit: "ms", figures: sdk.summary()!, baselineName: "Sprout's client", baseline: native.summary(),
            note: create ? "e2b SDK: Sandbox.create() → commands.run(\"true\") answered (debian)" : "e2b SDK: commands.run(\"true\") (bash -l -c true, debian)")
    }

    /// Runs one of the bench's Python scripts with the E2B SDK pointed at this
    /// server; the script prints a JSON list of seconds.
    func e2bScript(_ arguments: [String], what: String) async throws -> Samples {
        let out = try await HostCommand.capture(
            [Self.e2bPython] + arguments,
            environment: ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(api.baseURL)", "E2B_SANDBOX_URL=\(api.baseURL)",
                          "E2B_API_KEY=\(api.apiKey ?? "")"],
            timeout: .seconds(1800))
        guard out.status == 0, let seconds = try? JSONDecoder().decode([Double].self, from: Data(out.stdout.utf8)), !seconds.isEmpty else {
            throw SproutError(.internal, "\(what) failed: \(out.stderr.suffix(2000))")
        }
        var samples = Samples()
        for s in seconds { samples.record(seconds: s) }
        return samples
    }
}
