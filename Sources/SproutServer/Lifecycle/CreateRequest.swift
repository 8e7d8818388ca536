import Foundation
import SproutAPI
import SproutCore
import SproutRuntime

/// A create request, validated: limits in range, metadata and env vars
/// well-formed, egress CIDRs normalised. Bad input is refused here, before
/// anything is allocated.
struct CreateRequest: Sendable {
    var env: String
    var limits: Limits
    var policy: NetworkPolicy
    var metadata: [String: String]
    var envVars: [String: String]
    var fromPool: Bool
    /// The timeout pauses (instead of killing), and the pause wakes on request.
    var pauseOnTimeout = false
    var autoResume = false
    var idlePauseSeconds: Int?
    /// Timeout and idle pauses keep only the files.
    var pauseFilesOnly = false
    /// Volumes, resolved to the team's (`SandboxLifecycle.resolveVolumes`).
    var volumes: [VolumeMount] = []

    struct Limits: Sendable, Equatable {
        var cpu: Double
        var memoryMB: Int
        var timeout: Int
        var diskMB: Int
    }

    /// Whether a pooled sandbox (started with the defaults) can serve this request.
    /// (The timeout is set when a pooled sandbox is claimed, so any fits.)
    func poolable(_ settings: Settings) -> Bool {
        let defaults = Self.defaultLimits(settings)
        return fromPool && policy.isOpen && volumes.isEmpty && limits.cpu == defaults.cpu && limits.memoryMB == defaults.memoryMB
            && limits.diskMB == defaults.diskMB
    }

    static func defaultLimits(_ settings: Settings) -> Limits {
        Limits(cpu: settings.defaultCPU, memoryMB: settings.defaultMemoryMB, timeout: settings.defaultTimeoutSeconds, diskMB: settings.defaultDiskMB)
    }

    static func limits(cpu: Double?, memoryMB: Int?, timeout: Int?, diskMB: Int?, settings: Settings) throws -> Limits {
        let cores = Double(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let cpu = cpu ?? settings.defaultCPU
        guard cpu >= 0.1 && cpu <= cores else {
            throw SproutError(.invalidArgument, "cpu must be between 0.1 and \(Int(cores)) (this host's cores), got \(cpu)")
        }
        let memory = memoryMB ?? settings.defaultMemoryMB
        guard memory >= 64 && memory <= 65536 else {
            throw SproutError(.invalidArgument, "memoryMB must be between 64 and 65536, got \(memory)")
        }
        let timeout = timeout ?? settings.defaultTimeoutSeconds
        try validateTimeout(timeout, max: settings.maxTimeoutSeconds)
        let disk = diskMB ?? settings.defaultDiskMB
        guard disk >= 16 && disk <= 1 << 22 else {
            throw SproutError(.invalidArgument, "diskMB must be between 16 and \(1 << 22), got \(disk)")
        }
        return Limits(cpu: cpu, memoryMB: memory, timeout: timeout, diskMB: disk)
    }

    static func validateTimeout(_ seconds: Int, max: Int) throws {
        guard seconds >= 1 && seconds <= max else {
            throw SproutError(.invalidArgument, "timeoutSeconds must be between 1 and \(max), got \(seconds)")
        }
    }

    /// IPv4 CIDRs (`a.b.c.d/n`), at most 64, only with internet on; normalised.
    static func validateEgress(_ egress: [String], internet: Bool) throws -> [String] {
        guard !egress.isEmpty else { return [] }
        guard internet else { throw SproutError(.invalidArgument, "egress needs internet on (internet: false allows no outbound traffic at all)") }
        guard egress.count <= 64 else { throw SproutError(.invalidArgument, "at most 64 egress CIDRs") }
        return try egress.map { cidr in
            let parts = cidr.split(separator: "/", omittingEmptySubsequences: false)
            let octets = parts.first?.split(separator: ".", omittingEmptySubsequences: false) ?? []
            guard parts.count == 2, let bits = Int(parts[1]), (0...32).contains(bits), parts[1].count <= 2, octets.count == 4,
                octets.allSatisfy({ $0.count <= 3 && $0.allSatisfy(\.isASCII) && Int($0).map { (0...255).contains($0) } == true })
            else {
                throw SproutError(.invalidArgument, "egress entry '\(cidr.prefix(64))' is not an IPv4 CIDR like 10.0.0.0/8")
            }
            return "\(octets.map { String(Int($0)!) }.joined(separator: "."))/\(bits)"
        }
    }

    static func validateMetadata(_ metadata: [String: String]) throws {
        guard metadata.count <= 64 else { throw SproutError(.invalidArgument, "at most 64 metadata entries") }
        for (key, value) in metadata {
            guard !key.isEmpty, key.count <= 64, key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                throw SproutError(.invalidArgument, "metadata key '\(key.prefix(64))' must be 1-64 characters of letters, digits, '.', '_' and '-'")
            }
            guard value.utf8.count <= 1024, !value.contains(where: { $0.isNewline || ($0.asciiValue.map { $0 < 32 || $0 == 127 } ?? false) }) else {
                throw SproutError(.invalidArgument, "metadata value for '\(key)' must be at most 1024 bytes without control characters")
            }
        }
    }

    static func validateEnvVars(_ vars: [String: String]) throws {
        guard vars.count <= 256 else { throw SproutError(.invalidArgument, "at most 256 environment variables") }
        for (key, value) in vars {
            let valid = !key.isEmpty && key.count <= 256 && (key.first.map { $0 == "_" || ($0.isASCII && $0.isLetter) } ?? false)
                && key.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
            guard valid else { throw SproutError(.invalidArgument, "invalid environment variable name '\(key.prefix(64))'") }
            guard value.utf8.count <= 32768, !value.contains("\0") else {
                throw SproutError(.invalidArgument, "environment variable \(key) must be at most 32 KiB without NUL bytes")
            }
        }
    }
}

extension CreateRequest {
    init(_ request: API.CreateSandbox, settings: Settings) throws {
        env = request.env
        limits = try Self.limits(cpu: request.cpu, memoryMB: request.memoryMB, timeout: request.timeoutSeconds, diskMB: request.diskMB,
                                 settings: settings)
        try Self.validateMetadata(request.metadata ?? [:])
        try Self.validateEnvVars(request.envVars ?? [:])
        metadata = request.metadata ?? [:]
        envVars = request.envVars ?? [:]
        let internet = request.internet ?? true
        policy = NetworkPolicy(internet: internet, egress: try Self.validateEgress(request.egress ?? [], internet: internet))
        fromPool = request.fromPool != false
        switch request.onTimeout {
        case nil, "kill": pauseOnTimeout = false
        case "pause": pauseOnTimeout = true
        case let other?: throw SproutError(.invalidArgument, "onTimeout must be kill or pause, got '\(other.prefix(32))'")
        }
        autoResume = request.autoResume ?? false
        idlePauseSeconds = request.idlePauseSeconds
        pauseFilesOnly = request.pauseMemory == false
        if let idle = idlePauseSeconds, !(1...86_400).contains(idle) {
            throw SproutError(.invalidArgument, "idlePauseSeconds must be 1-86400, got \(idle)")
        }
        guard !autoResume || pauseOnTimeout || idlePauseSeconds != nil else {
            throw SproutError(.invalidArgument, "autoResume needs onTimeout: pause or idlePauseSeconds (a killed sandbox cannot wake)")
        }
    }
}
