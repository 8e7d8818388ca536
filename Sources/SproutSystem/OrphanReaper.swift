import CSprout
import Glibc

/// Makes this process the reaper of the daemons its children leave behind,
/// and reaps those promptly.
///
/// `runsc run --detach` exits and leaves the sandbox and gofer processes
/// orphaned. Without a subreaper they go to PID 1, which on some hosts (a
/// VM's or container's init) reaps only now and then; until it does, runsc
/// sees the dead sandbox as alive and `runsc delete` waits about a second for
/// it. As a subreaper, this process gets them, and a thread reaps each one as
/// soon as it exits. Only processes with one of the given names are reaped
/// here: every other child is waited for by whoever spawned it.
public enum OrphanReaper {
    /// Starts the reaper for runtime daemons (`runsc-sandbox`, `runsc-gofer`); once per process.
    public static func startForRuntimes() { _ = started }

    /// runsc's daemons re-execute `/proc/self/exe`, so their name is `exe`
    /// (a zombie has no command line left to tell more). Nothing Sprout
    /// spawns itself is called that.
    private static let started: Void = start(names: ["exe", "runsc-sandbox", "runsc-gofer"])

    static func start(names: Set<String>) {
        guard csprout_set_child_subreaper() == 0 else { return }
        startThread {
            while true {
                let pid = csprout_peek_exited_child()
                if pid < 0 {
                    if errno != EINTR { usleep(50_000) }  // ECHILD: no children yet
                    continue
                }
                if pid > 0, let name = processName(pid), names.contains(name) {
                    var status: Int32 = 0
                    waitpid(pid, &status, WNOHANG)
                } else {
                    // Someone else's child: its own waiter reaps it in a moment.
                    usleep(2_000)
                }
            }
        }
    }

    static func processName(_ pid: pid_t) -> String? {
        guard let bytes = try? Descriptor.readFile("/proc/\(pid)/comm", limit: 64) else { return nil }
        return String(decoding: bytes, as: UTF8.self).trimmingNewline
    }
}

extension String {
    fileprivate var trimmingNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
