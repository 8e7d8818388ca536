import SproutAPI
import Foundation
import Logging
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
    private let watcher: Locked<MemoryWatch?> = Locked(nil)
    /// Sandboxes an enforcer is looking after right now (one at a time each).
    private let enforcing = Locked<Set<String>>([])
    let runtime: any SandboxRuntime
    let sandboxes: SandboxRepository
    let agents: AgentConnector
    let metrics: ServerMetrics
    let logger: Logger

    /// Starts watching memory cgroups (a real host; the fast tier has none).
    init(runtime: any SandboxRuntime, sandboxes: SandboxRepository, agents: AgentConnector, metrics: ServerMetrics, logger: Logger) throws {
        self.runtime = runtime
        self.sandboxes = sandboxes
        self.agents = agents
        self.metrics = metrics
        self.logger = logger
        let watch = try MemoryWatch(onCross: { [weak self] id in
            guard let self else { return }
            Task { await self.enforce(id) }
        }, onArmFailure: { id, error in
            // A sandbox stopped meanwhile has no cgroup left to watch: nothing to say.
            guard FileSystem.exists(Cgroups.memoryPath(id)) else { return }
            logger.withSandbox(id).warning("cannot watch the sandbox's memory: only the kernel's hard limit applies",
                                           metadata: ["error": "\(error)"])
        })
        watcher.withLock { $0 = watch }
    }

    /// Throws when the cgroup cannot be watched (the sandbox then has only the kernel's hard limit).
    func watch(_ record: SandboxRecord) throws {
        try watcher.current?.watch(id: record.id, thresholdBytes: Int64(record.memoryMB) << 20)
    }

    func unwatch(_ id: String) { watcher.current?.unwatch(id: id) }

    /// Called when sandbox `id`'s memory use crossed its limit (either way).
    /// The kernel counts page cache too, so at the crossing the working set
    /// may still be under the limit: while the usage stays above it, look
    /// ten times a second, and whenever the working set is over the limit,
    /// have the agent end the biggest process. Ends when the usage is back
    /// under the limit (the next crossing calls again) or the sandbox stops.
    func enforce(_ id: String) async {
        guard enforcing.withLock({ $0.insert(id).inserted }) else { return }
        defer { enforcing.withLock { _ = $0.remove(id) } }
        guard var record = try? await sandboxes.find(id), record.state.hasContainer else { return }
        let limit = Int64(record.memoryMB) << 20
        let log = logger.withSandbox(id)
        var looks = 0
        while let usage = runtime.usage(id: id), usage.memoryBytes > limit {
            looks += 1
            if looks % 10 == 0 {
                // Once a second: is it still running (a pause or kill takes the cgroup's processes away)?
                guard let current = try? await sandboxes.find(id), current.state.hasContainer else { return }
                record = current
            }
            guard usage.workingSetBytes > limit else {
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            let victim: ProcessMemory?
            do {
                victim = try await agents.client(record, connectTimeout: 2).killLargest()
            } catch {
                log.warning("over its memory limit, but the agent did not answer", metadata: ["error": "\(error)"])
                return
            }
            guard let victim else {
                log.warning("over its memory limit with no process to end", metadata: ["workingSet": "\(usage.workingSetBytes)"])
                try? await Task.sleep(for: .milliseconds(500))
                continue
            }
            let message = "out of memory: ended process \(victim.pid) (\(victim.command)) holding \(victim.rssBytes >> 20) MiB; the sandbox's limit is \(record.memoryMB) MiB"
            log.warning("\(message)")
            metrics.outOfMemoryKill()
            await sandboxes.note(id, kind: "oom", message)
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
