import Foundation
import GRDB
import SproutAgentProtocol
import SproutClient
import SproutCore
import SproutRuntime
import SproutSystem

extension SandboxManager {
    /// Brings the host and the catalog back in line after a crash: a sandbox
    /// that is still running with a healthy agent is adopted again; everything
    /// else this server made (containers, namespaces, veths, addresses,
    /// directories) is removed, and its record marked killed.
    public func reconcile() async -> (adopted: [String], removed: [String]) {
        let records = (try? await catalog.db.read { db in
            try SandboxRecord.filter(Column("state") != SandboxState.killed.rawValue).fetchAll(db)
        }) ?? []
        let runtime = self.runtime
        let containers = Set(await (try? onThread { runtime.containerIDs() }) ?? [])
        var adopted: Set<String> = []
        var removed: [String] = []
        for var record in records {
            // Paused sandboxes hold no container: their image, files, namespace and address wait for resume.
            if record.state == .paused || record.state == .resuming {
                let running = containers.contains(record.id) ? await agentAnswers(record) : false
                if record.state == .resuming && running {
                    record.state = .running
                    record.expiresAt = now() + (record.remainingSeconds ?? Double(settings.defaultTimeoutSeconds))
                    record.remainingSeconds = nil
                } else {
                    if containers.contains(record.id) { await removeContainer(record.id) }
                    record.state = .paused
                }
                _ = try? await catalog.db.write { [record] in try record.update($0) }
                adopted.insert(record.id)
                logger.withSandbox(record.id).info("kept after restart", metadata: ["state": "\(record.state.rawValue)"])
                continue
            }
            if record.state == .pausing, containers.contains(record.id), await agentAnswers(record) {
                record.state = .running
                _ = try? await catalog.db.write { [record] in try record.update($0) }
                adopted.insert(record.id)
                continue
            }
            // Build sandboxes (no team) belonged to builds that died with the server.
            if record.state == .running, !record.team.isEmpty, containers.contains(record.id), await agentAnswers(record) {
                adopted.insert(record.id)
                logger.withSandbox(record.id).info("adopted after restart")
                continue
            }
            await removeHostResources(id: record.id, slot: record.slot.map { NetworkSlot(index: $0) })
            var ended = record
            ended.state = .killed
            ended.endedAt = now()
            ended.error = record.state == .pooled ? "pooled; replaced after a restart"
                : record.team.isEmpty ? "build sandbox of an interrupted build"
                : record.state == .pausing ? "lost: the server stopped while it was being paused"
                : "lost when the server stopped unexpectedly"
            _ = try? await catalog.db.write { [ended] in try ended.update($0) }
            removed.append(record.id)
            logger.withSandbox(record.id).warning("removed after restart", metadata: ["was": "\(record.state.rawValue)"])
        }
        // Anything on the host the catalog does not account for.
        var orphans = Set(containers).union(network.existingSandboxIDs())
        orphans.formUnion(((try? FileSystem.children(sandboxesDirectory)) ?? []))
        let prefix = "\(instance)/"
        let slots = pool.slots { $0.hasPrefix(prefix) }
        orphans.formUnion(slots.map { String($0.1.dropFirst(prefix.count)) })
        orphans.subtract(adopted)
        orphans.subtract(removed)
        for id in orphans.sorted() {
            let slot = slots.first { $0.1 == prefix + id }?.0
            await removeHostResources(id: id, slot: slot)
            removed.append(id)
            logger.withSandbox(id).warning("removed orphaned host resources")
        }
        // Builds cannot survive a restart: their tasks died with the server.
        _ = try? await catalog.db.write { db in
            try db.execute(sql: "UPDATE build SET status = 'failed', error = 'interrupted by a server restart', finishedAt = ? WHERE status = 'running'",
                           arguments: [now()])
        }
        await collectImages()
        removeInterruptedWork()
        publishStateCounts()
        return (adopted.sorted(), removed)
    }

    /// Temporary files and directories of work a crash cut short: a layer
    /// being frozen or squashed, a blob being uploaded, a fork's image, a
    /// file being written atomically. None is referenced by anything.
    func removeInterruptedWork() {
        let data = settings.dataDirectory
        var dirs = [data + "/layers", data + "/blobs", sandboxesDirectory, data + "/images/manifests", data + "/images/ready"]
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

    private func agentAnswers(_ record: SandboxRecord) async -> Bool {
        guard record.slot != nil else { return false }
        var client = record.agentClient
        client.connectTimeoutSeconds = 2
        return (try? await client.health()) != nil
    }
}
