#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

// Envs, pushes, builds and blobs.
extension API {
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
        /// The command its sandboxes start with (running in a warm env's memory image).
        public var start: String?
        /// Volumes its sandboxes mount when a create names none.
        public var volumes: [VolumeMount]?
        /// What its processes get unless a request says otherwise (an image's
        /// `Env`, `WorkingDir` and `User`).
        public var process: ProcessDefaults?
        /// The image it was made from (`registry/repo:tag@sha256:…`), for an env made from one.
        public var image: String?

        public init(id: String, name: String, parent: String?, base: String, layers: [String], builtin: Bool, createdAt: Double?,
                    ownBytes: Int64, published: Bool, totalBytes: Int64? = nil, warm: Bool? = nil, start: String? = nil,
                    volumes: [VolumeMount]? = nil, process: ProcessDefaults? = nil, image: String? = nil) {
            self.process = process
            self.image = image
            self.warm = warm
            self.start = start
            self.volumes = volumes
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

    /// What an env's processes get unless a request says otherwise: the
    /// `Env`, `WorkingDir` and `User` of the image it was made from (a
    /// Dockerfile's `ENV`, `WORKDIR`, `USER`), kept by every env built on it.
    public struct ProcessDefaults: Codable, Sendable, Equatable {
        /// Variables every process gets; a sandbox's own and a request's win.
        public var env: [String: String]?
        /// Where a process without a cwd starts.
        public var workdir: String?
        /// Who a process without a user runs as (a name or a uid).
        public var user: String?

        public init(env: [String: String]? = nil, workdir: String? = nil, user: String? = nil) {
            self.env = env
            self.workdir = workdir
            self.user = user
        }

        public var isEmpty: Bool { (env ?? [:]).isEmpty && workdir == nil && user == nil }
    }

    /// `POST /v1/envs/import`: an image archive (`docker save`, or an OCI
    /// layout in a tar), uploaded as a blob, made into an env.
    public struct ImportImage: Codable, Sendable, Equatable {
        /// The archive's SHA-256, as uploaded (`PUT /v1/blobs/{sha256}`).
        public var blob: String
        /// Which image of an archive of several (`name:tag`).
        public var reference: String?
        /// The env's name (default: `image-` and the image's name and tag).
        public var name: String?

        public init(blob: String, reference: String? = nil, name: String? = nil) {
            self.blob = blob
            self.reference = reference
            self.name = name
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
        /// What a build step (and an image pull) may write, MiB (default: the server's sandbox default).
        public var diskMB: Int?
        /// What the previous push sent (path -> sha256, from .sprout/lock.json):
        /// a file in /code that differs from it was changed in the env, and is
        /// left alone with a warning; a file it lists that is no longer pushed
        /// is deleted.
        public var lock: [String: String]?
        /// Volumes the env's sandboxes mount when a create names none (`[sandbox] volumes`).
        public var volumes: [VolumeMount]?
        /// Steps in order (a Dockerfile's, a template's), instead of `run`
        /// and the files layer: each cached by its hash like a `run` step.
        public var steps: [Step]?

        /// One build step. `run`: a command (`shell`, or `argv`) with `env`
        /// added; `copy`: `files` (uploaded blobs, paths relative to
        /// `destination`, a directory) owned by `owner`; `env`, `workdir`,
        /// `user`: what later steps and the env's processes get.
        public struct Step: Codable, Sendable, Equatable {
            public enum Kind: String, Codable, Sendable { case run, copy, env, workdir, user }
            public var kind: Kind
            public var shell: String?
            public var argv: [String]?
            public var env: [String: String]?
            public var files: [File]?
            public var destination: String?
            public var owner: String?
            public var path: String?
            /// `user`: who later steps and the env's processes run as; `run`: who this command runs as.
            public var user: String?
            /// Run again, not taken from the cache (nor any step after it).
            public var force: Bool?
            /// `copy` from another env (a Dockerfile's earlier stage): its id, and the paths in it to copy.
            public var fromEnv: String?
            public var sources: [String]?
            /// Where it came from (`Dockerfile:7`), for the build's log and errors; not part of its hash.
            public var source: String?

            public init(kind: Kind, shell: String? = nil, argv: [String]? = nil, env: [String: String]? = nil, files: [File]? = nil,
                        destination: String? = nil, owner: String? = nil, path: String? = nil, user: String? = nil, force: Bool? = nil,
                        fromEnv: String? = nil, sources: [String]? = nil, source: String? = nil) {
                self.fromEnv = fromEnv
                self.sources = sources
                self.force = force
                self.kind = kind
                self.shell = shell
                self.argv = argv
                self.env = env
                self.files = files
                self.destination = destination
                self.owner = owner
                self.path = path
                self.user = user
                self.source = source
            }
        }

        public init(id: String, from: String, run: [String], start: String?, ready: String?, cpu: Double?, memoryMB: Int?, files: [File],
                    draft: Bool? = nil, timeoutSeconds: Int? = nil, lock: [String: String]? = nil, volumes: [VolumeMount]? = nil,
                    steps: [Step]? = nil) {
            self.steps = steps
            self.volumes = volumes
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
}
