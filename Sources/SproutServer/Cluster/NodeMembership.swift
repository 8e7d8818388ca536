import Foundation
import Logging
import ServiceLifecycle
import SproutCluster
import SproutCore
import SproutSystem

/// This server as a node of a fleet (`--role node --catalog postgres://…`):
/// it registers in the fleet's catalog with its address, capacity, CPU flags
/// and runtime, and renews its lease three times per lease. A renewal the
/// catalog refuses (the lease ran out: the node was stopped or cut off),
/// or no successful renewal for a whole lease by this host's own clock
/// (the database cannot be reached), means the fleet may already count the
/// node lost: it stops its running sandboxes at once (reason `node lost`;
/// paused ones stay resumable), then registers again under a new epoch.
/// Every node also marks nodes whose lease ran out `lost`.
public final class NodeMembership: Service, Sendable {
    let catalog: ClusterCatalog
    private let pending: Locked<ClusterCatalog.Registration>
    var registration: ClusterCatalog.Registration { pending.current }
    /// `--advertise` without a port: the port this server listens on, once it does (0 before).
    let listeningPort: (@Sendable () -> Int)?
    let lease: Duration
    let lifecycle: SandboxLifecycle
    let logger: Logger
    /// The certificate served now (HTTPS), registered again when it changed (a SIGHUP read a new one).
    let certificate: (@Sendable () -> String)?
    private let current = Locked<ClusterCatalog.Membership?>(nil)
    /// Times the node fenced itself.
    let fences = Locked(0)
    /// What registrations set off (`join`), awaited when the node stops.
    private let settlings = Locked<[Task<Void, Never>]>([])

    init(catalog: ClusterCatalog, registration: ClusterCatalog.Registration, lease: Duration, lifecycle: SandboxLifecycle, logger: Logger,
         listeningPort: (@Sendable () -> Int)? = nil, certificate: (@Sendable () -> String)? = nil) {
        self.catalog = catalog
        self.certificate = certificate
        pending = Locked(registration)
        self.listeningPort = listeningPort
        self.lease = lease
        self.lifecycle = lifecycle
        self.logger = logger
    }

    public var membership: ClusterCatalog.Membership? { current.current }

    /// Registers (again). What follows from it (ending sandboxes) runs
    /// beside the lease's renewals, never before them: it can take longer
    /// than a short lease.
    func join() async throws {
        // What runs here before this registration: if the fleet had counted the node lost, that ended for the fleet.
        let running = (try? await lifecycle.repository.all(in: [.running]))?.map(\.id) ?? []
        let membership = try await catalog.register(registration, lease: lease)
        current.withLock { $0 = membership }
        logger.notice("joined the fleet", metadata: [
            "node": "\(membership.node)", "epoch": "\(membership.epoch)", "address": "\(registration.address)",
            "cpuCapacity": "\(registration.cpuCapacity)", "memoryMB": "\(registration.memoryMB)",
        ])
        let settling = Task {
            if membership.wasLost && !running.isEmpty {
                // Back after the fleet counted it lost (a restart, a partition): its running sandboxes ended for the fleet, so here too.
                logger.warning("the fleet counted this node lost; what ran here ends", metadata: ["node": "\(membership.node)", "sandboxes": "\(running.count)"])
                await withTaskGroup(of: Void.self) { group in
                    for id in running {
                        group.addTask {
                            _ = try? await self.lifecycle.kill(id, reason: "node lost", error: "node lost: the fleet counted this node lost while it was away")
                        }
                    }
                }
            }
            await dropMoved(membership)
        }
        settlings.withLock { $0.append(settling) }
    }

