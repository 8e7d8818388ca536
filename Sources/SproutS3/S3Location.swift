import Foundation
import SproutCore
import SproutSystem

/// Where a store lives: `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`. The
/// endpoint is any S3-compatible server (AWS's regional one when absent);
/// requests name the bucket in the path (`ENDPOINT/BUCKET/KEY`), which AWS,
/// Ceph RGW, MinIO, R2 and OpenStack Swift's s3api all accept.
public struct S3Location: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    /// Prepended to every key, ending in `/` when not empty.
    public var prefix: String
    public var endpoint: URL
    public var region: String

    public init(bucket: String, prefix: String = "", endpoint: URL, region: String) {
        self.bucket = bucket
        self.prefix = prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
        self.endpoint = endpoint
        self.region = region
    }

    public init(parsing text: String) throws {
        func bad(_ why: String) -> SproutError {
            SproutError(.invalidArgument, "store \(text.debugDescription): \(why); expected s3://BUCKET[/PREFIX]?endpoint=URL&region=REGION")
        }
        guard text.hasPrefix("s3://") else { throw bad("not an s3:// address") }
        let rest = text.dropFirst(5)
        let (path, query) = rest.firstIndex(of: "?").map { (rest[..<$0], rest[rest.index(after: $0)...]) } ?? (rest, "")
        let bucket = path.prefix { $0 != "/" }
        // S3's bucket rules: 3–63 of lowercase letters, digits, dots and dashes.
        guard (3...63).contains(bucket.count), bucket.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == ".") }),
              bucket.first?.isLetter == true || bucket.first?.isNumber == true
        else { throw bad("the bucket must be 3 to 63 lowercase letters, digits, dots or dashes") }
        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            let name = String(parts[0])
            let value = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : ""
            guard ["endpoint", "region"].contains(name) else { throw bad("unknown parameter \(name.debugDescription)") }
            parameters[name] = value
        }
        let region = parameters["region"] ?? "us-east-1"
        let endpointText = parameters["endpoint"] ?? "https://s3.\(region).amazonaws.com"
        guard let endpoint = URL(string: endpointText), ["http", "https"].contains(endpoint.scheme ?? ""), endpoint.host != nil,
              endpoint.path.isEmpty || endpoint.path == "/"
        else { throw bad("the endpoint must be an http(s)://HOST[:PORT] URL") }
        let prefix = path.dropFirst(bucket.count).drop { $0 == "/" }
        self.init(bucket: String(bucket), prefix: String(prefix), endpoint: endpoint, region: region)
    }

    public var description: String {
        "s3://\(bucket)/\(prefix)?endpoint=\(endpoint.absoluteString)&region=\(region)"
    }
}

/// An access key and its secret: from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`, or from a file of `KEY=VALUE` lines with those
/// names (the form of an env file; `#` starts a comment).
public struct S3Credentials: Sendable, Equatable {
    public var accessKey: String
    public var secretKey: String

    public init(accessKey: String, secretKey: String) {
        (self.accessKey, self.secretKey) = (accessKey, secretKey)
    }

    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> S3Credentials {
        var values = environment
        if let file {
            let text: String
            do { text = String(decoding: try Descriptor.readFile(file, limit: 1 << 16), as: UTF8.self) } catch {
                throw SproutError(.invalidArgument, "cannot read the store's credentials file \(file): \(error.sentence)")
            }
            values = [:]
            for line in text.split(separator: "\n") {
                let line = line.trimmingCharacters(in: .whitespaces)
                guard !line.isEmpty, !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else { continue }
                let name = line[..<eq].trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "export ", with: "")
                values[name] = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
            }
        }
        guard let access = values["AWS_ACCESS_KEY_ID"], !access.isEmpty, let secret = values["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
            throw SproutError(.invalidArgument, "an s3:// store needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                + (file.map { "and \($0) does not set both" } ?? "in the environment or in the file given to --store-credentials"))
        }
        return S3Credentials(accessKey: access, secretKey: secret)
    }
}
