#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// Sandboxes: create, show, pause, fork, timeouts, networks, metrics.
extension API {
    public struct CreateSandbox: Codable, Sendable {
        public var env: String
        public var timeoutSeconds: Int?
        public var cpu: Double?
        public var memoryMB: Int?
        public var envVars: [String: String]?
        public var metadata: [String: String]?
        public var internet: Bool?
        /// Outbound traffic only to these IPv4 CIDRs (e.g. "10.0.0.0/8"); needs internet on.
        public var egress: [String]?
        /// What the sandbox may write (its writable layer), MiB.
        public var diskMB: Int?
        /// Take a sandbox the server started ahead of demand, if one fits
        /// (default true). False always starts a new one (for benchmarks).
        public var fromPool: Bool?
        /// What the timeout does: "kill" (the default) or "pause" (every
        /// process kept; needs memory snapshots, gVisor).
        public var onTimeout: String?
        /// With onTimeout "pause": the next request that needs it running
        /// resumes it first (exec, files, terminal, previews, E2B daemon calls).
        public var autoResume: Bool?
        /// Pause after this many seconds without a request or an open stream
        /// (gVisor), independent of the timeout; with autoResume the next request wakes it.
        public var idlePauseSeconds: Int?
        /// false: timeout and idle pauses keep only the files (they boot
        /// again on resume; runc too). Default true.
        public var pauseMemory: Bool?
        /// Volumes to mount (by name or id), at most 16.
        public var volumes: [VolumeMount]?

        public init(env: String, timeoutSeconds: Int? = nil, cpu: Double? = nil, memoryMB: Int? = nil,
                    envVars: [String: String]? = nil, metadata: [String: String]? = nil, internet: Bool? = nil, egress: [String]? = nil, diskMB: Int? = nil,
                    fromPool: Bool? = nil, onTimeout: String? = nil, autoResume: Bool? = nil, idlePauseSeconds: Int? = nil,
                    pauseMemory: Bool? = nil, volumes: [VolumeMount]? = nil) {
            self.volumes = volumes
            self.pauseMemory = pauseMemory
            self.idlePauseSeconds = idlePauseSeconds
            self.onTimeout = onTimeout
            self.autoResume = autoResume
            self.env = env
            self.timeoutSeconds = timeoutSeconds
            self.cpu = cpu
            self.memoryMB = memoryMB
            self.envVars = envVars
            self.metadata = metadata
            self.internet = internet
            self.egress = egress
            self.diskMB = diskMB
            self.fromPool = fromPool
        }
    }

    public struct Sandbox: Codable, Sendable, Equatable {
        public var id: String
        public var env: String
        public var runtime: String
        public var state: SandboxState
        public var team: String
        /// Seconds since the Unix epoch.
        public var createdAt: Double
        public var expiresAt: Double?
        public var endedAt: Double?
        public var cpu: Double
        public var memoryMB: Int
        public var internet: Bool
        /// The egress allow-list, if the sandbox has one.
        public var egress: [String]?
        /// The most the sandbox may write, MiB.
        public var diskMB: Int?
        public var metadata: [String: String]
        /// Names of the sandbox's environment variables (values are not echoed back).
        public var envVarNames: [String]
        /// The sandbox's address on the host's sandbox network.
        public var address: String?
        public var error: String?
        /// Paused sandboxes: resume on the next request that needs the sandbox running.
        public var autoResume: Bool?
        /// Seconds of timeout left; the timeout clock stops while a sandbox is paused.
        public var remainingSeconds: Double?
        /// The memory images of this sandbox's pauses.
        public var memory: MemoryImages?
        /// When a paused sandbox went to sleep (seconds since the Unix epoch).
        public var pausedAt: Double?
        /// "pause" when its timeout pauses it instead of killing it.
        public var onTimeout: String?
        /// Paused: true when the pause kept only its files (it boots again on resume).
        public var filesOnly: Bool?
        /// Pauses after this many idle seconds.
        public var idlePauseSeconds: Double?
        /// The volumes it mounts (`volume` is the volume's name).
        public var volumes: [VolumeMount]?
        /// The node of the fleet that holds it (absent on a server alone).
        public var node: String?

