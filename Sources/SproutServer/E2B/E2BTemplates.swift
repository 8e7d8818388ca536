import Crypto
import Foundation
import SproutAPI
import SproutCore
import SproutHost
import SproutRegistry
import SproutStore
import SproutSystem

extension E2B {
    /// `POST /v3/templates`.
    struct TemplateRequest: Decodable {
        var name: String?
        var alias: String?
        var tags: [String]?
        var cpuCount: Int?
        var memoryMB: Int?
    }

    struct TemplateRequestResponse: Encodable {
        var templateID: String
        var buildID: String
        var `public` = false
        var names: [String]
        var tags: [String]
        var aliases: [String]
    }

    /// `POST /v2/templates/{templateID}/builds/{buildID}`: the template as the SDK serializes it.
    struct TemplateBuildStart: Decodable {
        struct Step: Decodable {
            var type: String
            var args: [String]?
            var filesHash: String? = nil
            var force: Bool? = nil
        }
        var fromImage: String?
        var fromTemplate: String?
        var fromImageRegistry: AnyDecodable?
        var force: Bool?
        var steps: [Step]?
        var startCmd: String?
        var readyCmd: String?
    }

    /// Present only to say it was given.
    struct AnyDecodable: Decodable {
        init(from decoder: Decoder) throws {}
    }

    struct AssignTags: Decodable {
        var target: String
        var tags: [String]
    }

    struct DeleteTags: Decodable {
        var name: String
        var tags: [String]
    }

    struct AssignedTags: Encodable {
        var tags: [String]
        var buildID: String
    }

    struct TemplateTag: Encodable {
        var tag: String
        var buildID: String
        var createdAt: String
    }

    /// E2B's build ids are UUIDs: an env's, made from its id.
    static func buildUUID(_ envID: String) -> String {
        let hex = Array(hexString(SHA256.hash(data: Data(envID.utf8))).prefix(32))
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(hex[$0]) }.joined(separator: "-")
    }

    struct FileUpload: Encodable {
        var present: Bool
        var url: String?
    }

    struct BuildLogEntry: Encodable {
        var timestamp: String
        var level: String
        var message: String
    }

    struct BuildStatusReason: Encodable {
        var message: String
        var step: String?
    }

    struct TemplateBuildStatus: Encodable {
        var templateID: String
        var buildID: String
        /// waiting, building, ready, error
        var status: String
        var logEntries: [BuildLogEntry]
        var logs: [String] = []
        var reason: BuildStatusReason?
    }
}

/// E2B's template builds between their steps: the template a build was
/// requested for (`POST /v3/templates`) until its steps arrive, the Sprout
/// build they became, and one-time upload links for their files. In memory
/// for a day (a server restart ends builds anyway); uploaded files stay on disk.
actor E2BTemplateBuilds {
    struct Session: Sendable {
        var team: String
        var name: String
        var cpu: Int?
        var memoryMB: Int?
        /// Tags the build's env gets (`name:tag`, or `tags`).
        var tags: [String] = []
        var build: String?
        var envID: String?
        var failure: String?
        var openedAt = 0.0
    }
    private var sessions: [String: Session] = [:]
    private var uploads: [String: (team: String, hash: String, expires: Double)] = [:]

    func open(_ session: Session, now: Double) -> String {
        sessions = sessions.filter { now - $0.value.openedAt < 86_400 }
        let id = UUID().uuidString.lowercased()
        var opened = session
        opened.openedAt = now
        sessions[id] = opened
        return id
    }

    func session(_ id: String, team: String) throws -> Session {
        guard let session = sessions[id], session.team == team else { throw SproutError(.notFound, "no template build \(id)") }
        return session
    }

    func update(_ id: String, _ change: (inout Session) -> Void) {
        if var session = sessions[id] {
            change(&session)
            sessions[id] = session
        }
    }

    func uploadToken(team: String, hash: String, now: Double) -> String {
        uploads = uploads.filter { $0.value.expires > now }
        let token = Identifiers.random(length: 32)
        uploads[token] = (team, hash, now + 3600)
        return token
    }

    func redeem(_ token: String, now: Double) -> (team: String, hash: String)? {
        guard let upload = uploads.removeValue(forKey: token), upload.expires > now else { return nil }
        return (upload.team, upload.hash)
    }
}

/// Where the files of E2B template `COPY` steps are kept: one tar per team
/// and files hash (the SDK's hash of the paths, modes and contents), so a
/// file set uploaded once is `present` for every later build.
struct E2BTemplateFiles: Sendable {
    let root: String

