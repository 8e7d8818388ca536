/// The one error type of Sprout.
///
/// `code` is an open set of stable, machine-readable strings (new codes can be
/// added without breaking old clients); `message` is one clear sentence for a
/// person. Mapping to HTTP statuses or exit codes happens only at the
/// boundaries (server routes, CLI).
public struct SproutError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: RawRepresentable, Hashable, Sendable, Codable, ExpressibleByStringLiteral,
        CustomStringConvertible
    {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public init(stringLiteral value: String) { self.rawValue = value }
        public var description: String { rawValue }

        public static let invalidArgument: Code = "invalid_argument"
        public static let notFound: Code = "not_found"
        public static let alreadyExists: Code = "already_exists"
        public static let unauthorized: Code = "unauthorized"
        public static let forbidden: Code = "forbidden"
        public static let conflict: Code = "conflict"
        public static let tooLarge: Code = "too_large"
        public static let unsupported: Code = "unsupported"
        public static let protocolMismatch: Code = "protocol_mismatch"
        public static let malformed: Code = "malformed"
        public static let io: Code = "io"
        public static let unavailable: Code = "unavailable"
        /// Not yet: what was asked for is being made (an env's build); ask again later.
        public static let notReady: Code = "not_ready"
        public static let timeout: Code = "timeout"
        public static let `internal`: Code = "internal"
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension Error {
    /// The one-sentence message of a `SproutError`, else the error's description.
    public var sentence: String {
        (self as? SproutError)?.message ?? String(describing: self)
    }
}

/// A `SproutError` on the wire: the REST API's `{"error": {code, message}}`
/// and the agent's replies and events carry it alike.
public struct ErrorBody: Codable, Sendable, Equatable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    public init(_ error: SproutError) {
        self.init(code: error.code.rawValue, message: error.message)
    }

    public var sproutError: SproutError { SproutError(SproutError.Code(rawValue: code), message) }
}
