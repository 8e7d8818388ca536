import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SproutCore
import SproutSystem
import SwiftProtobuf

/// The Connect RPC protocol as envd speaks it, with both of its codecs:
/// unary calls as `application/json` or `application/proto`; streams as
/// `application/connect+json` or `application/connect+proto` envelopes
/// (`[flags:1][length:4 BE][message]`) ending with an end-stream frame
/// (flags 0x02) that carries `{}` or `{"error": …}` (JSON in both codecs,
/// as are unary errors). The messages are envd's, from `EnvdProto`.
enum ConnectRPC {
    /// How a call's messages are written, from its content type.
    enum Codec: Sendable {
        case json, proto

        init(_ request: Request) {
            let type = request.headers[.contentType] ?? ""
            self = type.hasPrefix("application/proto") || type.hasPrefix("application/connect+proto") ? .proto : .json
        }

        var unaryContentType: String { self == .proto ? "application/proto" : "application/json" }
        var streamContentType: String { self == .proto ? "application/connect+proto" : "application/connect+json" }

        /// Fields this server does not know are skipped, as connect-go's protojson does.
        static let jsonOptions: JSONDecodingOptions = {
            var options = JSONDecodingOptions()
            options.ignoreUnknownFields = true
            return options
        }()

        func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ bytes: Data) throws -> M {
            switch self {
            case .proto: return try M(serializedBytes: bytes)
            case .json: return try M(jsonUTF8Data: bytes.isEmpty ? Data("{}".utf8) : bytes, options: Self.jsonOptions)
            }
        }

