import Foundation
import Glibc
import SproutAgentProtocol
import SproutAgentClient
import SproutCore
import SproutSystem

// Loopback benchmark of the agent protocol: the `true` round trip and file
// transfer throughput, agent and client on this host.
//
//   sprout-agent-bench [--runs N] [--agent PATH]

var runs = 1000
var binary = LocalAgent.binaryBesideExecutable()
var args = CommandLine.arguments.dropFirst()
while let arg = args.popFirst() {
    switch arg {
    case "--runs": runs = Int(args.popFirst() ?? "") ?? runs
    case "--agent": binary = args.popFirst()
    default:
        print("usage: sprout-agent-bench [--runs N] [--agent PATH]")
        exit(2)
    }
}
guard let binary else {
    print("sprout-agent not found; pass --agent PATH")
    exit(2)
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
}

var template = Array("/tmp/sprout-agent-bench-XXXXXX".utf8CString)
guard mkdtemp(&template) != nil else { fatalError("mkdtemp failed") }
let workdir = cStringToString(template)
let agent = try LocalAgent(binary: binary, workdir: workdir)
defer { agent.stop() }
let client = agent.client

// Round trip: start `true`, receive its exit.
for _ in 0..<50 { _ = try await client.run(ProcessSpec(cmd: ["/bin/true"])) }
var samples: [Double] = []
for _ in 0..<runs {
    let t0 = monotonicSeconds()
    let result = try await client.run(ProcessSpec(cmd: ["/bin/true"]))
    samples.append((monotonicSeconds() - t0) * 1000)
    precondition(result.exit == ProcessExit(code: 0))
}
samples.sort()
print(String(format: "exec.true   runs=%d  p50=%.3f ms  p99=%.3f ms  min=%.3f ms  max=%.3f ms",
    runs, percentile(samples, 0.5), percentile(samples, 0.99), samples.first!, samples.last!))

// 64 MiB upload and download, 5 runs each.
let local = workdir + "/local.bin"
let back = workdir + "/back.bin"
let fd = open(local, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
for _ in 0..<64 { try Descriptor.writeAll(fd, Identifiers.randomBytes(1 << 20)) }
close(fd)
var up: [Double] = []
var down: [Double] = []
for _ in 0..<5 {
    var t0 = monotonicSeconds()
    try await client.upload(localPath: local, to: workdir + "/remote.bin")
    up.append(64 * 1.048576 / (monotonicSeconds() - t0))
    t0 = monotonicSeconds()
    try await client.download(workdir + "/remote.bin", to: back)
    down.append(64 * 1.048576 / (monotonicSeconds() - t0))
}
up.sort()
down.sort()
print(String(format: "files.upload   64 MiB x5  median=%.0f MB/s  min=%.0f  max=%.0f", up[2], up[0], up[4]))
print(String(format: "files.download 64 MiB x5  median=%.0f MB/s  min=%.0f  max=%.0f", down[2], down[0], down[4]))
agent.stop()
_ = try? await client.health()
let rm = try Spawn.spawn(path: "/bin/rm", argv: ["rm", "-rf", workdir], env: [], options: Spawn.Options())
waitpid(rm, nil, 0)
