import SproutAPI
import Foundation
import SproutCore
import SproutRuntime
import SproutSystem
import SproutBlocking

/// Brings the host and the catalog back in line at start: every record is
/// run through `SandboxMachine`'s `recovered` event with what is actually on
/// the host (a running sandbox whose agent answers is adopted again, a paused
/// one keeps its image and files, anything half-made is removed), anything
/// on the host the catalog does not account for is removed, and this
/// server's firewall table is made to match the sandboxes that remain.
struct Reconciler: Sendable {
    let lifecycle: SandboxLifecycle

    var launcher: SandboxLauncher { lifecycle.launcher }

    func run() async -> (adopted: [String], removed: [String]) {
        let repository = lifecycle.repository
        let records = (try? await repository.all(in: SandboxState.allCases.filter { $0 != .killed })) ?? []
        let containers = Set(await lifecycle.runtime.containerIDs())
        var kept: Set<String> = []
        var removed: [String] = []
        for record in records {
            let log = lifecycle.logger.withSandbox(record.id)
            // Build sandboxes (no team) and pooled ones belonged to work that died with the server.
            let disposable = record.team.isEmpty || record.state == .pooled
            let alive: Bool
            if disposable {
                alive = false
            } else if record.state == .paused {
                alive = containers.contains(record.id)
            } else {
                alive = containers.contains(record.id) ? await agentAnswers(record) : false
            }
            let wasResuming = record.state == .resuming
            let wasCheckpointing = record.state == .pausing || record.state == .forking
            let fallback = Double(lifecycle.settings.defaultTimeoutSeconds)
            let reason = record.state == .pooled ? "pooled; replaced after a restart"
                : record.team.isEmpty ? "build sandbox of an interrupted build"
                : "lost when the server stopped unexpectedly"
            do {
                let (recovered, action) = try await repository.transition(record.id, .recovered(containerAlive: alive), note: "server restart") { record in
                    // A resume that finished as the server stopped: its timeout runs again.
                    if wasResuming && record.state == .running {
                        record.expiresAt = lifecycle.clock.now + (record.remainingSeconds ?? fallback)
                        record.remainingSeconds = nil
                        record.pausedAt = nil
                    }
                    // A checkpoint cut short with the container stopped: asleep on its files.
                    // (What was asked never finished: the next request boots it again.)
                    if wasCheckpointing && record.state == .paused {
                        record.fallAsleep(at: lifecycle.clock.now, autoResume: true,
                                          error: "the server stopped during a checkpoint: the files are kept, the processes were lost")
                    }
                }
                await lifecycle.perform(action, recovered)
                switch action {
                case .teardown:
                    try await repository.transition(record.id, .tornDown) { record in
                        record.endedAt = lifecycle.clock.now
                        record.error = reason
                    }
                    removed.append(record.id)
                    log.warning("removed after restart", metadata: ["was": "\(record.state.rawValue)"])
                case .removeContainer:
                    kept.insert(record.id)
                    log.info("kept after restart", metadata: ["state": "\(recovered.state.rawValue)"])
                default:
                    kept.insert(record.id)
                    if recovered.state == .running {
                        await launcher.watch(recovered)
                        log.info("adopted after restart")
                    } else {
                        log.info("kept after restart", metadata: ["state": "\(recovered.state.rawValue)"])
                    }
                }
            } catch {
                log.error("cannot reconcile", metadata: ["error": "\(error)"])
            }
        }
        removed += await removeOrphans(keeping: kept.union(removed))
        // The firewall: exactly the policies of what remains (one atomic change).
        let live = (try? await repository.all(in: [.running, .paused])) ?? []
        let policies = Dictionary(uniqueKeysWithValues: live.filter { !$0.policy.isOpen }.map { ($0.id, $0.policy) })
        do {
            try await lifecycle.network.applyPolicies(policies)
        } catch {
            lifecycle.logger.error("cannot re-establish network policies", metadata: ["error": "\(error)"])
        }
        // Builds cannot survive a restart: their tasks died with the server.
        _ = try? await lifecycle.catalog.builds.interruptAll()
        await lifecycle.releaseDeletedEnvs()
        await lifecycle.collector.collect(.images)
        await removeInterruptedWork()
        await lifecycle.publishStateCounts()
        return (kept.sorted(), removed)
    }

    /// Containers, namespaces, directories and addresses this server made
    /// that no record accounts for.
    private func removeOrphans(keeping known: Set<String>) async -> [String] {
        var orphans = Set(await lifecycle.runtime.containerIDs()).union(lifecycle.network.existingSandboxIDs())
        orphans.formUnion((try? FileSystem.children(lifecycle.settings.sandboxesDirectory))?.filter { !$0.hasPrefix(".") } ?? [])
        let prefix = "\(lifecycle.settings.instance)/"
        let slots = lifecycle.host.addresses.slots { $0.hasPrefix(prefix) }
        orphans.formUnion(slots.map { String($0.1.dropFirst(prefix.count)) })
        orphans.subtract(known)
        for id in orphans.sorted() {
            let slot = slots.first { $0.1 == prefix + id }?.0
            // The policy is unknown; the table is rebuilt from the catalog right after.
            await launcher.teardown(id: id, slot: slot, policy: .open)
            lifecycle.logger.withSandbox(id).warning("removed orphaned host resources")
        }
        return orphans.sorted()
    }

    /// Temporary files and directories of work a crash cut short: a layer
    /// being frozen or squashed, a blob being uploaded, a fork's image, a
    /// file being written atomically. None is referenced by anything.
    private func removeInterruptedWork() async {
        let data = lifecycle.settings.dataDirectory
        let logger = lifecycle.logger
        let sandboxes = lifecycle.settings.sandboxesDirectory
        _ = try? await onThread {
            var dirs = [data + "/layers", data + "/blobs", sandboxes, data + "/images/manifests", data + "/images/ready"]
            dirs += ((try? FileSystem.children(data + "/images/chunks")) ?? []).map { data + "/images/chunks/" + $0 }
            let prefixes = [".freeze-", ".squashing-", ".upload-", ".fork-"]
            for dir in dirs {
                for name in (try? FileSystem.children(dir)) ?? [] where prefixes.contains(where: name.hasPrefix) || name.contains(".tmp-") {
                    do {
                        try FileSystem.removeTree(dir + "/" + name)
                        logger.info("removed the leftovers of interrupted work", metadata: ["path": "\(dir)/\(name)"])
                    } catch {
                        logger.error("cannot remove \(dir)/\(name): \(error)")
                    }
                }
            }
        }
    }

    private func agentAnswers(_ record: SandboxRecord) async -> Bool {
        guard record.slot != nil else { return false }
        return (try? await lifecycle.agents.client(record, connectTimeout: 2).health()) != nil
    }
}
