import Foundation
import Glibc
import SproutAPI
import SproutCore
import SproutHost
import SproutRegistry
import SproutSystem

/// `image.pull`: a ~100 MB image (the `debian` base's files and 60 MB of
/// random bytes, two gzip layers) pulled from a local `docker-registry` into
/// an env, next to `skopeo copy` of the same image into a local directory.
/// `image.push.unchanged`: `sprout env push --dockerfile` of a Dockerfile
/// built before, end to end (the CLI process), next to `sprout env show`.
/// Each starts its own registry and server (the pull needs
/// `--insecure-registry`) and removes them after.
extension BenchRunner {
    static let imageMetrics = ["image.pull", "image.push.unchanged"]

    func image(_ name: String) async throws -> MetricResult {
        let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-bench-image")
        defer { try? FileSystem.removeTree(directory) }
        let registry = try await LocalRegistry(directory: directory)
        defer { registry.stop() }
        let server = try BenchServer(runtime: "gvisor", cache: cache, extraArgs: ["--insecure-registry", registry.host])
        defer { server.stop() }
        return name == "image.pull"
            ? try await pull(registry: registry, server: server, directory: directory)
            : try await unchangedPush(server: server, directory: directory)
    }

    private func pull(registry: LocalRegistry, server: BenchServer, directory: String) async throws -> MetricResult {
        let base = "\(cache)/bases/debian"
        if !FileSystem.isDirectory(base) {
            _ = try await server.client.createSandbox(API.CreateSandbox(env: "debian"))  // builds the base once
            await Self.killEverything(server.client)
        }
        let noise = directory + "/noise"
        try FileSystem.makeDirectories(noise)
        let random = try await HostCommand.capture(["sh", "-c", "head -c 62914560 /dev/urandom > \"$1\"", "sh", noise + "/random.bin"])
        guard random.status == 0 else { throw SproutError(.internal, "cannot write random bytes: \(random.stderr)") }
        try await OCILayoutWriter.write(layout: directory + "/layout", tag: "v1", config: ["Env": ["PATH=/usr/bin:/bin"]], layers: [base, noise])
        try await registry.push(layout: directory + "/layout", tag: "v1", as: "bench/image")
        let reference = "\(registry.host)/bench/image:v1"
        let size = try await HostCommand.capture(["du", "-sb", registry.storage])
        let api = server.client
        var pulls: [Double] = []
        var copies: [Double] = []
        var phases: [String] = []
        for _ in 0..<Swift.max(3, Swift.min(runs, 5)) {
            let target = directory + "/copy"
            let t0 = monotonicSeconds()
            let copied = try await HostCommand.capture(["skopeo", "copy", "--insecure-policy", "--src-tls-verify=false", "docker://\(reference)", "dir:\(target)"],
                                                        timeout: .seconds(600))
            copies.append((monotonicSeconds() - t0) * 1000)
            guard copied.status == 0 else { throw SproutError(.internal, "skopeo copy failed: \(copied.stderr)") }
            try FileSystem.removeTree(target)

            let t1 = monotonicSeconds()
            let pushed = try await api.push(API.Push(id: "pull-bench", from: reference, run: [], start: nil, ready: nil, cpu: nil, memoryMB: nil,
                                                     files: [], steps: []))
            let build = try await api.build(pushed.build?.id ?? "", wait: true)
            pulls.append((monotonicSeconds() - t1) * 1000)
            guard build.status == "succeeded", let parent = try await api.env(build.envID).parent else {
                throw SproutError(.internal, "the pull's build \(build.id) \(build.status): \(build.error ?? "")")
            }
            let lines = Locked("")
            try await api.buildLogs(build.id, follow: false) { chunk in lines.withLock { $0 += String(decoding: chunk, as: UTF8.self) } }
            phases = lines.current.split(separator: "\n").filter { $0.contains("pulled in") }.map { String($0.dropFirst(6)) }
            // The image's env and its layers go, so the next run pulls everything again.
            _ = try await api.deleteEnv(parent, force: true)
        }
        let bytes = size.stdout.split(separator: "\t").first.flatMap { Int64($0) } ?? 0
        return MetricResult(name: "image.pull", unit: "ms", figures: Figures.of(pulls)!, baselineName: "skopeo copy of the same image to a directory",
                            baseline: Figures.of(copies)!,
                            note: "\(bytes >> 20) MiB in the registry (2 gzip layers), pulled into an env: manifest, download with digest checks, unpack, store; "
                                + "the last run's layers: " + phases.joined(separator: "; "))
    }

    private func unchangedPush(server: BenchServer, directory: String) async throws -> MetricResult {
        let context = directory + "/context"
        try FileSystem.makeDirectories(context)
        try FileSystem.writeAtomically(context + "/app.txt", "app\n")
        try FileSystem.writeAtomically(context + "/Dockerfile", "FROM empty\nWORKDIR /app\nCOPY app.txt .\nRUN echo built > built.txt\nCMD [\"sh\"]\n")
        let exe = OwnExecutable.path ?? "sprout"
        let environment = ["PATH=/usr/bin:/bin", "HOME=\(directory)", "SPROUT_API_URL=http://127.0.0.1:\(server.port)", "SPROUT_API_KEY=\(server.key)"]
        func cli(_ args: [String]) async throws -> (Double, String) {
            let t0 = monotonicSeconds()
            let out = try await HostCommand.capture([exe] + args, environment: environment, timeout: .seconds(600))
            let ms = (monotonicSeconds() - t0) * 1000
            guard out.status == 0 else { throw SproutError(.internal, "sprout \(args.joined(separator: " ")) failed: \(out.stderr)") }
            return (ms, out.stdout)
        }
        let push = ["env", "push", "--dockerfile", context + "/Dockerfile", "--name", "unchanged", "--wait"]
        let (_, built) = try await cli(push)
        let envID = built.trimmingCharacters(in: .whitespacesAndNewlines)
        var pushes: [Double] = []
        var shows: [Double] = []
        for _ in 0..<Swift.max(5, runs) {
            let (ms, out) = try await cli(push)
            guard out.contains("is up to date") else { throw SproutError(.internal, "the unchanged push built something: \(out)") }
            pushes.append(ms)
            shows.append(try await cli(["env", "show", envID]).0)
        }
        return MetricResult(name: "image.push.unchanged", unit: "ms", figures: Figures.of(pushes)!, baselineName: "sprout env show (one API call, same CLI)",
                            baseline: Figures.of(shows)!, note: "the CLI reads the Dockerfile, hashes its COPY files, asks which blobs are missing, pushes: nothing to build")
    }
}
