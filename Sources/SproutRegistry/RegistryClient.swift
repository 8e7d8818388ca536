import AsyncHTTPClient
import Crypto
import Foundation
import Glibc
import NIOCore
import NIOHTTP1
import SproutCore
import SproutStore
import SproutSystem

/// Pulls images by the OCI distribution protocol: a manifest (through an
/// index to linux/amd64's), its config and its layers, each checked against
/// its digest. Authenticates as registries ask (`WWW-Authenticate`): a
/// bearer token from the registry's token service (Docker Hub's, GHCR's,
/// anonymous or with credentials), or basic credentials. HTTPS, except for
/// the registries named insecure (`--insecure-registry HOST:PORT`).
public final class RegistryClient: Sendable {
    let http: HTTPClient
    let insecure: Set<String>
    let credentials: RegistryCredentials
    /// The `Authorization` that worked per registry and repository.
    private let authorizations = Locked<[String: String]>([:])

    /// A pulled image's documents: what to fetch and how to run it.
    public struct Image: Sendable {
        public var reference: ImageReference
        /// The platform manifest's digest: what names this exact image.
        public var digest: String
        public var config: OCIImageConfig
        public var layers: [OCIDescriptor]
    }

    public init(insecure: Set<String> = [], credentials: RegistryCredentials = RegistryCredentials()) {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.timeout.connect = .seconds(30)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        self.insecure = insecure
        self.credentials = credentials
    }

    /// Ends its connections; call once done with it.
    public func shutdown() async {
        try? await http.shutdown()
    }

    static let manifestTypes = OCIIndex.mediaTypes.union(OCIManifest.mediaTypes)

    /// The image `reference` names now: its linux/amd64 manifest and config.
    public func resolve(_ reference: ImageReference) async throws -> Image {
        var (bytes, type) = try await manifest(reference, reference.manifestReference)
        if let digest = reference.digest { try Self.check(bytes, digest: digest, what: "manifest") }
        let isIndex = OCIIndex.mediaTypes.contains(type)
            || (!OCIManifest.mediaTypes.contains(type) && (try? JSONDecoder().decode(OCIIndex.self, from: Data(bytes))) != nil)
        if isIndex {
            let index = try decode(OCIIndex.self, bytes, what: "image index")
            let chosen = try index.hostManifest()
            (bytes, type) = try await manifest(reference, chosen.digest)
            try Self.check(bytes, digest: chosen.digest, what: "manifest")
        }
        let manifest = try decode(OCIManifest.self, bytes, what: "manifest")
        let digest = "sha256:" + hexString(SHA256.hash(data: bytes))
        let configBytes = try await blob(reference, manifest.config, limit: 16 << 20)
        let (config, _) = try OCIImageConfig.decode(Data(configBytes))
        return Image(reference: reference.pinned(digest), digest: digest, config: config, layers: manifest.layers)
    }

    /// Hands blob `layer`'s bytes to `sink` as they arrive, counting and
    /// hashing them: throws, once the body has ended, if they are not the
    /// blob the digest names (the sink must then drop what it made of
    /// them), and at once if they run past the size the manifest gives.
    public func download(_ reference: ImageReference, _ layer: OCIDescriptor, into sink: (ByteBuffer) async throws -> Void) async throws {
        let response = try await get(reference, "blobs/\(layer.digest)", accept: nil, timeout: .minutes(60))
        var hasher = SHA256()
        var size: Int64 = 0
        for try await buffer in response.body {
            size += Int64(buffer.readableBytes)
            if let limit = layer.size, size > limit {
                throw SproutError(.malformed, "blob \(layer.digest) from \(reference.registry) is larger than the \(limit) bytes its manifest says")
            }
            buffer.withUnsafeReadableBytes { hasher.update(bufferPointer: $0) }
            try await sink(buffer)
        }
        let actual = "sha256:" + hexString(hasher.finalize())
        guard actual == layer.digest else {
            throw SproutError(.malformed, "blob \(layer.digest) from \(reference.registry) does not match its digest (it is \(actual))")
        }
    }

    // MARK: Requests

    private func manifest(_ reference: ImageReference, _ name: String) async throws -> (bytes: [UInt8], type: String) {
        let response = try await get(reference, "manifests/\(name)", accept: Self.manifestTypes.sorted().joined(separator: ", "),
                                     timeout: .seconds(60))
        let type = response.headers.first(name: "Content-Type")?.split(separator: ";").first.map(String.init) ?? ""
        let body = try await response.body.collect(upTo: 4 << 20)
        return (Array(buffer: body), type)
    }

