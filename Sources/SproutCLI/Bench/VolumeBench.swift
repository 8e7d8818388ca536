import Foundation
import SproutAPI
import SproutCore

/// `volume.write` and `volume.read`: 256 MiB written (with fsync) and read
/// back inside one sandbox, on a volume and on the sandbox's own root file
/// system in turn, timed inside the sandbox (bash's EPOCHREALTIME around dd).
/// The read follows the write, so both sides read what their file system
/// still caches.
extension BenchRunner {
    static let volumeMetrics = ["volume.write", "volume.read"]

    func volumeIO(write: Bool) async throws -> MetricResult {
        let name = "bench-\(Identifiers.random(length: 8))"
        _ = try await api.createVolume(API.CreateVolume(name: name, sizeMB: 1024))
        let sandbox = try await api.createSandbox(API.CreateSandbox(env: "debian", memoryMB: 2048, fromPool: false,
                                                                    volumes: [API.VolumeMount(volume: name, path: "/vol")]))
        let mb = 256 * 1.048576
        var onVolume: [Double] = []
        var onRoot: [Double] = []
        do {
            for _ in 0..<Swift.max(3, Swift.min(runs, 7)) {
                for (directory, into) in [("/vol", 0), ("/var/tmp", 1)] {
                    let (writeSeconds, readSeconds) = try await timedCopy(sandbox.id, file: directory + "/bench.bin")
                    let rate = mb / (write ? writeSeconds : readSeconds)
                    if into == 0 { onVolume.append(rate) } else { onRoot.append(rate) }
                }
            }
        } catch {
            await killAll([sandbox.id])
            try? await api.deleteVolume(name, force: true)
            throw error
        }
        await killAll([sandbox.id])
        try await api.deleteVolume(name, force: true)
        return MetricResult(
            name: write ? "volume.write" : "volume.read", unit: "MB/s", figures: Figures.of(onVolume)!,
            baselineName: "the sandbox's own root file system", baseline: Figures.of(onRoot)!,
            note: "256 MiB \(write ? "written with dd conv=fsync" : "read with dd just after its write") inside one sandbox (\(server == nil ? "" : "this server's runtime"))")
    }

    /// Seconds to write the file (fsync included) and to read it back.
    private func timedCopy(_ id: String, file: String) async throws -> (Double, Double) {
        let script = """
            rm -f \(file); s=$EPOCHREALTIME; dd if=/dev/zero of=\(file) bs=1M count=256 conv=fsync 2>/dev/null; m=$EPOCHREALTIME
            dd if=\(file) of=/dev/null bs=1M 2>/dev/null; e=$EPOCHREALTIME; rm -f \(file); echo "$s $m $e"
            """
        let result = try await api.run(id, API.Exec(cmd: ["bash", "-c", script]))
        let times = result.stdoutText.split(whereSeparator: \.isWhitespace).compactMap { Double($0) }
        guard result.exit.code == 0, times.count == 3 else {
            throw SproutError(.internal, "the volume benchmark's copy failed: \(result.stderrText.suffix(300))")
        }
        return (times[1] - times[0], times[2] - times[1])
    }
}
