import Foundation
import Glibc
import SproutCore
import SproutHost
import SproutSystem

/// A real S3-compatible server of Sprout's own making, for tests, `sprout
/// bench` and a fleet tried on one machine: OpenStack Swift from Debian
/// (`swift-proxy` with its `s3api` middleware and `tempauth`, and one
/// account, container and object server on a one-device ring), every file
/// in `directory`, on loopback ports of its own. Its one user's access key
/// is `sprout:tester`. `stop()` ends the four servers; the caller removes the
/// directory.
public final class LocalS3: Sendable {
    public let directory: String
    public let port: Int
    public let credentials: S3Credentials
    let pids: [pid_t]
    private let stopped = Locked(false)
    private let stoppedObjectServer = Locked(false)

    public var endpoint: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// A location in bucket `bucket` of this server.
    public func location(bucket: String, prefix: String = "") -> S3Location {
        S3Location(bucket: bucket, prefix: prefix, endpoint: endpoint, region: "us-east-1")
    }

    public init(directory: String, secret: String = "s3cret-\(Identifiers.random(length: 8))") async throws {
        self.directory = directory
        credentials = S3Credentials(accessKey: "sprout:tester", secretKey: secret)
        var lastError: Error = SproutError(.unavailable, "OpenStack Swift did not start")
        // Ports are picked free and then bound by Swift; another process can
        // take one in between, so a start whose server exits is tried again.
        for _ in 0..<5 {
            let ports = try (0..<4).map { _ in try Socket.freeLoopbackPort() }
            do {
                let pids = try await Self.start(directory: directory, ports: ports, credentials: credentials)
                self.pids = pids
                port = ports[0]
                return
            } catch {
                lastError = error
            }
        }
        throw lastError
    }

