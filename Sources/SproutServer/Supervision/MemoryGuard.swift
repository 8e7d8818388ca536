import Foundation
import SproutAgentProtocol
import SproutCore
import SproutRuntime
import SproutSystem

/// Keeps a sandbox's memory within its limit by ending the process that
/// holds the most, so that only that process dies.
///
/// The kernel cannot do this for gVisor: there every process of a sandbox is
/// memory of one host process (the sentry), and the host's OOM killer, once
/// the cgroup is full, ends the sentry: the whole sandbox, agent and all
/// (measured: `Memory cgroup out of memory: Killed process … (exe)`). So the
/// cgroup is given headroom above the limit (`SandboxLauncher.headroomMB`),
/// `MemoryWatch` reports the moment usage crosses the limit itself, and the
/// agent inside ends the biggest process; gVisor hands the memory back at
/// once (measured: 138 MiB → 18 MiB). The same holds on runc, where the
/// kernel's OOM killer at the (higher) hard limit remains the backstop.
final class MemoryGuard: Sendable {
    private let watcher: MemoryWatch

    init(onCross: @escaping @Sendable (String) -> Void) throws {
        watcher = try MemoryWatch(onCross: onCross)
    }

    func watch(_ record: SandboxRecord) {
        try? watcher.watch(id: record.id, thresholdBytes: Int64(record.memoryMB) << 20)
    }

    func unwatch(_ id: String) { watcher.unwatch(id: id) }
}

extension ServerCore {
    var memoryWatch: MemoryGuard? { memoryGuardBox.current }

    /// Starts enforcing memory limits (real hosts only).
    func startMemoryGuard() throws {
        guard host.watchesMemory else { return }
        let guardian = try MemoryGuard { [weak self] id in
            guard let self else { return }
            Task { await self.enforceMemoryLimit(id) }
        }
        memoryGuardBox.withLock { $0 = guardian }
    }

    /// Called when sandbox `id`'s memory crossed its limit (either way):
    /// while its working set is over the limit, end the biggest process.
    func enforceMemoryLimit(_ id: String) async {
        guard let record = try? await catalog.sandboxes.find(id), record.state == .running || record.state == .pooled else { return }
        let limit = Int64(record.memoryMB) << 20
        let log = logger.withSandbox(id)
        for _ in 0..<8 {
            guard let usage = runtime.usage(id: id), usage.workingSetBytes > limit else { return }
            let victim: ProcessMemory?
            do {
                victim = try await agent(record, connectTimeout: 2).killLargest()
            } catch {
                log.warning("over its memory limit, but the agent did not answer", metadata: ["error": "\(error)"])
                return
            }
            guard let victim else { return }
            let message = "out of memory: ended process \(victim.pid) (\(victim.command)) holding \(victim.rssBytes >> 20) MiB; the sandbox's limit is \(record.memoryMB) MiB"
            log.warning("\(message)")
            metrics.outOfMemoryKill()
            await catalog.sandboxes.note(id, kind: "oom", message)
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
