import Foundation
import Glibc
import SproutAPI
import SproutClient
import SproutCore
import SproutHost
import SproutRuntime
import SproutSystem

/// What agents run, measured on gVisor's two platforms in the same run (the
/// benchmark's own server on one, a second server on the other) and, with
/// `--compare-runsc`, on another runsc binary (Debian 12's) bare.
///
/// Every workload runs inside a sandbox of one env (`base` with pandas and
/// the fixtures: a git repository, a wheel, a CSV, a .deb) and is timed
/// inside it by bash's `$EPOCHREALTIME` around each run, so the three
/// variants are measured the same way and no API round trip is counted.
struct WorkloadBench {
    static let metrics = ["workload.spawn", "workload.python", "workload.syscalls", "workload.git", "workload.pip", "workload.apt", "workload.pandas"]

    struct Workload {
        var name: String
        /// A bash command; its output is discarded.
        var command: String
        var runs: Int
        var what: String
    }

    static func workload(_ name: String, runs: Int) -> Workload? {
        switch name {
        case "workload.spawn":
            return Workload(name: name, command: "for j in 1 2 3 4 5 6 7 8 9 10; do /bin/true; done", runs: runs, what: "10 process spawns (/bin/true)")
        case "workload.python":
            return Workload(name: name, command: "python3 -c pass", runs: runs, what: "python3 -c pass")
        case "workload.syscalls":
            return Workload(name: name, command: "dd if=/dev/zero of=/dev/null bs=1 count=5000", runs: runs, what: "10,000 system calls (dd bs=1 count=5000)")
        case "workload.git":
            return Workload(name: name, command: "git -C /opt/bench/repo status --porcelain", runs: runs, what: "git status in a 300-file repository")
        case "workload.pip":
            return Workload(name: name, command: "pip install --quiet --no-index --no-deps --target /tmp/pip-$RANDOM$RANDOM /opt/bench/benchpkg-1.0-py3-none-any.whl",
                            runs: max(3, runs / 3), what: "pip install of a local wheel")
        case "workload.apt":
            return Workload(name: name, command: "apt-get install -y -qq /opt/bench/hello.deb && apt-get remove -y -qq hello",
                            runs: max(3, runs / 3), what: "apt-get install and remove of a cached .deb")
        case "workload.pandas":
            return Workload(name: name, command: "", runs: runs, what: "a warm Python reading a 20,000-row CSV with pandas (as a code-interpreter cell does)")
        default:
            return nil
        }
    }

    /// The loop that times `workload` inside the sandbox: one "start end" line per run.
    static func script(_ workload: Workload) -> String {
        if workload.name == "workload.pandas" {
            return """
                python3 -c 'import time, pandas
                for _ in range(\(workload.runs)):
                    s = time.time(); pandas.read_csv("/opt/bench/data.csv"); e = time.time(); print(s, e)'
                """
        }
        return "for i in $(seq \(workload.runs)); do s=$EPOCHREALTIME; { \(workload.command); } >/dev/null 2>&1; e=$EPOCHREALTIME; echo \"$s $e\"; done"
    }

