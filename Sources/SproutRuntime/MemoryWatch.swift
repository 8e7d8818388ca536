import CSprout
import Glibc
import SproutCore
import SproutSystem

/// Tells the server the moment a sandbox's memory use crosses its limit,
/// through cgroup v1 threshold notifications: an eventfd per sandbox
/// registered on `memory.usage_in_bytes`, and one thread waiting on all of
/// them (epoll). The kernel signals a crossing in either direction; the
/// callback looks at the usage itself.
///
/// Why the server needs this: under gVisor every process of a sandbox lives
/// in one host process (the sentry), so when the cgroup's limit is reached
/// the host's OOM killer ends the whole sandbox, agent included. So the
/// cgroup gets headroom above the sandbox's limit, and at the limit the
/// server has the agent end the biggest process inside: only it dies.
public final class MemoryWatch: @unchecked Sendable {
    private struct Registration {
        var id: String
        var eventFD: Int32
        var usageFD: Int32
    }

    private let epoll: Int32
    private let lock = Lock()
    private var registrations: [UInt64: Registration] = [:]
    private var byID: [String: UInt64] = [:]
    private var nextTag: UInt64 = 1
    private let onCross: @Sendable (String) -> Void
    private let onArmFailure: @Sendable (String, Error) -> Void
    /// Where thresholds are registered: off the caller's path (below).
    private let armer = WorkerThread()

    /// `onArmFailure` hears of a sandbox whose threshold could not be
    /// registered (it then has only the kernel's hard limit).
    public init(onCross: @escaping @Sendable (String) -> Void,
                onArmFailure: @escaping @Sendable (String, Error) -> Void = { _, _ in }) throws {
        epoll = csprout_epoll_create()
        guard epoll >= 0 else { throw SproutError.system("epoll_create") }
        self.onCross = onCross
        self.onArmFailure = onArmFailure
        startThread { [self] in waitForever() }
    }

    /// Watches sandbox `id`'s memory cgroup for a crossing of `thresholdBytes`
    /// (replacing an earlier watch of it).
    ///
    /// The kernel registers a threshold only after an RCU grace period
    /// (10–20 ms here), which a resume would wait for; so the registration
    /// is written on a thread of its own, through copies of the two
    /// descriptors. Those copies keep the eventfd alive until it is
    /// registered, so an `unwatch` meanwhile still ends the registration:
    /// the kernel drops it when the eventfd's last descriptor closes.
    public func watch(id: String, thresholdBytes: Int64) throws {
        unwatch(id: id)
        let dir = Cgroups.memoryPath(id)
        let eventFD = csprout_eventfd()
        guard eventFD >= 0 else { throw SproutError.system("eventfd") }
        let usageFD = open(dir + "/memory.usage_in_bytes", O_RDONLY | O_CLOEXEC)
        guard usageFD >= 0 else {
            Glibc.close(eventFD)
            throw SproutError.system("open \(dir)/memory.usage_in_bytes")
        }
        let eventCopy = fcntl(eventFD, F_DUPFD_CLOEXEC, 0)
        let usageCopy = fcntl(usageFD, F_DUPFD_CLOEXEC, 0)
        guard eventCopy >= 0, usageCopy >= 0 else {
            for fd in [eventFD, usageFD, eventCopy, usageCopy] where fd >= 0 { Glibc.close(fd) }
            throw SproutError.system("dup")
        }
        lock.withLock {
            let tag = nextTag
            nextTag += 1
            registrations[tag] = Registration(id: id, eventFD: eventFD, usageFD: usageFD)
            byID[id] = tag
            _ = csprout_epoll_add(epoll, eventFD, tag)
        }
        let line = Array("\(eventCopy) \(usageCopy) \(thresholdBytes)".utf8)
        Task { [armer, onArmFailure] in
            do {
                try await armer.run {
                    defer {
                        Glibc.close(eventCopy)
                        Glibc.close(usageCopy)
                    }
                    let control = open(dir + "/cgroup.event_control", O_WRONLY | O_CLOEXEC)
                    guard control >= 0 else { throw SproutError.system("open \(dir)/cgroup.event_control") }
                    defer { Glibc.close(control) }
                    try Descriptor.writeAll(control, line)
                }
            } catch {
                onArmFailure(id, error)
            }
        }
    }

    /// Stops watching `id` (closing the eventfd also removes the kernel's registration).
    public func unwatch(id: String) {
        let registration: Registration? = lock.withLock {
            guard let tag = byID.removeValue(forKey: id) else { return nil }
            return registrations.removeValue(forKey: tag)
        }
        guard let registration else { return }
        _ = csprout_epoll_remove(epoll, registration.eventFD)
        Glibc.close(registration.eventFD)
        Glibc.close(registration.usageFD)
    }

    public var watched: [String] { lock.withLock { Array(byID.keys) } }

    private func waitForever() {
        while true {
            var tag: UInt64 = 0
            let n = csprout_epoll_wait_one(epoll, 1000, &tag)
            guard n == 1 else { continue }
            let registration: Registration? = lock.withLock {
                guard let registration = registrations[tag] else { return nil }
                // Drain the counter (the eventfd stays readable until read).
                var count: UInt64 = 0
                _ = Glibc.read(registration.eventFD, &count, 8)
                return registration
            }
            if let registration { onCross(registration.id) }
        }
    }
}
