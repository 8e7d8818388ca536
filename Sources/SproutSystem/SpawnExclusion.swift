import CSprout
import Glibc

/// Keeps a spawned child from holding a descriptor of an executable file
/// this process is writing.
///
/// A child spawned while another thread has a file open for writing holds a
/// copy of that descriptor until it execs; starting the file in that window
/// fails with `Text file busy` (ETXTBSY). So `Spawn.spawn` holds this lock
/// shared while it spawns (a vfork'd child has exec'd or exited when
/// `posix_spawn` returns), and writing an executable file holds it
/// exclusively from open to close. Host commands spawned by swift-subprocess
/// are outside it (it forks in its own code); for those, `Spawn.spawn`
/// tries again for a moment on ETXTBSY.
public enum SpawnExclusion {
    private final class Storage: @unchecked Sendable {
        var lock = pthread_rwlock_t()
        init() { csprout_rwlock_init_writer_preferred(&lock) }
    }
    private static let storage = Storage()

    static func spawning<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_rdlock(&storage.lock)
        defer { pthread_rwlock_unlock(&storage.lock) }
        return try body()
    }

    static func writingExecutable<T>(_ body: () throws -> T) rethrows -> T {
        pthread_rwlock_wrlock(&storage.lock)
        defer { pthread_rwlock_unlock(&storage.lock) }
        return try body()
    }
}