    public func run() async throws {
        if let listeningPort {
            // Advertised with the port the server took: known once it listens.
            while listeningPort() == 0 {
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .milliseconds(20)) }
                if Task.isShuttingDownGracefully || Task.isCancelled { return await catalog.shutdown() }
            }
            pending.withLock { $0.address += ":\(listeningPort())" }
            do {
                try await join()
            } catch {
                logger.error("cannot join the fleet; trying again at the next renewal", metadata: ["error": "\(error)"])
            }
        }
        let period = ClusterCatalog.seconds(lease) / 3
        var lastRenewal = monotonicSeconds()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(period)) }
            if Task.isShuttingDownGracefully || Task.isCancelled { break }
            do {
                if let membership = current.current, try await catalog.renew(membership, lease: lease) {
                    lastRenewal = monotonicSeconds()
                    if let serving = certificate?(), serving != registration.certificate {
                        try await catalog.updateCertificate(serving, of: membership)
                        pending.withLock { $0.certificate = serving }
                        logger.notice("the certificate this node serves changed; the fleet's catalog has the new one")
                    }
                    try await releaseEnded(membership)
                } else {
                    await fence(why: "the fleet's catalog refused its lease renewal (the lease ran out)")
                    lastRenewal = monotonicSeconds()
                }
                for lost in try await catalog.markLost() { logger.warning("node lost: its lease ran out", metadata: ["node": "\(lost)"]) }
            } catch {
                logger.error("cannot reach the fleet's catalog", metadata: ["error": "\(error)"])
                if monotonicSeconds() - lastRenewal > ClusterCatalog.seconds(lease) {
                    await fence(why: "no lease renewal for longer than the lease (the catalog cannot be reached)")
                    lastRenewal = monotonicSeconds()
                }
            }
        }
        for settling in settlings.withLock({ $0 }) { await settling.value }
        await catalog.shutdown()
    }

    /// Frees the reservations of this node's sandboxes that ended here (a
    /// kill, a timeout, a death). One it does not know yet is left alone: a
    /// create under way (reserved as `pending-…` until the node answers) or
    /// a sandbox being moved here (reserved before it is taken in).
    private func releaseEnded(_ membership: ClusterCatalog.Membership) async throws {
        for id in try await catalog.sandboxes(on: membership.node) where !id.hasPrefix("pending-") {
            if try await lifecycle.repository.find(id)?.state == .killed {
                try await catalog.release(id, by: membership)
            }
        }
    }

    /// Sandboxes paused here that the fleet has since moved to another node
    /// (this one was lost meanwhile): this node's copy ends.
    private func dropMoved(_ membership: ClusterCatalog.Membership) async {
        for record in (try? await lifecycle.repository.all(in: [.paused])) ?? [] {
            guard let placement = try? await catalog.placement(of: record.id), placement.node != membership.node else { continue }
            logger.notice("a sandbox paused here was moved to another node; this copy ends", metadata: ["sandbox": "\(record.id)", "node": "\(placement.node)"])
            _ = try? await lifecycle.kill(record.id, reason: "moved", error: "moved to node \(placement.node)")
        }
    }

    /// Stops the running sandboxes, then registers again (if the catalog answers).
    private func fence(why: String) async {
        fences.withLock { $0 += 1 }
        logger.critical("fenced: stopping this node's running sandboxes", metadata: ["why": "\(why)"])
        current.withLock { $0 = nil }
        await lifecycle.killAll(reason: "node lost", error: "node lost: \(why)")
        do {
            try await join()
        } catch {
            logger.error("cannot register again; retrying at the next renewal", metadata: ["error": "\(error)"])
        }
    }

    /// What this host offers: its cores times `overcommit`, its memory, the
    /// data directory's free disk, its CPU's flags and its runtime.
    static func registration(
        id: String, address: String, overcommit: Double, dataDirectory: String, runtime: String, certificate: String
    ) -> ClusterCatalog.Registration {
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        let cpuinfo = (try? Descriptor.readFile("/proc/cpuinfo", limit: 4 << 20)).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let flagsLine = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") }
        let flags = flagsLine.map { Set($0.split(separator: ":", maxSplits: 1).last?.split(separator: " ").map(String.init) ?? []) } ?? []
        return ClusterCatalog.Registration(
            id: id, address: address, cpuCapacity: cores * overcommit, memoryMB: Int64(MemInfo.totalMB() ?? 0),
            diskMB: (FileSystem.freeBytes(dataDirectory) ?? 0) >> 20, cpuFlags: flags, runtime: runtime, certificate: certificate)
    }
}
