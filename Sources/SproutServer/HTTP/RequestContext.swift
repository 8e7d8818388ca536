import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import SproutAPI
import SproutAgentProtocol
import SproutCore

/// Per-request state: who is calling (set by `AuthMiddleware`).
public struct SproutContext: RequestContext, WebSocketRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let webSocket: WebSocketHandlerReference<SproutContext>
    public var identity: Identity?
    /// For envd's routes: the sandbox and user `EnvdMiddleware` let in.
    var envd: EnvdCall?
    /// The client's connection (a proxy asks it whether the client is still there).
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
        self.webSocket = .init()
        self.identity = nil
        self.envd = nil
    }

    /// True once the client has hung up (or half-closed, as Go's HTTP server
    /// takes it too): NIO reads nothing while a response is pending, so this
    /// asks the kernel for the TCP state (FIN received: CLOSE_WAIT and on).
    @Sendable func clientGone() async -> Bool {
        guard channel.isActive else { return true }
        guard let provider = channel as? SocketOptionProvider, let info = try? await provider.getTCPInfo().get() else { return false }
        return ![1, 2, 3].contains(Int(info.tcpi_state))  // ESTABLISHED, SYN_SENT, SYN_RECV
    }

    /// The caller's identity; routes behind `AuthMiddleware` always have one.
    func caller() throws -> Identity {
        guard let identity else { throw SproutError(.unauthorized, "missing API key") }
        return identity
    }
}

/// A `SproutError` as an HTTP response: the right status and
/// `{"error": {"code", "message"}}`.
struct APIError: HTTPResponseError {
    let error: SproutError
    /// A fleet node's answer to a create it cannot take that another node
    /// can (`volumes`: the env mounts volumes by default that are not here):
    /// the API server places it again, where they are.
    var placeElsewhere: String? = nil
    static let placeElsewhereHeader = HTTPField.Name("Sprout-Place-Elsewhere")!

    init(error: SproutError) { self.error = error }

    init(_ elsewhere: SandboxLifecycle.VolumesElsewhere) {
        error = elsewhere.error
        placeElsewhere = "volumes=" + elsewhere.names.joined(separator: ",")
    }

    var status: HTTPResponse.Status {
        switch error.code {
        case .invalidArgument, .malformed: .badRequest
        case .unauthorized: .unauthorized
        case .forbidden: .forbidden
        case .notFound: .notFound
        case .conflict, .alreadyExists: .conflict
        case .tooLarge: .contentTooLarge
        case .unsupported: .notImplemented
        case .unavailable, .notReady: .serviceUnavailable
        case .timeout: .gatewayTimeout
        case .protocolMismatch: .badGateway
        default: .internalServerError
        }
    }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = (try? JSONEncoder.sorted.encode(API.ErrorEnvelope(error: API.ErrorDetail(error)))) ?? Data()
        var headers: HTTPFields = [.contentType: "application/json"]
        if let retry = retryAfter { headers[.retryAfter] = retry }
        if let placeElsewhere { headers[Self.placeElsewhereHeader] = placeElsewhere }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// `Retry-After` for what will be ready later (an env still building).
    var retryAfter: String? { error.code == .notReady ? "30" : nil }
}

/// Turns every error into the API's error shape, and records request
/// metrics through the swift-metrics API (`sprout server` bootstraps it with
/// a Prometheus factory over the server's registry, served at /metrics).
struct ErrorAndMetricsMiddleware: RouterMiddleware {
    typealias Context = SproutContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var status = 500
        defer {
            let route = context.endpointPath ?? "unmatched"
            let dimensions = [("method", request.method.rawValue), ("route", route)]
            Counter(label: "sprout_http_requests_total", dimensions: dimensions + [("status", String(status))]).increment()
            Timer(label: "sprout_http_request_duration_seconds", dimensions: dimensions).record(duration: ContinuousClock.now - started)
        }
        do {
            let response = try await next(request, context)
            status = response.status.code
            return response
        } catch let error as SproutError {
            let mapped = APIError(error: error)
            status = mapped.status.code
            throw mapped
        } catch let error as SandboxLifecycle.VolumesElsewhere {
            let mapped = APIError(error)
            status = mapped.status.code
            throw mapped
        } catch let error as HTTPResponseError {
            status = error.status.code
            let code: SproutError.Code = error.status == .notFound ? .notFound : error.status.code == 413 ? .tooLarge : .invalidArgument
            let message = error.status == .notFound ? "no route for \(request.method) \(request.uri.path)" : "\(error.status.reasonPhrase)"
            throw APIError(error: SproutError(code, message))
        } catch let error as DecodingError {
            status = 400
            throw APIError(error: SproutError(.malformed, "malformed request body: \(describe(error))"))
        } catch {
            status = 500
            context.logger.error("unhandled error: \(error)")
            throw APIError(error: SproutError(.internal, "internal error"))
        }
    }

    private func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "missing field '\(key.stringValue)'"
        case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx):
            "wrong type at '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))'"
        case .dataCorrupted: "not valid JSON"
        @unknown default: "\(error)"
        }
    }
}

