import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutSystem

/// A PostgreSQL server of Sprout's own making, for tests and a fleet tried
/// on one machine: Debian's PostgreSQL, a cluster made by `initdb` in
/// `directory` (as the `postgres` user: initdb refuses root), trust
/// authentication for the role `sprout`, on a loopback port of its own
/// (and a socket in `directory`), without fsync (test data). `stop()` ends
/// it; the caller removes the directory.
public final class LocalPostgres: Sendable {
    public let directory: String
    public let port: Int
    let binaries: String
    private let stopped = Locked(false)

    /// `postgres://sprout@127.0.0.1:PORT/DATABASE`.
    public func url(database: String = "sprout") -> String { "postgres://sprout@127.0.0.1:\(port)/\(database)" }

    public init(directory: String) async throws {
        self.directory = directory
        binaries = try Self.binaries()
        guard let owner = getpwnam("postgres") else { throw SproutError(.unavailable, "no postgres user (apt-get install postgresql)") }
        let (uid, gid) = (owner.pointee.pw_uid, owner.pointee.pw_gid)
        try sysCall("chown \(directory)") { chown(directory, uid, gid) }
        try await Self.asPostgres([binaries + "/initdb", "-D", directory + "/data", "-A", "trust", "-U", "sprout", "--no-sync", "-E", "UTF8"],
                                  what: "initdb")
        var lastError: Error = SproutError(.unavailable, "PostgreSQL did not start")
        var started: UInt16?
        // A port picked free can be taken before PostgreSQL binds it: try another.
        for _ in 0..<5 where started == nil {
            let port = UInt16(try Socket.freeLoopbackPort())
            do {
                try await Self.asPostgres([
                    binaries + "/pg_ctl", "-D", directory + "/data", "-l", directory + "/postgres.log", "-w", "-t", "120", "start", "-o",
                    "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                ], what: "pg_ctl start")
                try await Self.asPostgres([binaries + "/createdb", "-h", "127.0.0.1", "-p", "\(port)", "-U", "sprout", "sprout"], what: "createdb")
                started = port
            } catch {
                lastError = error
                _ = try? await Self.asPostgres([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "stop"], what: "pg_ctl stop")
            }
        }
        guard let started else { throw lastError }
        port = Int(started)
    }

    /// A server of its own in a new temporary directory for `body`, stopped
    /// and removed after it, also when it throws (what tests use).
    public static func withTemporary<T>(_ body: (LocalPostgres) async throws -> T) async throws -> T {
        let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-pg")
        defer { try? FileSystem.removeTree(directory) }
        let postgres = try await LocalPostgres(directory: directory)
        do {
            let result = try await body(postgres)
            await postgres.stop()
            return result
        } catch {
            await postgres.stop()
            throw error
        }
    }

    /// Whether Debian's PostgreSQL is here and this process may run it (root).
    public static var isUsable: Bool { getuid() == 0 && (try? binaries()) != nil && getpwnam("postgres") != nil }

    /// Where Debian keeps the newest PostgreSQL's programs.
    static func binaries() throws -> String {
        guard let version = (try? FileSystem.children("/usr/lib/postgresql"))?.compactMap(Int.init).max() else {
            throw SproutError(.unavailable, "PostgreSQL is not installed (apt-get install postgresql)")
        }
        return "/usr/lib/postgresql/\(version)/bin"
    }

    /// Ends the server whose cluster is in `directory` (one another process started).
    public static func stop(directory: String) async {
        guard let binaries = try? binaries() else { return }
        _ = try? await asPostgres([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"], what: "pg_ctl stop")
    }

    /// Makes another database on this server.
    public func createDatabase(_ name: String) async throws {
        try await Self.asPostgres([binaries + "/createdb", "-h", "127.0.0.1", "-p", "\(port)", "-U", "sprout", name], what: "createdb")
    }

    static func asPostgres(_ argv: [String], what: String) async throws {
        let out = try await HostCommand.capture(["runuser", "-u", "postgres", "--"] + argv, timeout: .seconds(180))
        guard out.status == 0 else { throw SproutError(.unavailable, "\(what) failed: \(out.stdout.suffix(1000))\(out.stderr.suffix(1000))") }
    }

    /// Ends the server at once (once; later calls do nothing).
    public func stop() async {
        guard stopped.withLock({ let was = $0; $0 = true; return !was }) else { return }
        _ = try? await Self.asPostgres([binaries + "/pg_ctl", "-D", directory + "/data", "-m", "immediate", "-w", "stop"], what: "pg_ctl stop")
    }
}
