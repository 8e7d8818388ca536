#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SproutAgentProtocol

/// The REST API's request and response bodies, shared by the server and the
/// client so the two cannot drift. See openapi.yaml.
public enum API {
    public struct ErrorEnvelope: Codable, Sendable {
        public var error: ErrorBody
        public init(error: ErrorBody) { self.error = error }
    }

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

        public init(env: String, timeoutSeconds: Int? = nil, cpu: Double? = nil, memoryMB: Int? = nil,
                    envVars: [String: String]? = nil, metadata: [String: String]? = nil, internet: Bool? = nil, egress: [String]? = nil, diskMB: Int? = nil,
                    fromPool: Bool? = nil, onTimeout: String? = nil, autoResume: Bool? = nil, idlePauseSeconds: Int? = nil,
                    pauseMemory: Bool? = nil) {
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
        public var state: String
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

        public init(id: String, env: String, runtime: String, state: String, team: String, createdAt: Double, expiresAt: Double?,
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

    public struct Exec: Codable, Sendable {
        public var cmd: [String]?
        public var shell: String?
        public var cwd: String?
        public var env: [String: String]?
        /// Bytes for standard input (base64); stdin is closed after them.
        public var stdin: String?
        public var tag: String?
        /// Run as this user of the sandbox (default root).
        public var user: String?
        /// Answer once the process has started, leaving it running; its
        /// output is read later with `GET .../processes/{id}/output`.
        public var detach: Bool?

        public init(cmd: [String]? = nil, shell: String? = nil, cwd: String? = nil, env: [String: String]? = nil,
                    stdin: [UInt8]? = nil, tag: String? = nil, user: String? = nil, detach: Bool? = nil) {
            self.user = user
            self.detach = detach
            self.cmd = cmd
            self.shell = shell
            self.cwd = cwd
            self.env = env
            self.stdin = stdin.map { Data($0).base64EncodedString() }
            self.tag = tag
        }
    }

    /// `POST /v1/sandboxes/{id}/files/xattrs`: sets and removes `user.*`
    /// extended attributes of a file (the agent's request, as it is).
    public typealias Xattrs = XattrRequest

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

    /// What a client sends as text on a streamed exec (WebSocket
    /// `GET /v1/sandboxes/{id}/exec`), besides its input as binary messages.
    public struct ExecControl: Codable, Sendable {
        /// The input has ended: the process's standard input is closed.
        public var endOfInput: Bool?
        public var signal: Int32?
        public init(endOfInput: Bool? = nil, signal: Int32? = nil) {
            self.endOfInput = endOfInput
            self.signal = signal
        }
    }

    /// One line of an exec's NDJSON stream. Exactly one field is set.
    public struct ExecEvent: Codable, Sendable {
        public var started: AgentProcess?
        /// Base64 of the bytes.
        public var stdout: String?
        public var stderr: String?
        public var exit: ProcessExit?
        public var error: ErrorBody?

        public init(started: AgentProcess? = nil, stdout: [UInt8]? = nil, stderr: [UInt8]? = nil, exit: ProcessExit? = nil, error: ErrorBody? = nil) {
            self.started = started
            self.stdout = stdout.map { Data($0).base64EncodedString() }
            self.stderr = stderr.map { Data($0).base64EncodedString() }
            self.exit = exit
            self.error = error
        }

        public var stdoutBytes: [UInt8]? { stdout.flatMap { Data(base64Encoded: $0) }.map { Array($0) } }
        public var stderrBytes: [UInt8]? { stderr.flatMap { Data(base64Encoded: $0) }.map { Array($0) } }
    }

    /// An env: an immutable root file system to start sandboxes from.
    public struct Env: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        /// The env it was forked from (nil for built-in bases).
        public var parent: String?
        public var base: String
        /// Layer digests above the base, bottom first.
        public var layers: [String]
        public var builtin: Bool
        public var createdAt: Double?
        /// Bytes this env's own top layer added to the store.
        public var ownBytes: Int64
        /// Whether its name points at it (the newest published env of a name wins).
        public var published: Bool
        /// The whole chain's bytes: the base plus every layer.
        public var totalBytes: Int64?
        /// Sandboxes of a warm env start from a memory image taken once `start` was ready.
        public var warm: Bool?

        public init(id: String, name: String, parent: String?, base: String, layers: [String], builtin: Bool, createdAt: Double?,
                    ownBytes: Int64, published: Bool, totalBytes: Int64? = nil, warm: Bool? = nil) {
            self.warm = warm
            self.id = id
            self.name = name
            self.parent = parent
            self.base = base
            self.layers = layers
            self.builtin = builtin
            self.createdAt = createdAt
            self.ownBytes = ownBytes
            self.published = published
            self.totalBytes = totalBytes
        }
    }

    /// An env's ancestors (parent first, root last) and descendants (depth-first).
    public struct EnvTree: Codable, Sendable {
        public struct Node: Codable, Sendable, Equatable {
            public var id: String
            public var parent: String
            public var depth: Int
            public init(id: String, parent: String, depth: Int) {
                self.id = id
                self.parent = parent
                self.depth = depth
            }
        }
        public var id: String
        public var ancestors: [String]
        public var descendants: [Node]
        public init(id: String, ancestors: [String], descendants: [Node]) {
            self.id = id
            self.ancestors = ancestors
            self.descendants = descendants
        }
    }

    /// `POST /v1/envs`: build an env from a config and files already uploaded as blobs.
    public struct Push: Codable, Sendable, Equatable {
        public struct File: Codable, Sendable, Equatable {
            /// Relative to /code.
            public var path: String
            public var mode: UInt32
            public var sha256: String
            public init(path: String, mode: UInt32, sha256: String) {
                self.path = path
                self.mode = mode
                self.sha256 = sha256
            }
        }
        public var id: String
        public var from: String
        public var run: [String]
        public var start: String?
        public var ready: String?
        public var cpu: Double?
        public var memoryMB: Int?
        public var files: [File]
        /// Build without moving the name to the new env.
        public var draft: Bool?
        /// Seconds any one step may take (default 900).
        public var timeoutSeconds: Int?
        /// What the previous push sent (path -> sha256, from .sprout/lock.json):
        /// a file in /code that differs from it was changed in the env, and is
        /// left alone with a warning; a file it lists that is no longer pushed
        /// is deleted.
        public var lock: [String: String]?
        public init(id: String, from: String, run: [String], start: String?, ready: String?, cpu: Double?, memoryMB: Int?, files: [File],
                    draft: Bool? = nil, timeoutSeconds: Int? = nil, lock: [String: String]? = nil) {
            self.id = id
            self.from = from
            self.run = run
            self.start = start
            self.ready = ready
            self.cpu = cpu
            self.memoryMB = memoryMB
            self.files = files
            self.draft = draft
            self.timeoutSeconds = timeoutSeconds
            self.lock = lock
        }
    }

    public struct Build: Codable, Sendable, Equatable {
        public var id: String
        public var envID: String
        /// queued, running, succeeded, failed
        public var status: String
        public var failedStep: String?
        public var exitCode: Int?
        public var error: String?
        public var steps: Int
        public var cachedSteps: Int
        /// Files left alone because they changed in the env since the last push.
        public var warnings: [String]?
        /// Seconds since the Unix epoch.
        public var createdAt: Double?
        public var finishedAt: Double?
        /// What was pushed (`GET /v1/builds/{id}` only).
        public var config: Push?
        public init(id: String, envID: String, status: String, failedStep: String?, exitCode: Int?, error: String?, steps: Int, cachedSteps: Int,
                    warnings: [String]? = nil, createdAt: Double? = nil, finishedAt: Double? = nil, config: Push? = nil) {
            self.createdAt = createdAt
            self.finishedAt = finishedAt
            self.config = config
            self.id = id
            self.envID = envID
            self.status = status
            self.failedStep = failedStep
            self.exitCode = exitCode
            self.error = error
            self.steps = steps
            self.cachedSteps = cachedSteps
            self.warnings = warnings
        }
    }

    /// The answer to a push: the env at once if this exact env exists, else the build.
    public struct PushResult: Codable, Sendable {
        public var envID: String
        public var env: Env?
        public var build: Build?
        public init(envID: String, env: Env?, build: Build?) {
            self.envID = envID
            self.env = env
            self.build = build
        }
    }

    /// SHA-256 hex digests (for `/v1/blobs/missing`, both ways).
    public struct BlobList: Codable, Sendable {
        public var digests: [String]
        public init(digests: [String]) { self.digests = digests }
    }

    public struct Deleted: Codable, Sendable {
        public var deleted: [String]
        public init(deleted: [String]) { self.deleted = deleted }
    }

    public struct Snapshot: Codable, Sendable {
        /// The new env's name (default: the parent's).
        public var name: String?
        public init(name: String? = nil) { self.name = name }
    }

    public struct Signal: Codable, Sendable {
        public var signal: Int32
        public init(signal: Int32) { self.signal = signal }
    }

    /// `GET /v1/whoami`: the caller's key (the server's `Identity`).
    public struct WhoAmI: Codable, Sendable, Equatable {
        public var keyID: String
        public var team: String
        public var admin: Bool
        public init(keyID: String, team: String, admin: Bool) {
            self.keyID = keyID
            self.team = team
            self.admin = admin
        }
    }

    public struct Key: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var team: String
        /// The first characters of the secret, to recognise it.
        public var prefix: String
        public var admin: Bool
        public var createdAt: Double
        public var revokedAt: Double?

        public init(id: String, name: String, team: String, prefix: String, admin: Bool, createdAt: Double, revokedAt: Double?) {
            self.id = id
            self.name = name
            self.team = team
            self.prefix = prefix
            self.admin = admin
            self.createdAt = createdAt
            self.revokedAt = revokedAt
        }
    }

    public struct CreateKey: Codable, Sendable {
        public var name: String?
        public var team: String?
        public var admin: Bool?
        public init(name: String? = nil, team: String? = nil, admin: Bool? = nil) {
            self.name = name
            self.team = team
            self.admin = admin
        }
    }

    /// A new key: the secret is shown here once and never again.
    public struct CreatedKey: Codable, Sendable {
        public var key: Key
        public var secret: String
        public init(key: Key, secret: String) {
            self.key = key
            self.secret = secret
        }
    }

    public struct Health: Codable, Sendable {
        public var status: String
        public var version: String
        public var runtime: String
        /// The runtime binary's own version (runsc's release date, say).
        public var runtimeVersion: String?
        /// gVisor's platform (systrap or ptrace); nil for runc.
        public var platform: String?
        public init(status: String, version: String, runtime: String, runtimeVersion: String? = nil, platform: String? = nil) {
            self.status = status
            self.version = version
            self.runtime = runtime
            self.runtimeVersion = runtimeVersion
            self.platform = platform
        }
    }

    public struct Entries: Codable, Sendable {
        public var entries: [FileInfo]
        public init(entries: [FileInfo]) { self.entries = entries }
    }
}