/// Requires a valid `X-API-Key` and puts the caller's identity in the context.
///
/// A browser cannot set headers on a WebSocket, and a key in the URL would
/// land in logs and history, so a WebSocket may instead offer the key as a
/// subprotocol, `sprout.key.<secret>`, beside `sprout` (the one the server
/// answers with; see `webSocketHeaders`), as Kubernetes does with its tokens.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = SproutContext
    let keys: any KeyService
    /// A node's cluster token: a request bearing it (from an API server of
    /// the fleet) acts for the identity the API server names in its headers.
    var clusterToken: String? = nil
    static let clusterTokenHeader = HTTPField.Name("Sprout-Cluster-Token")!
    static let fleetKeyHeader = HTTPField.Name("Sprout-Key-Id")!
    static let fleetTeamHeader = HTTPField.Name("Sprout-Team")!
    static let fleetAdminHeader = HTTPField.Name("Sprout-Admin")!
    static let header = HTTPField.Name("X-API-Key")!
    static let webSocketProtocol = HTTPField.Name("Sec-WebSocket-Protocol")!
    static let keyProtocolPrefix = "sprout.key."

    /// The secret a WebSocket upgrade offered as a subprotocol.
    static func webSocketKey(_ request: Request) -> String? {
        request.headers[values: webSocketProtocol].lazy.flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .first { $0.hasPrefix(keyProtocolPrefix) }
            .map { String($0.dropFirst(keyProtocolPrefix.count)) }
    }

    /// The upgrade's answer: `sprout` if the client offered it (a browser
    /// drops a connection whose offered subprotocols got no answer).
    static func webSocketHeaders(_ request: Request) -> HTTPFields {
        let offered = request.headers[values: webSocketProtocol].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        return offered.contains("sprout") ? [webSocketProtocol: "sprout"] : [:]
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let offered = request.headers[Self.clusterTokenHeader] {
            guard let clusterToken, constantTimeEqual(offered, clusterToken) else {
                throw SproutError(.unauthorized, "wrong cluster token")
            }
            guard let team = request.headers[Self.fleetTeamHeader], KeyStore.isValidName(team), let keyID = request.headers[Self.fleetKeyHeader] else {
                throw SproutError(.unauthorized, "a fleet request names no team")
            }
            var context = context
            context.identity = Identity(keyID: "fleet:" + keyID, team: team, admin: request.headers[Self.fleetAdminHeader] == "true")
            context.logger[metadataKey: "team"] = "\(team)"
            return try await next(request, context)
        }
        guard let secret = request.headers[Self.header] ?? Self.webSocketKey(request) else {
            throw SproutError(.unauthorized, "missing X-API-Key header")
        }
        guard let identity = try await keys.authenticate(secret) else {
            throw SproutError(.unauthorized, "invalid or revoked API key")
        }
        var context = context
        context.identity = identity
        context.logger[metadataKey: "team"] = "\(identity.team)"
        return try await next(request, context)
    }
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let (x, y) = (Array(a.utf8), Array(b.utf8))
    guard x.count == y.count else { return false }
    return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
}

/// JSON responses and bodies.
enum JSONBody {
    static let limit = 1 << 20

    static func response<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try JSONEncoder.sorted.encode(value)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// Decodes a request body of at most `limit` bytes.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        try JSONDecoder().decode(type, from: Data(try await body(request).readableBytesView))
    }

    /// Like `decode`, but an empty body means `empty`.
    static func decode<T: Decodable>(_ type: T.Type, from request: Request, orIfEmpty empty: T) async throws -> T {
        let buffer = try await body(request)
        if buffer.readableBytes == 0 { return empty }
        return try JSONDecoder().decode(type, from: Data(buffer.readableBytesView))
    }

    /// The whole body, refused beyond `limit`.
    private static func body(_ request: Request) async throws -> ByteBuffer {
        do {
            return try await request.body.collect(upTo: limit)
        } catch {
            throw SproutError(.tooLarge, "request body is larger than \(limit) bytes")
        }
    }
}