    private static func start(directory: String, ports: [Int], credentials: S3Credentials) async throws -> [pid_t] {
        try? FileSystem.removeTree(directory + "/srv")
        try FileSystem.makeDirectories(directory + "/srv/d1")
        try FileSystem.writeAtomically(directory + "/swift.conf", """
            [swift-hash]
            swift_hash_path_suffix = sprout
            swift_hash_path_prefix = sprout
            [storage-policy:0]
            name = only
            default = yes

            """, mode: 0o644)
        let servers = [("object", ports[1]), ("container", ports[2]), ("account", ports[3])]
        for (name, port) in servers {
            let builder = "\(directory)/\(name).builder"
            unlink(builder)
            for step in [["create", "0", "1", "0"], ["add", "r1z1-127.0.0.1:\(port)/d1", "1"], ["rebalance"]] {
                let out = try await HostCommand.capture(["swift-ring-builder", builder] + step)
                guard out.status == 0 else {
                    throw SproutError(.unavailable, "swift-ring-builder \(step[0]) failed (apt-get install swift-proxy): \(out.stdout)\(out.stderr)")
                }
            }
            try FileSystem.writeAtomically("\(directory)/\(name)-server.conf", """
                [DEFAULT]
                bind_ip = 127.0.0.1
                bind_port = \(port)
                devices = \(directory)/srv
                mount_check = false
                swift_dir = \(directory)
                workers = 0
                user = root
                log_name = \(name)
                log_address = \(directory)/no-syslog
                [pipeline:main]
                pipeline = \(name)-server
                [app:\(name)-server]
                use = egg:swift#\(name)

                """, mode: 0o644)
        }
        // tempauth's user line is `user_ACCOUNT_USER = KEY GROUPS`.
        let (account, user) = credentials.accessKey.split(separator: ":").map(String.init).splitPair
        try FileSystem.writeAtomically(directory + "/proxy-server.conf", """
            [DEFAULT]
            bind_ip = 127.0.0.1
            bind_port = \(ports[0])
            swift_dir = \(directory)
            workers = 0
            user = root
            log_name = proxy
            log_address = \(directory)/no-syslog
            [pipeline:main]
            pipeline = catch_errors gatekeeper proxy-logging cache s3api tempauth copy slo dlo proxy-logging proxy-server
            [app:proxy-server]
            use = egg:swift#proxy
            account_autocreate = true
            [filter:catch_errors]
            use = egg:swift#catch_errors
            [filter:gatekeeper]
            use = egg:swift#gatekeeper
            [filter:proxy-logging]
            use = egg:swift#proxy_logging
            [filter:cache]
            use = egg:swift#memcache
            [filter:copy]
            use = egg:swift#copy
            [filter:slo]
            use = egg:swift#slo
            [filter:dlo]
            use = egg:swift#dlo
            [filter:s3api]
            use = egg:swift#s3api
            location = us-east-1
            [filter:tempauth]
            use = egg:swift#tempauth
            user_\(account)_\(user) = \(credentials.secretKey) .admin

            """, mode: 0o600)
        var pids: [pid_t] = []
        do {
            for name in ["object", "container", "account", "proxy"] {
                let log = open("\(directory)/\(name).log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
                guard log >= 0 else { throw SproutError.system("open \(name).log") }
                defer { close(log) }
                var options = Spawn.Options()
                options.stdout = log
                options.stderr = log
                pids.append(try Spawn.spawn(path: "/usr/bin/swift-\(name)-server", argv: ["swift-\(name)-server", "\(directory)/\(name)-server.conf"],
                                            env: HostCommand.environment, options: options))
            }
            try await waitUntilServing(ports: ports, pids: pids, directory: directory)
            return pids
        } catch {
            for pid in pids { Spawn.terminate(pid, graceSeconds: 5) }
            throw error
        }
    }

    /// Until every server accepts connections (the proxy last), or one
    /// exits, or a port turns out to be another process's (then the start
    /// is tried again on other ports).
    private static func waitUntilServing(ports: [Int], pids: [pid_t], directory: String) async throws {
        for port in ports.reversed() {
            while !Socket.answers(host: "127.0.0.1", port: UInt16(port), timeoutSeconds: 1) {
                for (i, pid) in pids.enumerated() where waitpid(pid, nil, WNOHANG) == pid {
                    let name = ["object", "container", "account", "proxy"][i]
                    let log = (try? Descriptor.readFile("\(directory)/\(name).log")).map { String(decoding: $0, as: UTF8.self) } ?? ""
                    throw SproutError(.unavailable, "swift-\(name)-server exited: \(log.suffix(1500))")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            // Something answers there: it must be one of these servers.
            guard Socket.loopbackListener(port: UInt16(port), isHeldByOneOf: pids) else {
                throw SproutError(.unavailable, "port \(port) was taken by another process before Swift bound it")
            }
        }
    }


    /// Ends the object server alone: the bucket still answers, but objects
    /// can be neither written nor read (a store failing under a request).
    public func stopObjectServer() {
        Spawn.terminate(pids[0], graceSeconds: 10)
        stoppedObjectServer.withLock { $0 = true }
    }

    /// Its servers' process ids (to stop them from another process: `stop(processIDs:)`).
    public var processIDs: [pid_t] { pids }

    /// Ends servers started by another process (`processIDs` of its `LocalS3`).
    public static func stop(processIDs: [pid_t]) {
        for pid in processIDs.reversed() { Spawn.stopDetached(pid) }
    }

    /// Ends the servers (once; later calls do nothing).
    public func stop() {
        guard stopped.withLock({ let was = $0; $0 = true; return !was }) else { return }
        let objectServerStopped = stoppedObjectServer.current
        for (index, pid) in pids.enumerated().reversed() where index > 0 || !objectServerStopped { Spawn.terminate(pid, graceSeconds: 10) }
    }
}

extension Array where Element == String {
    /// The first two elements (an account and a user), empty when missing.
    fileprivate var splitPair: (String, String) { (first ?? "", count > 1 ? self[1] : "") }
}
