import EnvdProto
import Foundation
import Hummingbird
import NIOCore
import SproutAgentClient
import SproutAgentProtocol
import SproutCore
import SwiftProtobuf

/// Entries of envd's `filesystem.Filesystem` (messages from `EnvdProto`).
enum EnvdFilesystem {
    static let metadataPrefix = "user.e2b."

    /// `user.e2b.k` → `k`.
    static func metadata(_ xattrs: [String: String]?) -> [String: String] {
        var out: [String: String] = [:]
        for (name, value) in xattrs ?? [:] where name.hasPrefix(metadataPrefix) {
            out[String(name.dropFirst(metadataPrefix.count))] = value
        }
        return out
    }

    static func type(_ kind: FileInfo.Kind) -> Filesystem_FileType {
        switch kind {
        case .file: .file
        case .dir: .directory
        case .symlink, .other: .unspecified
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
            let body = try await ConnectRPC.decodeUnary(Filesystem_StatRequest.self, request)
            let path = try user.resolve(body.path)
            var response = Filesystem_StatResponse()
            response.entry = try await withAgent { try await entry(path, $0, listing: false) }
            return try ConnectRPC.unary(response, for: request)
        case "ListDir":
            let body = try await ConnectRPC.decodeUnary(Filesystem_ListDirRequest.self, request)
            let path = try user.resolve(body.path)
            // 0 is proto3's unset, and envd's default of one level.
            let depth = Int(body.depth)
            guard (0...64).contains(depth) else { throw ConnectRPC.Failure(.invalid_argument, "depth must be 0-64") }
            var response = Filesystem_ListDirResponse()
            response.entries = try await withAgent { agent -> [Filesystem_EntryInfo] in
                let directory = try await agent.stat(path)
                guard directory.type == .dir else { throw ConnectRPC.Failure(.invalid_argument, "path \(path) is not a directory") }
                var out: [Filesystem_EntryInfo] = []
                for info in try await agent.list(path, depth: max(1, depth)) where info.path != path {
                    out.append(try await describe(info, agent, listing: true))
                }
                return out
            }
            return try ConnectRPC.unary(response, for: request)
        case "MakeDir":
            let body = try await ConnectRPC.decodeUnary(Filesystem_MakeDirRequest.self, request)
            let path = try user.resolve(body.path)
            var response = Filesystem_MakeDirResponse()
            response.entry = try await withAgent { agent -> Filesystem_EntryInfo in
                if (try? await agent.stat(path)) != nil { throw ConnectRPC.Failure(.already_exists, "path \(path) already exists") }
                try await agent.makeDirectory(path, owner: user.agentUser)
                return try await entry(path, agent)
            }
            return try ConnectRPC.unary(response, for: request)
        case "Move":
            let body = try await ConnectRPC.decodeUnary(Filesystem_MoveRequest.self, request)
            let source = try user.resolve(body.source), destination = try user.resolve(body.destination)
            var response = Filesystem_MoveResponse()
            response.entry = try await withAgent { agent -> Filesystem_EntryInfo in
                try await agent.move(source, to: destination)
                return try await entry(destination, agent)
            }
            return try ConnectRPC.unary(response, for: request)
        case "Remove":
            let body = try await ConnectRPC.decodeUnary(Filesystem_RemoveRequest.self, request)
            let path = try user.resolve(body.path)
            try await withAgent { agent in
                // Removing what is not there succeeds, as envd's does.
                guard (try? await agent.stat(path)) != nil else { return }
                try await agent.remove(path, recursive: true)
            }
            return try ConnectRPC.unary(Filesystem_RemoveResponse(), for: request)
        default:
            if let response = try await watchCall(method, request) { return response }
            throw Self.unimplemented("filesystem.Filesystem", method)
        }
    }

    func entry(_ path: String, _ agent: AgentClient, listing: Bool = true) async throws -> Filesystem_EntryInfo {
        try await describe(try await agent.stat(path), agent, listing: listing)
    }

    /// A symlink is described as envd describes it: the type and permission
    /// bits of what it resolves to, and that resolved path, absolute. A
    /// listing marks the link itself (`isSymlink`, which the SDK shows as a
    /// symlink); `Stat` (`get_info`, `exists`) follows it and does not.
    func describe(_ info: FileInfo, _ agent: AgentClient, listing: Bool) async throws -> Filesystem_EntryInfo {
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
        var entry = Filesystem_EntryInfo()
        entry.name = info.name
        entry.type = EnvdFilesystem.type(kind)
        entry.path = info.path
        entry.size = info.size
        entry.mode = mode
        entry.permissions = EnvdFilesystem.permissions(info.type, info.mode)
        entry.owner = info.owner ?? "root"
        entry.group = info.group ?? "root"
        entry.modifiedTime = Google_Protobuf_Timestamp(timeIntervalSince1970: info.mtime)
        if let target { entry.symlinkTarget = target }
        entry.isSymlink = info.type == .symlink && listing
        entry.metadata = EnvdFilesystem.metadata(info.xattrs)
        return entry
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