    /// Seconds per run from the loop's output.
    static func durations(_ output: String) -> [Double] {
        output.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ")
            guard parts.count == 2, let s = Double(parts[0]), let e = Double(parts[1]) else { return nil }
            return e - s
        }
    }

    /// The env: `base` with pandas, and the fixtures every workload uses.
    static let env = API.Push(
        id: "bench-workloads", from: "base",
        run: [
            "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pandas >/dev/null && mkdir -p /opt/bench && cd /opt/bench && apt-get download -qq hello && mv hello_*.deb hello.deb && rm -rf /var/lib/apt/lists/*",
            """
            set -e; cd /opt/bench
            mkdir repo && cd repo && git init -q && for d in a b c; do mkdir $d; for i in $(seq 100); do echo "$d $i" > $d/f$i.txt; done; done
            git -c user.email=b@b -c user.name=b add -A && git -c user.email=b@b -c user.name=b commit -qm fixtures && cd ..
            mkdir -p pkg/benchpkg && echo 'VALUE = 1' > pkg/benchpkg/__init__.py
            printf '[build-system]\\nrequires = ["setuptools"]\\nbuild-backend = "setuptools.build_meta"\\n[project]\\nname = "benchpkg"\\nversion = "1.0"\\n' > pkg/pyproject.toml
            pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /opt/bench ./pkg && rm -rf pkg
            python3 -c 'import random; f=open("/opt/bench/data.csv","w"); f.write("a,b,c,d\\n"); [f.write(f"{i},{random.random()},{random.randint(0,999)},x{i%97}\\n") for i in range(20000)]'
            """,
        ],
        start: nil, ready: nil, cpu: nil, memoryMB: 1024, files: [], draft: true, timeoutSeconds: 900)

    let runner: BenchRunner
    /// The main server's platform; the second server runs the other one.
    let platform: GVisorPlatform
    let compareRunsc: String?

    func run(_ names: [String]) async throws -> [MetricResult] {
        guard runner.bare.kind == .gvisor, let main = runner.server else {
            return names.map { .unavailable($0, unit: "ms", why: "needs the benchmark's own gVisor servers") }
        }
        let other: GVisorPlatform = platform == .systrap ? .ptrace : .systrap
        let second = try BenchServer(runtime: "gvisor", cache: runner.cache, platform: other)
        let secondAPI = second.client
        defer { second.stop() }
        let env = try await runner.pushAndWait(Self.env)
        _ = try await BenchRunner(api: secondAPI, server: second, bare: runner.bare, cache: runner.cache, runs: runner.runs, progress: false)
            .pushAndWait(Self.env)
        let mine = try await runner.api.createSandbox(API.CreateSandbox(env: env.id, timeoutSeconds: 3600, memoryMB: 1024, fromPool: false))
        let theirs = try await secondAPI.createSandbox(API.CreateSandbox(env: env.id, timeoutSeconds: 3600, memoryMB: 1024, fromPool: false))
        let old = try compareRunsc.map { try OldRuntime(binary: $0, directory: runner.bare.directory + "/old", lowers: lowerDirectories(env, data: main.data)) }
        defer { old?.remove() }
        var results: [MetricResult] = []
        for name in names {
            guard let workload = Self.workload(name, runs: runner.runs) else { continue }
            if runner.progress { FileHandle.standardError.write(Data("measuring \(name)...\n".utf8)) }
            // Warm-up, then two interleaved halves, so both platforms see the same machine.
            var half = workload
            half.runs = max(1, workload.runs / 2)
            let warm = Workload(name: workload.name, command: workload.command, runs: 1, what: workload.what)
            _ = try await timed(warm, runner.api, mine.id)
            _ = try await timed(warm, secondAPI, theirs.id)
            var here: [Double] = []
            var there: [Double] = []
            var bare: [Double] = []
            for _ in 0..<2 {
                here += try await timed(half, runner.api, mine.id)
                there += try await timed(half, secondAPI, theirs.id)
                if let old { bare += try await old.timed(Self.script(half)) }
            }
            let otherFigures = Figures.of(there.map { $0 * 1000 })
            var note = "\(workload.what), timed inside the sandbox; \(other.rawValue) through Sprout p50 "
                + String(format: "%.1f ms", otherFigures?.p50 ?? 0)
            if let otherFigures, let mineP50 = Figures.of(here.map { $0 * 1000 })?.p50 {
                note += String(format: " (%@ is %.2fx of it)", platform.rawValue, mineP50 / max(otherFigures.p50, 0.001))
            }
            let baselineName = old == nil ? "\(other.rawValue) through Sprout" : "runsc \(old!.version) bare, its default platform"
            results.append(MetricResult(name: name, unit: "ms", figures: Figures.of(here.map { $0 * 1000 })!, baselineName: baselineName,
                                        baseline: Figures.of((old == nil ? there : bare).map { $0 * 1000 }), note: note))
        }
        _ = try? await runner.api.killSandbox(mine.id)
        _ = try? await secondAPI.killSandbox(theirs.id)
        await BenchRunner.killEverything(secondAPI)
        return results
    }

    func timed(_ workload: Workload, _ api: SproutAPIClient, _ id: String) async throws -> [Double] {
        let result = try await api.run(id, API.Exec(cmd: ["bash", "-c", Self.script(workload)]))
        let runs = Self.durations(String(decoding: result.stdout, as: UTF8.self))
        guard runs.count == workload.runs else {
            throw SproutError(.internal, "\(workload.name) printed \(runs.count) of \(workload.runs) timings: \(String(decoding: result.stderr.suffix(300), as: UTF8.self))")
        }
        return runs
    }

    /// The env's overlay lower directories in the main server's store (as `SandboxLauncher` mounts them; no squashing at this depth).
    func lowerDirectories(_ env: API.Env, data: String) -> [String] {
        env.layers.reversed().map { "\(data)/layers/\($0.prefix(20))" } + ["\(runner.cache)/bases/\(env.base)"]
    }
}

