import Foundation
import SproutCore
import SproutRuntime
import SproutSystem

extension SandboxLifecycle {
    /// Takes in a sandbox that another node of the fleet paused (that node
    /// is lost, or draining): its record and env from the store's handoff,
    /// its writable layer (with this host's identity files) and memory
    /// image fetched, a network slot of this host; it is then paused here
    /// and the next resume restores it. Fleet requests only (the API server
    /// asks, for the caller's team). A sandbox this node already has is
    /// returned as it is.
    func adopt(_ id: String, for identity: Identity) async throws -> SandboxRecord {
        guard identity.keyID.hasPrefix("fleet:") else {
            throw SproutError(.forbidden, "only the fleet's API servers move sandboxes between nodes")
        }
        guard let remote = stores.remote else {
            throw SproutError(.unavailable, "this node has no object store (--store): it cannot take in a sandbox paused elsewhere")
        }
        return try await gate.run(.resume, on: id) {
            if let existing = try await repository.find(id) {
                guard existing.team == identity.team else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
                guard existing.state == .killed else { return existing }
                // It ran here before it moved away (its copy here ended then): it comes back as a new record.
                try await repository.delete(id)
            }
            let handoff = try await remote.handoff(for: id)
            guard handoff.record.team == identity.team else { throw SproutError(.notFound, "no sandbox with id '\(id)'") }
            // Volumes live on the node that made them: a sandbox that mounts one cannot move to a node without it.
            for mount in handoff.record.volumeList where try await catalog.volumes.find(id: mount.volume) == nil {
                throw SproutError(.conflict, "sandbox \(id) mounts volume \(mount.volume), which is not on this node: it cannot move here")
            }
            guard let key = handoff.record.storedUpper else { throw SproutError(.malformed, "the pause of \(id) in the store names no writable layer") }
            if let env = handoff.env { _ = try await catalog.envs.insertIfAbsent(env) }
            if handoff.memory, let image = handoff.record.imageList.last { try await remote.fetchImage(image) }
            let directory = settings.directory(id)
            let slot = try host.addresses.allocate(owner: settings.slotOwner(id))
            do {
                try await remote.fetchDirectory(key, into: directory + "/upper")
                try SandboxLauncher.writeIdentityFiles(directory: directory, id: id, slot: slot, address: network.address(slot),
                                                       certificates: settings.hostCABundle)
                try FileSystem.writeAtomically(settings.storedUpperMarker(id), key)
                let adopted = try await repository.adopt(handoff.record, memory: handoff.memory, slot: slot.index, note: "taken in from the store")
                logger.withSandbox(id).notice("taken in from another node", metadata: ["memory": "\(handoff.memory)"])
                await publishStateCounts()
                return adopted
            } catch {
                host.addresses.release(slot, owner: settings.slotOwner(id))
                try? FileSystem.removeTree(directory)
                throw error
            }
        }
    }
}
