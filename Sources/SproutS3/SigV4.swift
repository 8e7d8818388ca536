import Crypto
import Foundation
import SproutCore

/// AWS Signature Version 4 for S3, in the `Authorization` header: the
/// canonical request (method, encoded path, sorted query, the signed headers,
/// the payload's SHA-256), the string to sign over its hash and the scope
/// `DATE/REGION/SERVICE/aws4_request`, and the HMAC chain that derives the
/// signing key from the secret. Pure: the caller supplies the time.
public struct SigV4: Sendable {
    public var accessKey: String
    public var secretKey: String
    public var region: String
    public var service: String

    public init(accessKey: String, secretKey: String, region: String, service: String = "s3") {
        (self.accessKey, self.secretKey, self.region, self.service) = (accessKey, secretKey, region, service)
    }

    /// The payload hash S3 accepts for a body that is not hashed.
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public static func payloadHash<D: DataProtocol>(_ bytes: D) -> String { hexString(SHA256.hash(data: bytes)) }

    /// `20130524T000000Z` for `date`.
    public static func amzDate(_ date: Date) -> String {
        let seconds = Int(date.timeIntervalSince1970)
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
    }

    /// The headers to add to a request: `x-amz-date`, `x-amz-content-sha256`
    /// and `Authorization`. `path` is the request's path as sent (already
    /// percent-encoded, `/bucket/key`); `query` its parameters unencoded;
    /// `headers` every other header to sign (`host` among them).
    public func sign(
        method: String, path: String, query: [(String, String)], headers: [(String, String)], payloadHash: String, date: Date
    ) -> [(String, String)] {
        let amzDate = Self.amzDate(date)
        var all = headers.map { ($0.0.lowercased(), Self.trimmed($0.1)) }
        all.append(("x-amz-date", amzDate))
        all.append(("x-amz-content-sha256", payloadHash))
        all.sort { $0.0 < $1.0 }
        let signedHeaders = all.map(\.0).joined(separator: ";")
        let canonical = [
            method,
            path.isEmpty ? "/" : path,
            Self.canonicalQuery(query),
            all.map { "\($0.0):\($0.1)\n" }.joined(),
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let toSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(Self.payloadHash(Array(canonical.utf8)))"
        var key = SymmetricKey(data: Array("AWS4\(secretKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        let signature = hexString(HMAC<SHA256>.authenticationCode(for: Array(toSign.utf8), using: key))
        return [
            ("x-amz-date", amzDate),
            ("x-amz-content-sha256", payloadHash),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(scope),SignedHeaders=\(signedHeaders),Signature=\(signature)"),
        ]
    }

    /// Parameters encoded (`/` too), sorted by name then value, `name=value` joined by `&`.
    static func canonicalQuery(_ query: [(String, String)]) -> String {
        let encoded: [(name: String, value: String)] = query.map { (percentEncode($0.0, keepingSlash: false), percentEncode($0.1, keepingSlash: false)) }
        let sorted = encoded.sorted { (a, b) -> Bool in a.name == b.name ? a.value < b.value : a.name < b.name }
        return sorted.map { "\($0.name)=\($0.value)" }.joined(separator: "&")
    }

    /// A header value with its ends trimmed and inner runs of spaces made one.
    static func trimmed(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
    }
}
