import SproutAPI
import SproutCore

/// `sprout.toml`: how to build an env.
///
/// ```toml
/// id = "my-app"                 # the env's name
/// [template]
/// from = "debian"               # parent: a name, an env id, an image, or "empty" (the default)
/// # dockerfile = "Dockerfile"   # or: build from a Dockerfile (its FROM, steps, CMD, EXPOSE)
/// [build]
/// files = "files"               # local folder copied to /code
/// run = ["apt-get install -y python3"]
/// start = "python3 -m http.server 8000"
/// ready = "port:8000"           # or a command that exits 0 when ready
/// cpu = 2
/// memory_mb = 1024
/// [sandbox]                     # what its sandboxes get unless a create says otherwise
/// volumes = ["cache:/root/.cache", "data:/data:ro"]
/// ```
public struct EnvConfig: Equatable, Sendable {
    public var id: String
    public var from: String
    public var files: String?
    public var run: [String]
    public var start: String?
    public var ready: Readiness?
    public var cpu: Double?
    public var memoryMB: Int?
    /// Seconds any one build step may take before it is killed (default 900).
    public var timeoutSeconds: Int?
    /// What a build step (and an image pull) may write, MiB.
    public var diskMB: Int?
    /// Volumes its sandboxes mount when a create names none (`[sandbox] volumes`).
    public var volumes: [API.VolumeMount] = []
    /// A Dockerfile to build instead of `from` and `run` (relative to the config).
    public var dockerfile: String?

    public enum Readiness: Equatable, Sendable {
        case port(UInt16)
        case command(String)
    }

    public init(id: String, from: String, files: String?, run: [String], start: String?, ready: Readiness?, cpu: Double?, memoryMB: Int?) {
        self.id = id
        self.from = from
        self.files = files
        self.run = run
        self.start = start
        self.ready = ready
        self.cpu = cpu
        self.memoryMB = memoryMB
    }

    public init(id: String, from: String, files: String?, run: [String], start: String?, ready: Readiness?, cpu: Double?, memoryMB: Int?,
                timeoutSeconds: Int?) {
        self.init(id: id, from: from, files: files, run: run, start: start, ready: ready, cpu: cpu, memoryMB: memoryMB)
        self.timeoutSeconds = timeoutSeconds
    }

    static let keys: Set<String> = [
        "id", "template.from", "build.files", "build.run", "build.start", "build.ready", "build.cpu", "build.memory_mb", "build.timeout",
        "build.disk_mb", "sandbox.volumes", "template.dockerfile",
    ]

