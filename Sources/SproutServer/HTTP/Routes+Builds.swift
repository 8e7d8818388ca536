import Foundation
import Glibc
import Hummingbird
import NIOCore
import SproutAPI
import SproutAgentClient
import SproutCore
import SproutSystem

/// `POST /v1/envs` (push), `POST /v1/envs/import` (an image archive),
/// `/v1/builds/{id}` and its streamed logs.
struct BuildRoutes {
    let services: SproutServices

    func register(on group: RouterGroup<SproutContext>) {
        group.post("envs") { request, context in
            let body = try await JSONBody.decode(API.Push.self, from: request)
            let result = try await services.builder.push(body, for: try context.caller())
            return try JSONBody.response(result, status: result.build == nil ? .ok : .accepted)
        }
        group.post("envs/import") { request, context in
            let body = try await JSONBody.decode(API.ImportImage.self, from: request)
            let env = try await ImageEnvs(lifecycle: services.lifecycle).importArchive(
                blob: body.blob, reference: body.reference, name: body.name, for: try context.caller())
            return try JSONBody.response(env, status: .created)
        }
        group.get("builds") { request, context in
            let limit = try request.uri.queryParameters.get("limit").map {
                guard let n = Int($0) else { throw SproutError(.invalidArgument, "limit must be a number") }
                return n
            } ?? 100
            let env = request.uri.queryParameters.get("env").map { String($0) }
            return try JSONBody.response(try await services.builder.list(for: try context.caller(), env: env, limit: limit))
        }
        group.get("builds/:id") { request, context in
            let id = try context.parameters.require("id")
            let caller = try context.caller()
            var build = try await services.builder.build(id, for: caller)
            // ?wait=true answers once the build has ended: no client-side polling loop.
            if request.uri.queryParameters.get("wait") == "true" {
                let deadline = ContinuousClock.now + .seconds(3600)
                while build.status == "running" && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(100))
                    build = try await services.builder.build(id, for: caller)
                }
            }
            return try JSONBody.response(build)
        }
        group.delete("builds/:id") { _, context in
            try JSONBody.response(try await services.builder.cancel(try context.parameters.require("id"), for: try context.caller()))
        }
        group.get("builds/:id/logs") { request, context in
            let id = try context.parameters.require("id")
            let caller = try context.caller()
            _ = try await services.builder.build(id, for: caller)
            let path = services.builder.logPath(id)
            let follow = request.uri.queryParameters.get("follow") == "true"
            return Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: ResponseBody { writer in
                var offset: Int64 = 0
                while true {
                    let chunk = Self.read(path, from: offset)
                    if !chunk.isEmpty {
                        offset += Int64(chunk.count)
                        try await writer.write(ByteBuffer(bytes: chunk))
                        continue
                    }
                    guard follow, (try? await services.builder.build(id, for: caller))?.status == "running" else { break }
                    try await Task.sleep(for: .milliseconds(100))
                }
                // Anything written between the last read and the end.
                let rest = Self.read(path, from: offset)
                if !rest.isEmpty { try await writer.write(ByteBuffer(bytes: rest)) }
                try await writer.finish(nil)
            })
        }
    }

    static func read(_ path: String, from offset: Int64) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = pread(fd, &buffer, buffer.count, off_t(offset))
        return n > 0 ? Array(buffer[0..<n]) : []
    }
}
