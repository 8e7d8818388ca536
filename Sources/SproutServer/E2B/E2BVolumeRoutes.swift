import Foundation
import Glibc
import Hummingbird
import SproutAPI
import SproutCore

/// E2B's volumes: `/volumes` on the control plane (the API key), and the
/// content routes `/volumecontent/{volumeID}/…` that the SDK's `Volume`
/// calls with the volume's own token (`Authorization: Bearer`). Both are
/// Sprout's volumes, translated.
struct E2BVolumeRoutes {
    let services: SproutServices
    let tokens: EnvdTokens

    struct VolumeAndToken: Encodable {
        var volumeID: String
        var name: String
        var token: String
    }
    struct VolumeInfo: Encodable {
        var volumeID: String
        var name: String
    }
    struct NewVolume: Decodable { var name: String }
    struct Attributes: Decodable { var uid: UInt32?; var gid: UInt32?; var mode: UInt32? }
    /// `VolumeEntryStat`: times as RFC 3339, the type by name.
    struct EntryStat: Encodable {
        var name: String
        var type: String
        var path: String
        var size: Int64
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32
        var atime: String
        var mtime: String
        var ctime: String
        var target: String?
    }

    func register(on router: Router<SproutContext>) {
        let volumes = services.volumes
        let control = router.group("volumes")
            .add(middleware: E2BErrorMiddleware())
            .add(middleware: AuthMiddleware(keys: services.keys, clusterToken: services.config.clusterToken))
        control.post { request, context in
            let body = try await JSONBody.decode(NewVolume.self, from: request)
            let made = try await volumes.create(API.CreateVolume(name: body.name), for: try context.caller())
            return try JSONBody.response(VolumeAndToken(volumeID: made.id, name: made.name, token: tokens.volumeToken(for: made.id)), status: .created)
        }
        control.get { _, context in
            try JSONBody.response(try await volumes.list(for: try context.caller()).map { VolumeInfo(volumeID: $0.id, name: $0.name) })
        }
        control.get(":id") { _, context in
            let volume = try await volumes.show(try context.parameters.require("id"), for: try context.caller())
            return try JSONBody.response(VolumeAndToken(volumeID: volume.id, name: volume.name, token: tokens.volumeToken(for: volume.id)))
        }
        control.delete(":id") { _, context in
            try await volumes.delete(try context.parameters.require("id"), force: false, for: try context.caller())
            return Response(status: .noContent)
        }

        let content = router.group("volumecontent/:id").add(middleware: E2BErrorMiddleware())
        content.get("dir") { request, context in
            let depth = try request.uri.queryParameters.get("depth").map {
                guard let n = Int($0), (1...64).contains(n) else { throw SproutError(.invalidArgument, "depth must be 1-64") }
                return n
            } ?? 1
            return try JSONBody.response(try await files(request, context).items(try AgentRoutes.path(request), depth: depth).map(Self.stat))
        }
        content.post("dir") { request, context in
            let files = try await files(request, context)
            let path = try AgentRoutes.path(request)
            let (uid, gid, mode) = try Self.attributes(request)
            // `force` makes the parents too, as `mkdir -p`.
            try await files.makeDirectory(path, parents: request.uri.queryParameters.get("force") == "true", uid: uid, gid: gid, mode: mode)
            return try JSONBody.response(Self.stat(try await files.item(path)), status: .created)
        }
        content.get("path") { request, context in
            try JSONBody.response(Self.stat(try await files(request, context).item(try AgentRoutes.path(request))))
        }
        content.patch("path") { request, context in
            let files = try await files(request, context)
            let path = try AgentRoutes.path(request)
            let body = try await JSONBody.decode(Attributes.self, from: request)
            try await files.setAttributes(path, uid: body.uid, gid: body.gid, mode: body.mode)
            return try JSONBody.response(Self.stat(try await files.item(path)))
        }
        content.delete("path") { request, context in
            try await files(request, context).remove(try AgentRoutes.path(request))
            return Response(status: .noContent)
        }
        content.get("file") { request, context in
            VolumeRoutes.download(try await files(request, context).openRead(try AgentRoutes.path(request)))
        }
        content.put("file") { request, context in
            let files = try await files(request, context)
            let path = try AgentRoutes.path(request)
            let (uid, gid, mode) = try Self.attributes(request)
            let limit = services.config.maxUploadBytes
            _ = try await VolumeRoutes.upload(request.body, to: try await files.openWrite(path, uid: uid, gid: gid, mode: mode), limit: limit)
            return try JSONBody.response(Self.stat(try await files.item(path)), status: .created)
        }
    }

    /// The volume the token in `Authorization: Bearer` opens.
    func files(_ request: Request, _ context: SproutContext) async throws -> VolumeFiles {
        let id = try context.parameters.require("id")
        let header = request.headers[.authorization] ?? ""
        guard header.hasPrefix("Bearer "), tokens.verifyVolume(String(header.dropFirst(7)), for: id) else {
            throw SproutError(.unauthorized, "a volume token (Authorization: Bearer) for volume \(id.prefix(64)) is required")
        }
        return try await services.volumes.files(id: id)
    }

    static func attributes(_ request: Request) throws -> (UInt32?, UInt32?, UInt32?) {
        func number(_ name: String) throws -> UInt32? {
            try request.uri.queryParameters.get(name).map {
                guard let n = UInt32($0) else { throw SproutError(.invalidArgument, "\(name) must be a number") }
                return n
            }
        }
        return (try number("uid"), try number("gid"), try number("mode"))
    }

    static func stat(_ item: VolumeFiles.Item) -> EntryStat {
        let type = switch item.entry.type {
        case .file: "file"
        case .dir: "directory"
        case .symlink: "symlink"
        case .other: "unknown"
        }
        func time(_ t: timespec) -> String { E2B.rfc3339(Double(t.tv_sec) + Double(t.tv_nsec) / 1e9) }
        return EntryStat(name: item.name, type: type, path: item.path, size: Int64(item.st.st_size), mode: UInt32(item.st.st_mode & 0o7777),
                         uid: item.st.st_uid, gid: item.st.st_gid, atime: time(item.st.st_atim), mtime: time(item.st.st_mtim),
                         ctime: time(item.st.st_ctim), target: item.target)
    }
}
