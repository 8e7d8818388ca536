import Foundation
import SproutAPI

/// The bodies of E2B's control-plane API (its public `spec/openapi.yml`),
/// as the `e2b` SDKs send and parse them. Field names are E2B's.
enum E2B {
    /// The envd version Sprout's daemon translation reports: the SDK turns on
    /// optional stdin (0.3.0), users (0.4.0), CloseStdin (0.5.2) and
    /// octet-stream/gzip uploads (0.5.7), file metadata (0.6.2), entries in
    /// watch events (0.6.3) and the network-mounts watch flag (0.6.4; a
    /// sandbox has no network mounts): all of them served.
    static let envdVersion = "0.6.4"
    static let clientID = "sprout"

    /// `{"code": int, "message": str}`: every error the control plane answers.
    struct ErrorBody: Codable {
        var code: Int
        var message: String
    }

    struct NewSandbox: Decodable {
        var templateID: String
        var timeout: Int?
        var metadata: [String: String]?
        var envVars: [String: String]?
        var secure: Bool?
        var allowInternetAccess: Bool?
        var network: Network?
        var autoPause: Bool?
        /// false: a filesystem-only pause (not served yet).
        var autoPauseMemory: Bool?
        var autoResume: AutoResume?
        var volumeMounts: [VolumeMount]?

        struct AutoResume: Decodable { var enabled: Bool? }

        enum CodingKeys: String, CodingKey {
            case templateID, timeout, metadata, envVars, secure, network, autoPause, autoPauseMemory, autoResume, volumeMounts
            case allowInternetAccess = "allow_internet_access"
        }
    }

    /// A volume (by name) at a path, on create and in a sandbox's detail.
    struct VolumeMount: Codable {
        var name: String
        var path: String
    }

    /// `POST /sandboxes/{id}/pause`: `memory: false` keeps only the files.
    struct PauseRequest: Decodable {
        var memory: Bool?
        var requireHealthyGuest: Bool?
    }

    /// What a sandbox's timeout does, in get answers.
    struct Lifecycle: Encodable {
        var autoResume: Bool
        var onTimeout: String
    }

    struct Network: Codable {
        var allowOut: [String]?
        var denyOut: [String]?
        var allowPublicTraffic: Bool?
    }

    /// One entry of `GET /sandboxes/{id}/metrics`.
    struct Metric: Encodable {
        var timestamp: String
        var timestampUnix: Int
        var cpuCount: Int
        var cpuUsedPct: Double
        var memUsed: Int64
        var memTotal: Int64
        var memCache: Int64
        var diskUsed: Int64
        var diskTotal: Int64
    }

    /// `PUT /sandboxes/{id}/network`: replaces the policy; omitted fields are cleared.
    struct NetworkUpdate: Decodable {
        var allowOut: [String]?
        var denyOut: [String]?
        var dnsServers: [String]?
        var egressProxy: [String: String]?
        var rules: [String: [String: String]]?
        var allowInternetAccess: Bool?
    }

    /// Create, connect and fork answers.
    struct Sandbox: Encodable {
        var templateID: String
        var sandboxID: String
        var alias: String?
        var clientID = E2B.clientID
        var envdVersion = E2B.envdVersion
        var envdAccessToken: String
        /// What the SDK sends (`E2B-Traffic-Access-Token`) to a sandbox's other
        /// ports, the code interpreter's among them: the same token.
        var trafficAccessToken: String?
        var domain: String?
    }

    /// Get answers; list entries are the same without the token.
    struct SandboxDetail: Encodable {
        var templateID: String
        var alias: String?
        var sandboxID: String
        var clientID = E2B.clientID
        var startedAt: String
        var endAt: String
        var envdVersion = E2B.envdVersion
        var envdAccessToken: String?
        var domain: String?
        var cpuCount: Int
        var memoryMB: Int
        var diskSizeMB: Int
        var metadata: [String: String]?
        var state: State
        var lifecycle: Lifecycle?
        var volumeMounts: [VolumeMount]?
    }

    struct Timeout: Decodable {
        var timeout: Int
    }

    struct Connect: Decodable {
        var timeout: Int?
    }

    struct Fork: Decodable {
        var count: Int?
        var timeout: Int?
    }

    struct ForkResult: Encodable {
        var sandbox: Sandbox
    }

    struct SnapshotRequest: Decodable {
        var name: String?
        var memory: Bool?
    }

    struct SnapshotInfo: Encodable {
        var snapshotID: String
        var names: [String]
    }

    struct TemplateAlias: Encodable {
        var templateID: String
        var `public`: Bool
    }

    /// RFC 3339 with milliseconds, truncated (never rounded up: a time the
    /// API returns is never later than the one it stands for).
    static func rfc3339(_ seconds: Double) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: Double(milliseconds(seconds)) / 1000))
    }

    /// Whole milliseconds since the epoch: the precision times are returned at.
    static func milliseconds(_ seconds: Double) -> Int64 {
        Int64((seconds * 1000).rounded(.down))
    }

    /// The two states E2B reports.
    enum State: String, Codable, Sendable {
        case running
        case paused
    }

    /// E2B's two states for Sprout's: on the way to paused is paused, on the
    /// way to running (or forking) is running; nil for one that is not live
    /// (E2B answers 404 for it).
    static func state(_ sprout: SandboxState) -> State? {
        switch sprout {
        case .running, .resuming, .forking: .running
        case .paused, .pausing: .paused
        case .creating, .pooled, .killing, .killed: nil
        }
    }

    /// Seconds since the epoch from an RFC 3339 time, with or without
    /// fractional seconds; a time without an offset is taken as UTC.
    static func parseRFC3339(_ text: String) -> Double? {
        guard text.count <= 64 else { return nil }
        let hasOffset = text.hasSuffix("Z") || text.range(of: #"[+-]\d\d:?\d\d$"#, options: .regularExpression) != nil
        let full = hasOffset ? text : text + "Z"
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime]] {
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = options
            if let date = formatter.date(from: full) { return date.timeIntervalSince1970 }
        }
        return nil
    }
}