        func encode(_ message: some SwiftProtobuf.Message) throws -> Data {
            switch self {
            case .proto: try message.serializedData()
            case .json: try message.jsonUTF8Data()
            }
        }
    }

    static func isStreaming(_ request: Request) -> Bool {
        request.headers[.contentType]?.hasPrefix("application/connect+") == true
    }

    /// The largest message accepted from a client.
    static let maxMessage = 16 << 20

    /// Connect's error codes, by name, with the HTTP status of a unary error.
    enum Code: String, Sendable {
        case canceled, unknown, invalid_argument, deadline_exceeded, not_found, already_exists, permission_denied
        case resource_exhausted, failed_precondition, aborted, out_of_range, unimplemented, `internal`, unavailable
        case data_loss, unauthenticated

        var status: HTTPResponse.Status {
            switch self {
            case .canceled: .init(code: 499)
            case .invalid_argument, .failed_precondition, .out_of_range: .badRequest
            case .deadline_exceeded: .gatewayTimeout
            case .not_found: .notFound
            case .already_exists, .aborted: .conflict
            case .permission_denied: .forbidden
            case .resource_exhausted: .tooManyRequests
            case .unimplemented: .notImplemented
            case .unavailable: .serviceUnavailable
            case .unauthenticated: .unauthorized
            case .unknown, .internal, .data_loss: .internalServerError
            }
        }

        init(_ code: SproutError.Code) {
            switch code {
            case .invalidArgument, .malformed: self = .invalid_argument
            case .unauthorized: self = .unauthenticated
            case .forbidden: self = .permission_denied
            case .notFound: self = .not_found
            case .alreadyExists: self = .already_exists
            case .conflict: self = .failed_precondition
            case .tooLarge: self = .resource_exhausted
            case .unsupported: self = .unimplemented
            case .unavailable: self = .unavailable
            case .timeout: self = .deadline_exceeded
            default: self = .internal
            }
        }
    }

    struct Failure: Error {
        var code: Code
        var message: String
        init(_ code: Code, _ message: String) {
            self.code = code
            self.message = message
        }
        init(_ error: Error) {
            if let failure = error as? Failure {
                self = failure
            } else if let sprout = error as? SproutError {
                self.init(Code(sprout.code), sprout.message)
            } else if error is JSONDecodingError || error is BinaryDecodingError || error is DecodingError {
                self.init(.invalid_argument, "malformed message: \(error)")
            } else {
                self.init(.internal, "\(error)")
            }
        }
        var json: [String: String] { ["code": code.rawValue, "message": message] }
    }

    // MARK: Unary

    static func decodeUnary<M: SwiftProtobuf.Message>(_ type: M.Type, _ request: Request) async throws -> M {
        let body: ByteBuffer
        do { body = try await request.body.collect(upTo: maxMessage) } catch {
            throw Failure(.resource_exhausted, "message larger than \(maxMessage) bytes")
        }
        return try Codec(request).decode(M.self, Data(body.readableBytesView))
    }

    static func unary(_ message: some SwiftProtobuf.Message, for request: Request) throws -> Response {
        let codec = Codec(request)
        return Response(status: .ok, headers: [.contentType: codec.unaryContentType],
                        body: .init(byteBuffer: ByteBuffer(bytes: try codec.encode(message))))
    }

    static func unaryError(_ failure: Failure) -> Response {
        let data = (try? JSONEncoder().encode(failure.json)) ?? Data()
        return Response(status: failure.code.status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: Streams

    static func envelope(_ bytes: Data, flags: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }

    static func message(_ message: some SwiftProtobuf.Message, _ codec: Codec) throws -> ByteBuffer {
        envelope(try codec.encode(message))
    }

    static func endOfStream(_ failure: Failure?) -> ByteBuffer {
        let json: Data
        if let failure {
            json = (try? JSONEncoder().encode(["error": failure.json])) ?? Data("{}".utf8)
        } else {
            json = Data("{}".utf8)
        }
        return envelope(json, flags: 0x02)
    }

    /// A streaming error before any message: still a 200 with only the end-stream frame.
    static func streamError(_ failure: Failure, _ codec: Codec) -> Response {
        Response(status: .ok, headers: [.contentType: codec.streamContentType], body: .init(byteBuffer: endOfStream(failure)))
    }

    /// Reads envelopes from a request body: one message at a time.
    struct EnvelopeReader {
        var iterator: RequestBody.AsyncIterator
        var pending = ByteBuffer()

        init(_ body: RequestBody) { iterator = body.makeAsyncIterator() }

        /// The next message's bytes, or nil at the end of the body or at an end-stream frame.
        mutating func next() async throws -> Data? {
            while true {
                if pending.readableBytes >= 5,
                   let flags = pending.getInteger(at: pending.readerIndex, as: UInt8.self),
                   let length = pending.getInteger(at: pending.readerIndex + 1, as: UInt32.self) {
                    guard length <= UInt32(maxMessage) else { throw Failure(.resource_exhausted, "message of \(length) bytes exceeds \(maxMessage)") }
                    guard flags & 0x01 == 0 else { throw Failure(.unimplemented, "compressed messages are not supported") }
                    if pending.readableBytes >= 5 + Int(length) {
                        pending.moveReaderIndex(forwardBy: 5)
                        let bytes = pending.readData(length: Int(length))!
                        if flags & 0x02 != 0 { return nil }
                        return bytes
                    }
                }
                guard var chunk = try await iterator.next() else {
                    guard pending.readableBytes == 0 else { throw Failure(.invalid_argument, "the stream ended inside an envelope") }
                    return nil
                }
                pending.writeBuffer(&chunk)
            }
        }
    }

    /// A server-streaming call's request: one enveloped message.
    static func decodeStreamRequest<M: SwiftProtobuf.Message>(_ type: M.Type, _ request: Request) async throws -> M {
        var reader = EnvelopeReader(request.body)
        guard let bytes = try await reader.next() else { throw Failure(.invalid_argument, "the stream carried no request message") }
        return try Codec(request).decode(M.self, bytes)
    }
}

/// Each sandbox's envd access token: an HMAC of its id under a secret kept
/// in the data directory, so tokens survive restarts and need no storage.
struct EnvdTokens: Sendable {
    let secret: [UInt8]

    static func load(dataDirectory: String) throws -> EnvdTokens {
        let path = dataDirectory + "/envd.secret"
        if let bytes = try? Descriptor.readFile(path, limit: 4096), bytes.count == 32 { return EnvdTokens(secret: bytes) }
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        try FileSystem.writeAtomically(path, bytes, mode: 0o600)
        return EnvdTokens(secret: bytes)
    }

    /// A fleet's nodes share theirs, derived from the cluster token: a
    /// sandbox's access token stays valid when it moves to another node.
    static func fleet(clusterToken: String) -> EnvdTokens {
        EnvdTokens(secret: Array(HMAC<SHA256>.authenticationCode(for: Array("sprout envd tokens".utf8), using: SymmetricKey(data: Array(clusterToken.utf8)))))
    }

    func token(for sandboxID: String) -> String { token("ea_", "envd:" + sandboxID) }

    /// A volume's content token (E2B's `/volumecontent` routes): the same
    /// secret, another label.
    func volumeToken(for volumeID: String) -> String { token("vt_", "volume:" + volumeID) }

    private func token(_ prefix: String, _ label: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(label.utf8), using: SymmetricKey(data: secret))
        return prefix + Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    /// Compares in constant time.
    func verify(_ presented: String, for sandboxID: String) -> Bool { Self.same(presented, token(for: sandboxID)) }

    func verifyVolume(_ presented: String, for volumeID: String) -> Bool { Self.same(presented, volumeToken(for: volumeID)) }

    private static func same(_ presented: String, _ token: String) -> Bool {
        let expected = Array(token.utf8)
        let given = Array(presented.utf8)
        guard expected.count == given.count else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(expected, given) { difference |= a ^ b }
        return difference == 0
    }
}
