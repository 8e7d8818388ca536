import Foundation
import Logging
import SproutAgentClient
import SproutCore
import SproutRuntime
import SproutStore
import SproutSystem
import SproutBlocking

/// What every memory checkpoint needs: refusing (before anything changes)
/// what would make it fail, taking it, and starting a sandbox again from its
/// files when gVisor ended it anyway.
///
/// Two facts about runsc shape this. It cannot save a TCP endpoint in any
/// connected state (TIME_WAIT included), so before a checkpoint the server
/// refuses if a process inside holds a connection, and ends every host-side
/// connection itself. And a failed save ends the sandbox, so a failed
/// checkpoint restarts the sandbox from its files and says so.
struct Checkpointer: Sendable {
    let settings: Settings
    let runtime: any SandboxRuntime
    let network: any SandboxNetworking
    let launcher: SandboxLauncher
    let agents: AgentConnector
    let images: ImageStore
    let keptImages: KeptImages
    let logger: Logger

    /// Refuses what would make the checkpoint fail: too little disk for the
    /// image, or a TCP connection a process inside holds open.
    func preflight(_ record: SandboxRecord) async throws {
        let usage = runtime.usage(id: record.id)?.memoryBytes ?? Int64(record.memoryMB) << 20
        let floor = settings.minimumFreeBytes
        if let free = FileSystem.freeBytes(settings.dataDirectory), free < usage + floor {
            throw SproutError(.unavailable,
                "not enough disk space to save sandbox \(record.id)'s memory: \(free >> 20) MiB free, \((usage + floor) >> 20) MiB needed; it keeps running")
        }
        let host = NetworkSlot(index: record.slot ?? 0).hostAddress
        let agent = agents.client(record)
        // Connections that are closing (the host hung up, the process has
        // not closed yet) get two seconds to finish.
        let deadline = monotonicSeconds() + 2
        while true {
            var open: [(endpoint: String, closing: Bool)] = []
            for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
                guard let bytes = try? await agent.read(table, limit: 1 << 20) else { continue }
                open += Self.connectedEndpoints(String(decoding: bytes, as: UTF8.self), host: host)
            }
            if open.isEmpty { return }
            if open.allSatisfy(\.closing) && monotonicSeconds() < deadline {
                try await Task.sleep(for: .milliseconds(50))
                continue
            }
            throw SproutError(.conflict,
                "sandbox \(record.id) has open TCP connections (\(open.prefix(4).map(\.endpoint).joined(separator: ", "))); gVisor cannot save them: close them and retry")
        }
    }

    /// "local -> remote" of every connected endpoint in a /proc/net/tcp
    /// table, and whether it is closing. Left out: listeners, closed
    /// endpoints, and connections the host holds open (state ESTABLISHED
    /// with `host`): the server resets those itself before the checkpoint.
    static func connectedEndpoints(_ table: String, host: String) -> [(endpoint: String, closing: Bool)] {
        TCPEndpoint.parse(table).compactMap { endpoint in
            guard endpoint.isConnection else { return nil }
            if endpoint.state == TCPEndpoint.established && endpoint.remote.hasPrefix(host + ":") { return nil }
            return (endpoint.description, endpoint.isClosing)
        }
    }

    /// Checkpoints the sandbox into `directory` (its container ends).
    func take(_ record: SandboxRecord, into directory: String) async throws {
        launcher.unwatch(record.id)
        let slot = NetworkSlot(index: record.slot ?? 0)
        await network.closeConnections(to: slot)
        await awaitClosed(record)
        // Requests into the sandbox are not held off during a checkpoint, so a
        // connection may open after that reset; the container is gone once
        // the checkpoint ends (or fails) and nothing there answers, so those
        // end too (a read on one would wait for a reply that never comes).
        do {
            try await runtime.checkpoint(id: record.id, rootfs: launcher.rootfs(record.id, layers: []), imageDirectory: directory)
        } catch {
            await network.closeConnections(to: slot)
            throw error
        }
        await network.closeConnections(to: slot)
    }

    /// Waits until the sandbox's side of the connections just reset has
    /// taken the resets in (the agent says when; see `AgentClient.quiesce`).
    /// An agent from before `net.quiesce` gets the fixed wait it had; one
    /// that finds a connection still open after its bound leaves it to the
    /// checkpoint, which then fails and restarts the sandbox from its files.
    func awaitClosed(_ record: SandboxRecord) async {
        do {
            try await agents.client(record).quiesce()
        } catch let error as SproutError where error.code == .malformed {
            try? await Task.sleep(for: .milliseconds(30))
        } catch {
            logger.withSandbox(record.id).warning("connections still open before the checkpoint", metadata: ["error": "\(error)"])
        }
    }

    /// Checkpoints the sandbox and stores its image in the chunk store. The
    /// caller holds a lease on the image store until the image is referenced.
    func takeIntoStore(_ record: SandboxRecord) async throws -> ImageStore.Stored {
        let imageDirectory = settings.directory(record.id) + "/image"
        try await take(record, into: imageDirectory)
        let stored: ImageStore.Stored
        do {
            stored = try await onThread { try images.store(directory: imageDirectory) }
        } catch {
            try? FileSystem.removeTree(imageDirectory)
            throw error
        }
        // Its files as runsc wrote them stay for the next resume here, within the budget.
        await keptImages.keep(sandbox: record.id, image: stored.id, directory: imageDirectory, sandboxDirectory: settings.directory(record.id))
        return stored
    }
}
