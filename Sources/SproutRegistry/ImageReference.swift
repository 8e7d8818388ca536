import SproutCore

/// An image's name as Docker reads it: `[registry/]repository[:tag][@digest]`.
/// No registry means Docker Hub (`docker.io`), where a one-part name is an
/// official image (`python` is `docker.io/library/python`). The first part
/// is a registry when it has a `.` or a `:`, or is `localhost`.
public struct ImageReference: Sendable, Equatable, CustomStringConvertible {
    /// As written in a reference (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
    public var registry: String
    public var repository: String
    public var tag: String?
    /// `sha256:<hex>`: this exact manifest, whatever the tag says now.
    public var digest: String?

    public static let dockerHub = "docker.io"

    public init(registry: String, repository: String, tag: String?, digest: String?) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(parsing text: String) throws {
        func bad(_ why: String) -> SproutError {
            SproutError(.invalidArgument, "'\(text.prefix(300))' is not an image reference: \(why)")
        }
        guard !text.isEmpty, text.utf8.count <= 512, text.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw bad("expected [registry/]name[:tag][@sha256:digest]")
        }
        var rest = Substring(text)
        if let at = rest.firstIndex(of: "@") {
            let digest = String(rest[rest.index(after: at)...])
            let hex = digest.dropFirst(7)
            guard digest.hasPrefix("sha256:"), hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw bad("a digest is sha256: and 64 lowercase hex digits")
            }
            self.digest = digest
            rest = rest[..<at]
        }
        var parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count > 1, parts[0].contains(".") || parts[0].contains(":") || parts[0] == "localhost" {
            registry = parts.removeFirst()
        } else {
            registry = Self.dockerHub
        }
        if let last = parts.last, let colon = last.lastIndex(of: ":") {
            let tag = String(last[last.index(after: colon)...])
            guard !tag.isEmpty, tag.count <= 128, tag.first != "." && tag.first != "-",
                tag.allSatisfy({ $0.isLetter || $0.isNumber || "_.-".contains($0) })
            else { throw bad("a tag is 1-128 of A-Z, a-z, 0-9, '_', '.' and '-'") }
            self.tag = tag
            parts[parts.count - 1] = String(last[..<colon])
        }
        guard !parts.isEmpty, parts.allSatisfy({ part in
            guard let first = part.first, first.isLowercase || first.isNumber else { return false }
            return part.allSatisfy { $0.isLowercase || $0.isNumber || "._-".contains($0) }
        }) else { throw bad("a name is lowercase parts separated by '/'") }
        if registry == Self.dockerHub && parts.count == 1 { parts.insert("library", at: 0) }
        repository = parts.joined(separator: "/")
        if tag == nil && digest == nil { tag = "latest" }
    }

    /// Whether `text` names an image rather than an env: env names have no
    /// `/`, `:`, `@` or `.`, and image references written without a
    /// registry or tag (`python`) are read as env names.
    public static func looksLikeImage(_ text: String) -> Bool {
        text.contains("/") || text.contains(":") || text.contains("@") || text.contains(".")
    }

    /// What the manifest request names: the digest when given, else the tag.
    public var manifestReference: String { digest ?? tag ?? "latest" }

    /// The host the registry API answers on (Docker Hub's is not `docker.io`).
    public var apiHost: String { registry == Self.dockerHub ? "registry-1.docker.io" : registry }

    public var description: String {
        "\(registry)/\(repository)" + (tag.map { ":\($0)" } ?? "") + (digest.map { "@\($0)" } ?? "")
    }

    /// The reference pinned to `digest` (the tag kept for people to read).
    public func pinned(_ digest: String) -> ImageReference {
        var copy = self
        copy.digest = digest
        return copy
    }
}