        public init(id: String, env: String, runtime: String, state: SandboxState, team: String, createdAt: Double, expiresAt: Double?,
                    endedAt: Double?, cpu: Double, memoryMB: Int, internet: Bool, egress: [String]? = nil, diskMB: Int? = nil, metadata: [String: String],
                    envVarNames: [String], address: String?, error: String?, autoResume: Bool? = nil, remainingSeconds: Double? = nil,
                    memory: MemoryImages? = nil, pausedAt: Double? = nil, onTimeout: String? = nil, idlePauseSeconds: Double? = nil,
                    filesOnly: Bool? = nil) {
            self.filesOnly = filesOnly
            self.idlePauseSeconds = idlePauseSeconds
            self.onTimeout = onTimeout
            self.pausedAt = pausedAt
            self.autoResume = autoResume
            self.remainingSeconds = remainingSeconds
            self.memory = memory
            self.id = id
            self.env = env
            self.runtime = runtime
            self.state = state
            self.team = team
            self.createdAt = createdAt
            self.expiresAt = expiresAt
            self.endedAt = endedAt
            self.cpu = cpu
            self.memoryMB = memoryMB
            self.internet = internet
            self.egress = egress
            self.diskMB = diskMB
            self.metadata = metadata
            self.envVarNames = envVarNames
            self.address = address
            self.error = error
        }
    }

    /// One line of a sandbox's history: a state change, or something the
    /// server did on its own (a process ended at the memory limit, a death).
    public struct SandboxEvent: Codable, Sendable, Equatable {
        /// Seconds since the Unix epoch.
        public var at: Double
        /// The state it entered, or what happened (`oom`).
        public var kind: String
        public var message: String
        public init(at: Double, kind: String, message: String) {
            self.at = at
            self.kind = kind
            self.message = message
        }
    }

    /// Memory images kept for a sandbox and what they cost in the chunk store.
    public struct MemoryImages: Codable, Sendable, Equatable {
        public var count: Int
        /// Sum of the images' sizes.
        public var logicalBytes: Int64
        /// Bytes of the distinct chunks they use (shared chunks counted once).
        public var storedBytes: Int64
        public init(count: Int, logicalBytes: Int64, storedBytes: Int64) {
            self.count = count
            self.logicalBytes = logicalBytes
            self.storedBytes = storedBytes
        }
    }

    public struct Pause: Codable, Sendable {
        public var autoResume: Bool?
        /// false: keep only the files (processes end; it boots again on
        /// resume; works on runc too). Default true: memory and files.
        public var memory: Bool?
        public init(autoResume: Bool? = nil, memory: Bool? = nil) {
            self.autoResume = autoResume
            self.memory = memory
        }
    }

    public struct Fork: Codable, Sendable {
        public var count: Int
        public init(count: Int) { self.count = count }
    }

    public struct ForkResult: Codable, Sendable {
        public var sandboxes: [Sandbox]
        public init(sandboxes: [Sandbox]) { self.sandboxes = sandboxes }
    }

    public struct SetTimeout: Codable, Sendable {
        public var timeoutSeconds: Int
        public init(timeoutSeconds: Int) { self.timeoutSeconds = timeoutSeconds }
    }

    /// `PUT /v1/sandboxes/{id}/network`: replaces a running sandbox's
    /// outbound policy (an omitted field is the default: internet on, no allow-list).
    public struct SetNetwork: Codable, Sendable {
        public var internet: Bool?
        public var egress: [String]?
        public init(internet: Bool? = nil, egress: [String]? = nil) {
            self.internet = internet
            self.egress = egress
        }
    }

    /// One sample of a sandbox's resources (`GET /v1/sandboxes/{id}/metrics`).
    public struct SandboxMetric: Codable, Sendable, Equatable {
        /// Seconds since the Unix epoch.
        public var timestamp: Double
        public var cpuCount: Int
        /// CPU used since the previous sample, as a percentage of the sandbox's CPU allowance.
        public var cpuUsedPct: Double
        public var memUsedBytes: Int64
        public var memTotalBytes: Int64
        public var memCacheBytes: Int64
        public var diskUsedBytes: Int64
        public var diskTotalBytes: Int64
        public init(timestamp: Double, cpuCount: Int, cpuUsedPct: Double, memUsedBytes: Int64, memTotalBytes: Int64,
                    memCacheBytes: Int64, diskUsedBytes: Int64, diskTotalBytes: Int64) {
            self.timestamp = timestamp
            self.cpuCount = cpuCount
            self.cpuUsedPct = cpuUsedPct
            self.memUsedBytes = memUsedBytes
            self.memTotalBytes = memTotalBytes
            self.memCacheBytes = memCacheBytes
            self.diskUsedBytes = diskUsedBytes
            self.diskTotalBytes = diskTotalBytes
        }
    }

    public struct Snapshot: Codable, Sendable {
        /// The new env's name (default: the parent's).
        public var name: String?
        public init(name: String? = nil) { self.name = name }
    }
}
