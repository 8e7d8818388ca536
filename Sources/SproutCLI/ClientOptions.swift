import ArgumentParser
import Foundation
import SproutClient
import SproutCore
import SproutSystem
import SproutServer
import SproutAPI
import SproutAgentClient
import SproutHost
import SproutConfig

/// Where the API is and which key to use: flags, then environment
/// (`SPROUT_API_URL`, `SPROUT_API_KEY`), then `sprout login`'s config file,
/// then the local server's defaults (its `admin.key`), so the quick start
/// needs no set-up.
struct ClientOptions: ParsableArguments {
    @Option(name: .customLong("api-url"), help: "Sprout API URL (default http://127.0.0.1:7070).")
    var apiURL: String?

    @Option(name: .customLong("api-key"), help: "API key (sk_...).")
    var apiKey: String?

    @Option(name: .customLong("ca-file"), help: "Trust the HTTPS server by this CA certificate (PEM; env SPROUT_CA_FILE).")
    var caFile: String?

    @Option(help: "Trust the HTTPS server by its certificate's SHA-256 fingerprint (env SPROUT_FINGERPRINT).")
    var fingerprint: String?

    @Flag(help: "Allow sending the key over plain HTTP to a host that is not loopback.")
    var insecure = false

    /// An API key goes over plain HTTP only to this machine, unless asked.
    static func refusePlainHTTP(_ client: SproutAPIClient, insecure: Bool) throws {
        guard client.apiKey != nil, !insecure, client.scheme == "http" else { return }
        let host = client.host
        guard !IPAddressBytes.isLoopback(host) else { return }
        throw SproutError(.forbidden,
            "refusing to send an API key over plain HTTP to \(host), which is not this machine: use https:// (sprout server serves it beyond loopback), or --insecure to send it in clear text anyway")
    }

    func client() throws -> SproutAPIClient {
        let env = ProcessInfo.processInfo.environment
        let saved = ClientConfigFile.load()
        let url = apiURL ?? env["SPROUT_API_URL"] ?? saved?.apiURL ?? "http://127.0.0.1:7070"
        // Trust settings go with the URL they were saved for.
        let savedForURL = saved?.apiURL == url ? saved : nil
        let tls = ClientTLS(caFile: caFile ?? env["SPROUT_CA_FILE"] ?? savedForURL?.caFile,
                            fingerprint: try (fingerprint ?? env["SPROUT_FINGERPRINT"] ?? savedForURL?.fingerprint).map(ClientTLS.normalize))
        var key = apiKey ?? env["SPROUT_API_KEY"] ?? saved?.apiKey
        if key == nil {
            let path = ServerConfiguration().adminKeyPath
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                key = text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
        }
        let client = try SproutAPIClient(url: url, apiKey: key, tls: tls)
        try Self.refusePlainHTTP(client, insecure: insecure || savedForURL?.insecure == true)
        return client
    }
}

/// `~/.config/sprout/config.json`, written by `sprout login`.
struct ClientConfigFile: Codable {
    var apiURL: String
    var apiKey: String
    var caFile: String?
    var fingerprint: String?
    var insecure: Bool?

    static var path: String {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CONFIG_HOME"] ?? ((env["HOME"] ?? "/root") + "/.config")
        return base + "/sprout/config.json"
    }

    static func load() -> ClientConfigFile? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(ClientConfigFile.self, from: data)
    }

    func save() throws {
        let dir = (Self.path as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let data = try JSONEncoder().encode(self)
        let temp = Self.path + ".tmp"
        guard FileManager.default.createFile(atPath: temp, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw SproutError(.io, "cannot write \(temp)")
        }
        guard rename(temp, Self.path) == 0 else { throw SproutError.system("rename to \(Self.path)") }
    }
}

/// Output helpers: `--json` prints one JSON document; otherwise a table.
enum Output {
    static func json<T: Encodable>(_ value: T) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    static func table(_ header: [String], _ rows: [[String]]) {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        print(line(header))
        rows.forEach { print(line($0)) }
    }

    static func bytes(_ n: Int64) -> String {
        if n < 1 << 10 { return "\(n) B" }
        if n < 1 << 20 { return String(format: "%.1f KiB", Double(n) / 1024) }
        if n < 1 << 30 { return String(format: "%.1f MiB", Double(n) / 1048576) }
        return String(format: "%.2f GiB", Double(n) / 1073741824)
    }

    static func date(_ seconds: Double?) -> String {
        guard let seconds else { return "-" }
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: seconds))
    }
}

/// Parses `K=V` arguments.
func keyValues(_ items: [String], what: String) throws -> [String: String] {
    var out: [String: String] = [:]
    for item in items {
        guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
            throw SproutError(.invalidArgument, "\(what) must be KEY=VALUE, got '\(item)'")
        }
        out[String(item[..<eq])] = String(item[item.index(after: eq)...])
    }
    return out
}