    private func blob(_ reference: ImageReference, _ descriptor: OCIDescriptor, limit: Int) async throws -> [UInt8] {
        let response = try await get(reference, "blobs/\(descriptor.digest)", accept: nil, timeout: .seconds(120))
        let bytes = Array(buffer: try await response.body.collect(upTo: limit))
        try Self.check(bytes, digest: descriptor.digest, what: "blob")
        return bytes
    }

    /// `GET /v2/<repository>/<path>`, authenticating once if asked and
    /// following redirects (a blob's is often a signed URL of another host,
    /// which gets no credentials). Only a 200 is an answer.
    private func get(_ reference: ImageReference, _ path: String, accept: String?, timeout: TimeAmount) async throws -> HTTPClientResponse {
        let scheme = insecure.contains(reference.registry) ? "http" : "https"
        let key = "\(reference.registry)/\(reference.repository)"
        var url = "\(scheme)://\(reference.apiHost)/v2/\(reference.repository)/\(path)"
        var authorization = authorizations.current[key]
        var authenticated = false
        for _ in 0..<8 {
            var request = HTTPClientRequest(url: url)
            if let accept { request.headers.add(name: "Accept", value: accept) }
            let sameHost = URL(string: url)?.host == URL(string: "\(scheme)://\(reference.apiHost)")?.host
            if let authorization, sameHost { request.headers.add(name: "Authorization", value: authorization) }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: timeout)
            } catch {
                throw SproutError(.unavailable, "cannot reach registry \(reference.registry) (\(url.prefix(200))): \(error)")
            }
            switch response.status.code {
            case 200:
                return response
            case 301, 302, 303, 307, 308:
                guard let location = response.headers.first(name: "Location"), let next = URL(string: location, relativeTo: URL(string: url)) else {
                    throw SproutError(.malformed, "registry \(reference.registry) redirected without a Location")
                }
                url = next.absoluteString
            case 401 where !authenticated:
                authenticated = true
                let challenge = response.headers.first(name: "WWW-Authenticate") ?? ""
                authorization = try await authorize(challenge, reference: reference)
                authorizations.withLock { $0[key] = authorization }
            default:
                let body = (try? await response.body.collect(upTo: 64 << 10)).map { String(buffer: $0) } ?? ""
                throw Self.failure(response.status, body: body, reference: reference, path: path)
            }
        }
        throw SproutError(.malformed, "registry \(reference.registry) redirected too many times")
    }

    static func failure(_ status: HTTPResponseStatus, body: String, reference: ImageReference, path: String) -> SproutError {
        let detail = body.trimmed.prefix(300)
        switch status.code {
        case 401, 403:
            return SproutError(.forbidden, "registry \(reference.registry) refused access to \(reference.repository) (\(status.code))"
                + " — give credentials in the server's registry auth file (docker's config.json format)" + (detail.isEmpty ? "" : ": \(detail)"))
        case 404:
            return SproutError(.notFound, "registry \(reference.registry) has no \(path.hasPrefix("manifests/") ? "image" : "blob") "
                + "\(reference.repository):\(path.split(separator: "/").last ?? "") (404)")
        case 429:
            return SproutError(.unavailable, "registry \(reference.registry) is rate limiting pulls (429); try again later")
        default:
            return SproutError(.unavailable, "registry \(reference.registry) answered \(status.code) for \(path)" + (detail.isEmpty ? "" : ": \(detail)"))
        }
    }

    /// The `Authorization` a challenge asks for.
    private func authorize(_ challenge: String, reference: ImageReference) async throws -> String {
        let (scheme, parameters) = Self.parseChallenge(challenge)
        let login = credentials.find(reference.registry)
        switch scheme.lowercased() {
        case "basic":
            guard let login else {
                throw SproutError(.forbidden, "registry \(reference.registry) needs credentials for \(reference.repository)"
                    + " — give them in the server's registry auth file (docker's config.json format)")
            }
            return login.basic
        case "bearer":
            guard let realm = parameters["realm"], var components = URLComponents(string: realm) else {
                throw SproutError(.malformed, "registry \(reference.registry) asked for a token without saying where (\(challenge.prefix(200)))")
            }
            var query = components.queryItems ?? []
            if let service = parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            query.append(URLQueryItem(name: "scope", value: parameters["scope"] ?? "repository:\(reference.repository):pull"))
            components.queryItems = query
            guard let url = components.url?.absoluteString else { throw SproutError(.malformed, "bad token realm \(realm.prefix(200))") }
            var request = HTTPClientRequest(url: url)
            if let login { request.headers.add(name: "Authorization", value: login.basic) }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: .seconds(60))
            } catch {
                throw SproutError(.unavailable, "cannot reach \(reference.registry)'s token service (\(url.prefix(200))): \(error)")
            }
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status == .ok else {
                throw Self.failure(response.status, body: String(buffer: body), reference: reference, path: "token")
            }
            struct Token: Decodable { var token: String?; var access_token: String? }
            guard let token = try? JSONDecoder().decode(Token.self, from: Data(body.readableBytesView)), let value = token.token ?? token.access_token
            else { throw SproutError(.malformed, "\(reference.registry)'s token service answered without a token") }
            return "Bearer \(value)"
        default:
            throw SproutError(.unavailable, "registry \(reference.registry) asks for '\(scheme)' authentication, which Sprout does not speak")
        }
    }

    /// `Bearer realm="…",service="…",scope="…"` → ("Bearer", [realm: …]).
    public static func parseChallenge(_ header: String) -> (scheme: String, parameters: [String: String]) {
        let trimmed = header.trimmed
        guard let space = trimmed.firstIndex(of: " ") else { return (trimmed, [:]) }
        var parameters: [String: String] = [:]
        var rest = trimmed[trimmed.index(after: space)...]
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let name = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "\"" {
                    if c == "\\", let next = rest.dropFirst().first { value.append(next); rest = rest.dropFirst(2); continue }
                    value.append(c)
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[name] = value
        }
        return (String(trimmed[..<space]), parameters)
    }

    static func check(_ bytes: [UInt8], digest: String, what: String) throws {
        let actual = "sha256:" + hexString(SHA256.hash(data: bytes))
        guard actual == digest else { throw SproutError(.malformed, "the \(what) \(digest) does not match its digest (it is \(actual))") }
    }

    private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String) throws -> T {
        do { return try JSONDecoder().decode(type, from: Data(bytes)) } catch {
            throw SproutError(.malformed, "the registry's \(what) is not valid: \(error)")
        }
    }
}

