import Foundation
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore

/// envd's `filesystem.Filesystem` messages in Connect's JSON mapping.
enum EnvdFilesystem {
    struct PathRequest: Decodable { var path: String }
    struct ListDirRequest: Decodable { var path: String; var depth: Int? }
    struct MoveRequest: Decodable { var source: String; var destination: String }
    struct EntryInfo: Encodable, Sendable {
        var name: String
        var type: String
        var path: String
        var size: Int64
        var mode: UInt32
        var permissions: String
        var owner: String
        var group: String
        var modifiedTime: String
        var symlinkTarget: String?
        var isSymlink: Bool?
        /// The file's `user.e2b.*` extended attributes, without the prefix.
        var metadata: [String: String]?
    }

    static let metadataPrefix = "user.e2b."

    /// `user.e2b.k` → `k`; nil when there are none.
    static func metadata(_ xattrs: [String: String]?) -> [String: String]? {
        var out: [String: String] = [:]
        for (name, value) in xattrs ?? [:] where name.hasPrefix(metadataPrefix) {
            out[String(name.dropFirst(metadataPrefix.count))] = value
        }
        return out.isEmpty ? nil : out
    }
    struct EntryResponse: Encodable { var entry: EntryInfo }
    struct ListDirResponse: Encodable { var entries: [EntryInfo] }

    static func typeName(_ kind: FileInfo.Kind) -> String {
        switch kind {
        case .file: "FILE_TYPE_FILE"
        case .dir: "FILE_TYPE_DIRECTORY"
        case .symlink, .other: "FILE_TYPE_UNSPECIFIED"
        }
    }

    /// `-rw-r--r--` from the type and permission bits.
    static func permissions(_ kind: FileInfo.Kind, _ mode: UInt32) -> String {
        var text = kind == .dir ? "d" : kind == .symlink ? "L" : "-"
        let letters: [Character] = ["r", "w", "x"]
        for shift in stride(from: 6, through: 0, by: -3) {
            for (i, letter) in letters.enumerated() {
                text.append(mode >> UInt32(shift + 2 - i) & 1 == 1 ? letter : "-")
            }
        }
        return text
    }
}

extension EnvdService {
    func filesystemCall(_ method: String, _ request: Request, streaming: Bool) async throws -> Response {
        switch method {
        case "Stat":
            let body = try await ConnectRPC.decodeUnary(EnvdFilesystem.PathRequest.self, request)
            let path = try user.resolve(body.path)
            return try ConnectRPC.unary(EnvdFilesystem.EntryResponse(entry: try await withAgent { try await entry(path, $0, listing: false) }))
        case "ListDir":
            let body = try await ConnectRPC.decodeUnary(EnvdFilesystem.ListDirRequest.self, request)
            let path = try user.resolve(body.path)
            let depth = body.depth ?? 1
            guard (0...64).contains(depth) else { throw ConnectRPC.Failure(.invalid_argument, "depth must be 0-64") }
            let entries = try await withAgent { agent -> [EnvdFilesystem.EntryInfo] in
                let directory = try await agent.stat(path)
                guard directory.type == .dir else { throw ConnectRPC.Failure(.invalid_argument, "path \(path) is not a directory") }
                var out: [EnvdFilesystem.EntryInfo] = []
                for info in try await agent.list(path, depth: max(1, depth)) where info.path != path {
                    out.append(try await describe(info, agent, listing: true))
                }
                return out
            }
            return try ConnectRPC.unary(EnvdFilesystem.ListDirResponse(entries: entries))
        case "MakeDir":
            let body = try await ConnectRPC.decodeUnary(EnvdFilesystem.PathRequest.self, request)
            let path = try user.resolve(body.path)
            let made = try await withAgent { agent -> EnvdFilesystem.EntryInfo in
                if (try? await agent.stat(path)) != nil { throw ConnectRPC.Failure(.already_exists, "path \(path) already exists") }
                try await agent.makeDirectory(path, owner: user.agentUser)
                return try await entry(path, agent)
            }
            return try ConnectRPC.unary(EnvdFilesystem.EntryResponse(entry: made))
        case "Move":
            let body = try await ConnectRPC.decodeUnary(EnvdFilesystem.MoveRequest.self, request)
            let source = try user.resolve(body.source), destination = try user.resolve(body.destination)
            let moved = try await withAgent { agent -> EnvdFilesystem.EntryInfo in
                try await agent.move(source, to: destination)
                return try await entry(destination, agent)
            }
            return try ConnectRPC.unary(EnvdFilesystem.EntryResponse(entry: moved))
        case "Remove":
            let body = try await ConnectRPC.decodeUnary(EnvdFilesystem.PathRequest.self, request)
            let path = try user.resolve(body.path)
            try await withAgent { agent in
                // Removing what is not there succeeds, as envd's does.
                guard (try? await agent.stat(path)) != nil else { return }
                try await agent.remove(path, recursive: true)
            }
            return try ConnectRPC.unary(EnvdProcess.Empty())
        default:
            if let response = try await watchCall(method, request) { return response }
            throw Self.unimplemented("filesystem.Filesystem", method)
        }
    }

    func entry(_ path: String, _ agent: AgentClient, listing: Bool = true) async throws -> EnvdFilesystem.EntryInfo {
        try await describe(try await agent.stat(path), agent, listing: listing)
    }

    /// A symlink is described as envd describes it: the type and permission
    /// bits of what it resolves to, and that resolved path, absolute. A
    /// listing marks the link itself (`isSymlink`, which the SDK shows as a
    /// symlink); `Stat` (`get_info`, `exists`) follows it and does not.
    func describe(_ info: FileInfo, _ agent: AgentClient, listing: Bool) async throws -> EnvdFilesystem.EntryInfo {
        let info = try await xattrStore.fill(info)
        var kind = info.type
        var mode = info.mode
        var target: String?
        if info.type == .symlink {
            let (resolved, final) = try await resolveLink(info, agent)
            target = resolved
            kind = final?.type ?? .other
            mode = final?.mode ?? 0
        }
        return EnvdFilesystem.EntryInfo(
            name: info.name, type: EnvdFilesystem.typeName(kind), path: info.path, size: info.size, mode: mode,
            permissions: EnvdFilesystem.permissions(info.type, info.mode), owner: info.owner ?? "root", group: info.group ?? "root",
            modifiedTime: E2B.rfc3339(info.mtime), symlinkTarget: target, isSymlink: info.type == .symlink && listing ? true : nil,
            metadata: EnvdFilesystem.metadata(info.xattrs))
    }

    /// Follows a symlink to the end of its chain (at most 40 links, as the
    /// kernel does): the absolute path it resolves to, and what is there
    /// (nil for a dangling link or a loop, which resolve to the link itself).
    func resolveLink(_ link: FileInfo, _ agent: AgentClient) async throws -> (String, FileInfo?) {
        var current = link
        for _ in 0..<40 {
            guard current.type == .symlink, let next = current.target else { return (current.path, current) }
            let parent = current.path.split(separator: "/").dropLast().joined(separator: "/")
            let absolute = try user.resolve(next.hasPrefix("/") ? next : "/" + parent + "/" + next)
            guard let found = try? await agent.stat(absolute) else { return (link.path, nil) }
            current = found
        }
        return (link.path, nil)
    }
}