    func path(team: String, hash: String) throws -> String {
        guard hash.count == 64, hash.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw SproutError(.invalidArgument, "a files hash is 64 lowercase hex digits")
        }
        let teamKey = hexString(SHA256.hash(data: Data(team.utf8))).prefix(16)
        return "\(root)/\(teamKey)/\(hash).tar"
    }

    /// The files of one `COPY src dest` step as a push's copy step: the tar
    /// unpacked beside it, the sources matched as Docker matches them, each
    /// file stored as a blob of `team`.
    func copyStep(_ tar: String, source: String, destination: String, owner: String?, mode: UInt32?, number: Int,
                  blobs: BlobStore, catalog: Catalog, team: String) async throws -> API.Push.Step {
        let scratch = "\(root)/.unpack-\(Identifiers.random(length: 8))"
        defer { try? FileSystem.removeTree(scratch) }
        try FileSystem.makeDirectories(scratch, mode: 0o700)
        let out = try await HostCommand.capture(["tar", "--extract", "--file", tar, "--directory", scratch, "--no-same-owner"], timeout: .seconds(600))
        guard out.status == 0 else { throw SproutError(.invalidArgument, "step \(number): the uploaded files are not a tar: \(out.stderr.trimmed)") }
        let (directory, entries) = try LocalFiles.copied([source], to: destination, context: scratch, where: "step \(number)")
        var files: [API.Push.File] = []
        for entry in entries {
            try blobs.importFile(entry.localPath, digest: entry.sha256)
            var st = stat()
            _ = stat(entry.localPath, &st)
            try await catalog.recordBlob(team: team, digest: entry.sha256, size: Int64(st.st_size))
            files.append(API.Push.File(path: entry.path, mode: mode ?? entry.mode, sha256: entry.sha256))
        }
        return API.Push.Step(kind: .copy, files: files, destination: directory, owner: owner, source: "step \(number)")
    }
}

/// The template's steps as a Sprout push: its parent, its steps, `start` and `ready`.
enum E2BTemplateTranslation {
    /// E2B's base image is Sprout's built-in `base` env.
    static let baseImages: Set<String> = ["e2bdev/base", "e2bdev/base:latest", "docker.io/e2bdev/base:latest"]

    static func parent(_ body: E2B.TemplateBuildStart) throws -> String {
        guard body.fromImageRegistry == nil else {
            throw SproutError(.unsupported, "fromImageRegistry: give registry logins to the server (sprout server --registry-auth FILE) instead")
        }
        if let template = body.fromTemplate, !template.isEmpty { return template }
        guard let image = body.fromImage, !image.isEmpty else { return "base" }
        if baseImages.contains(image) { return "base" }
        // An image named without a tag or registry is still an image (`ubuntu` is ubuntu:latest).
        return ImageReference.looksLikeImage(image) ? image : image + ":latest"
    }

    /// The SDK's `wait_for_port(N)` check (`ss`, which an image may lack) as Sprout's `port:N`; any other check as it is.
    static func ready(_ command: String?) -> String? {
        guard let command, !command.isEmpty else { return nil }
        let prefix = "[ -n \"$(ss -Htuln sport = :", suffix = ")\" ]"
        if command.hasPrefix(prefix), command.hasSuffix(suffix),
           let port = UInt16(command.dropFirst(prefix.count).dropLast(suffix.count)), port > 0 {
            return "port:\(port)"
        }
        return command
    }

    /// One step as the SDK sends it (`RUN [cmd, user]`, `ENV [k, v, …]`,
    /// `WORKDIR [path]`, `USER [user]`; `COPY` is made by `E2BTemplateFiles`).
    static func step(_ step: E2B.TemplateBuildStart.Step, number: Int) throws -> API.Push.Step {
        let args = step.args ?? []
        let source = "step \(number)"
        switch step.type.uppercased() {
        case "RUN":
            guard let command = args.first, !command.isEmpty else { throw SproutError(.invalidArgument, "\(source): RUN without a command") }
            return API.Push.Step(kind: .run, shell: command, user: args.count > 1 && !args[1].isEmpty ? args[1] : nil, source: source)
        case "ENV":
            guard args.count % 2 == 0 else { throw SproutError(.invalidArgument, "\(source): ENV takes name and value pairs") }
            var env: [String: String] = [:]
            for i in stride(from: 0, to: args.count, by: 2) { env[args[i]] = args[i + 1] }
            return API.Push.Step(kind: .env, env: env, source: source)
        case "WORKDIR":
            guard let path = args.first, !path.isEmpty else { throw SproutError(.invalidArgument, "\(source): WORKDIR without a path") }
            return API.Push.Step(kind: .workdir, path: path, source: source)
        case "USER":
            guard let user = args.first, !user.isEmpty else { throw SproutError(.invalidArgument, "\(source): USER without a user") }
            return API.Push.Step(kind: .user, user: user, source: source)
        default:
            throw SproutError(.invalidArgument, "\(source): Sprout cannot run template steps of type \(step.type.prefix(40))")
        }
    }
}