    /// Parses and checks a config; every error names the file, line and key.
    public static func parse(_ text: String, file: String = "sprout.toml") throws -> EnvConfig {
        let entries = try TOMLSubset.parse(text, file: file)
        for (key, entry) in entries.sorted(by: { $0.value.line < $1.value.line }) where !keys.contains(key) {
            throw SproutError(.invalidArgument, "\(file):\(entry.line): unknown key '\(key)' (known: \(keys.sorted().joined(separator: ", ")))")
        }
        func string(_ key: String) throws -> String? {
            guard let entry = entries[key] else { return nil }
            guard case .string(let s) = entry.value else {
                throw SproutError(.invalidArgument, "\(file):\(entry.line): '\(key)' must be a string, got \(entry.value.typeName)")
            }
            return s
        }
        guard let id = try string("id") else {
            throw SproutError(.invalidArgument, "\(file): missing 'id' (the env's name), e.g. id = \"my-app\"")
        }
        guard !id.isEmpty, id.count <= 64, id.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") }) else {
            throw SproutError(.invalidArgument, "\(file):\(entries["id"]!.line): 'id' must be 1-64 characters of a-z, 0-9, '-' and '_'")
        }
        var config = EnvConfig(id: id, from: try string("template.from") ?? "empty", files: try string("build.files"),
                               run: [], start: try string("build.start"), ready: nil, cpu: nil, memoryMB: nil)
        if let dockerfile = try string("template.dockerfile") {
            for key in ["template.from", "build.run", "build.files"] where entries[key] != nil {
                throw SproutError(.invalidArgument, "\(file):\(entries[key]!.line): '\(key)' cannot be used with 'template.dockerfile' (the Dockerfile says it)")
            }
            config.dockerfile = dockerfile
        }
        if let entry = entries["build.run"] {
            guard case .array(let items) = entry.value else {
                throw SproutError(.invalidArgument, "\(file):\(entry.line): 'build.run' must be an array of strings, got \(entry.value.typeName)")
            }
            config.run = try items.map {
                guard case .string(let s) = $0, !s.isEmpty else {
                    throw SproutError(.invalidArgument, "\(file):\(entry.line): every 'build.run' step must be a non-empty string")
                }
                return s
            }
        }
        if let ready = try string("build.ready") {
            if ready.hasPrefix("port:") {
                guard let port = UInt16(ready.dropFirst(5)), port > 0 else {
                    throw SproutError(.invalidArgument, "\(file):\(entries["build.ready"]!.line): 'build.ready' port must be 1-65535")
                }
                config.ready = .port(port)
            } else {
                config.ready = .command(ready)
            }
            guard config.start != nil else {
                throw SproutError(.invalidArgument, "\(file):\(entries["build.ready"]!.line): 'build.ready' needs 'build.start'")
            }
        }
        if let entry = entries["build.cpu"] {
            switch entry.value {
            case .integer(let n): config.cpu = Double(n)
            case .float(let x): config.cpu = x
            default: throw SproutError(.invalidArgument, "\(file):\(entry.line): 'build.cpu' must be a number, got \(entry.value.typeName)")
            }
        }
        if let entry = entries["build.memory_mb"] {
            guard case .integer(let n) = entry.value else {
                throw SproutError(.invalidArgument, "\(file):\(entry.line): 'build.memory_mb' must be an integer, got \(entry.value.typeName)")
            }
            config.memoryMB = n
        }
        if let entry = entries["build.disk_mb"] {
            guard case .integer(let n) = entry.value, n >= 16 else {
                throw SproutError(.invalidArgument, "\(file):\(entry.line): 'build.disk_mb' must be an integer, at least 16")
            }
            config.diskMB = n
        }
        if let entry = entries["build.timeout"] {
            guard case .integer(let n) = entry.value, n >= 1 && n <= 86_400 else {
                throw SproutError(.invalidArgument, "\(file):\(entry.line): 'build.timeout' must be whole seconds, 1-86400")
            }
            config.timeoutSeconds = n
        }
        if let entry = entries["sandbox.volumes"] {
            guard case .array(let items) = entry.value else {
                throw SproutError(.invalidArgument, "\(file):\(entry.line): 'sandbox.volumes' must be an array of \"NAME:/path[:ro]\" strings")
            }
            config.volumes = try items.map {
                guard case .string(let s) = $0 else {
                    throw SproutError(.invalidArgument, "\(file):\(entry.line): every 'sandbox.volumes' entry must be a string, NAME:/path[:ro]")
                }
                do { return try API.VolumeMount(parsing: s) } catch let error as SproutError {
                    throw SproutError(.invalidArgument, "\(file):\(entry.line): \(error.message)")
                }
            }
        }
        return config
    }

    /// `text` in the characters an env name takes: lowercased, anything but
    /// a-z, 0-9, `-` and `_` made a `-` (for names made from a folder, an
    /// image or a stage).
    public static func nameCharacters(_ text: String) -> String {
        String(text.lowercased().map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "-" })
    }

    /// A commented starting point, as `sprout env init` writes it.
    public static func template(id: String, from: String) -> String {
        """
        # sprout.toml: how this repository's env is built. `sprout env push` builds it.
        id = "\(id)"                     # the env's name; every push makes \(id)-<hash>

        [template]                       # kept apart from id so the two are not confused
        from = "\(from)"                 # parent: an env name or id, or "empty" (busybox)

        [build]
        # files = "files"                # local folder copied to /code in the env
        # run = ["apt-get update", "apt-get install -y python3"]   # steps, run in order
        # start = "python3 -m http.server 8000"                    # left running in the env
        # ready = "port:8000"            # or a command that exits 0 once started
        # cpu = 2
        # memory_mb = 1024
        # timeout = 900                  # seconds any one step may take
        # disk_mb = 10240                # what a step (or an image pull) may write

        [sandbox]                        # what its sandboxes get unless a create says otherwise
        # volumes = ["cache:/root/.cache", "data:/data:ro"]        # `sprout volume create` first

        """
    }
}

extension EnvConfig.Readiness {
    /// As a push sends it.
    public var text: String {
        switch self {
        case .port(let port): "port:\(port)"
        case .command(let command): command
        }
    }
}