/// Another runsc binary, bare: a container on an overlay of the same env
/// (its own upper directory), no network, running the timing loop.
struct OldRuntime {
    let binary: String
    let directory: String
    let version: String
    let lowers: [String]

    init(binary: String, directory: String, lowers: [String]) throws {
        self.binary = binary
        self.directory = directory
        self.lowers = lowers
        version = (try? OCIRuntime.version(of: binary)).flatMap(OCIRuntime.runscRelease).map(String.init) ?? "?"
        try FileSystem.makeDirectories(directory, mode: 0o700)
    }

    /// Runs `script` in a new container on a fresh upper directory; the timings it printed.
    func timed(_ script: String) async throws -> [Double] {
        let id = "bench-old-\(Identifiers.random(length: 8))"
        let dir = "\(directory)/\(id)"
        let root = dir + "/rootfs"
        for sub in ["upper", "work", "rootfs"] { try FileSystem.makeDirectories("\(dir)/\(sub)") }
        try await HostCommand.run(["mount", "-t", "overlay", "overlay", "-o",
                                   "lowerdir=\(lowers.joined(separator: ":")),upperdir=\(dir)/upper,workdir=\(dir)/work", root])
        defer {
            FileSystem.unmount(root)
            try? FileSystem.removeTree(dir)
        }
        let caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_SETGID", "CAP_SETUID", "CAP_KILL"]
        let config: [String: Any] = [
            "ociVersion": "1.0.2",
            "process": ["terminal": false, "user": ["uid": 0, "gid": 0], "args": ["/bin/bash", "-c", script],
                        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"], "cwd": "/",
                        "capabilities": ["bounding": caps, "effective": caps, "permitted": caps]],
            "root": ["path": root, "readonly": false],
            "hostname": id,
            "mounts": [["destination": "/proc", "type": "proc", "source": "proc"],
                       ["destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]]],
            "linux": ["namespaces": [["type": "pid"], ["type": "ipc"], ["type": "uts"], ["type": "mount"], ["type": "network"]]],
        ]
        try FileSystem.writeAtomically(dir + "/config.json", Array(try JSONSerialization.data(withJSONObject: config)))
        let output = try await HostCommand.capture(
            [binary, "--root", directory + "/state", "--network=none", "run", "--bundle", dir, id], timeout: .seconds(1800))
        _ = try? await HostCommand.capture([binary, "--root", directory + "/state", "delete", "--force", id])
        let runs = WorkloadBench.durations(output.stdout)
        guard !runs.isEmpty else { throw SproutError(.internal, "runsc \(version) printed no timings: \(output.stderr.suffix(500))") }
        return runs
    }

    func remove() {
        try? FileSystem.removeTree(directory)
    }
}