/// Registry logins, from a file in docker's `config.json` format:
/// `{"auths": {"ghcr.io": {"auth": "<base64 user:password>"}}}` (or
/// `username` and `password`). Docker Hub's entry is
/// `https://index.docker.io/v1/` or `docker.io`.
public struct RegistryCredentials: Sendable {
    public struct Login: Sendable, Equatable {
        public var username: String
        public var password: String
        public init(username: String, password: String) {
            self.username = username
            self.password = password
        }
        var basic: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
    }
    var logins: [String: Login] = [:]

    public init() {}

    public init(file path: String) throws {
        struct Config: Decodable {
            struct Entry: Decodable { var auth: String?; var username: String?; var password: String? }
            var auths: [String: Entry]?
        }
        let config: Config
        do { config = try JSONDecoder().decode(Config.self, from: Data(try Descriptor.readFile(path, limit: 1 << 20))) } catch {
            throw SproutError(.invalidArgument, "registry auth file \(path): \(error)")
        }
        for (name, entry) in config.auths ?? [:] {
            var login: Login?
            if let auth = entry.auth, let decoded = Data(base64Encoded: auth).map({ String(decoding: $0, as: UTF8.self) }),
               let colon = decoded.firstIndex(of: ":") {
                login = Login(username: String(decoded[..<colon]), password: String(decoded[decoded.index(after: colon)...]))
            } else if let username = entry.username, let password = entry.password {
                login = Login(username: username, password: password)
            }
            guard let login else { throw SproutError(.invalidArgument, "registry auth file \(path): the entry for \(name) has no auth") }
            logins[Self.host(name)] = login
        }
    }

    /// The login for `registry` (as a reference names it), if any.
    public func find(_ registry: String) -> Login? { logins[Self.host(registry)] }

    /// `https://index.docker.io/v1/` and `docker.io` are the same registry.
    static func host(_ name: String) -> String {
        var host = name
        for prefix in ["https://", "http://"] where host.hasPrefix(prefix) { host = String(host.dropFirst(prefix.count)) }
        host = String(host.split(separator: "/").first ?? "")
        return ["index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"].contains(host) ? ImageReference.dockerHub : host
    }
}
