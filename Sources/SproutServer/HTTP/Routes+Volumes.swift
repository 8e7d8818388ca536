import Glibc
import Hummingbird
import NIOCore
import SproutAPI
import SproutBlocking
import SproutCore

/// `/v1/volumes`: volumes and their files without a sandbox. The file
/// routes mirror a sandbox's (`files`, `files/list`, `files/stat`,
/// `files/mkdir`), with paths inside the volume.
struct VolumeRoutes {
    let volumes: Volumes
    let maxUploadBytes: Int64

    func register(on group: RouterGroup<SproutContext>) {
        group.post("volumes") { request, context in
            let body = try await JSONBody.decode(API.CreateVolume.self, from: request)
            return try JSONBody.response(try await volumes.create(body, for: try context.caller()), status: .created)
        }
        group.get("volumes") { _, context in
            try JSONBody.response(try await volumes.list(for: try context.caller()))
        }
        group.get("volumes/:name") { _, context in
            try JSONBody.response(try await volumes.show(try context.parameters.require("name"), for: try context.caller()))
        }
        group.delete("volumes/:name") { request, context in
            let force = request.uri.queryParameters.get("force") == "true"
            try await volumes.delete(try context.parameters.require("name"), force: force, for: try context.caller())
            return Response(status: .noContent)
        }
        // Moves between a fleet's nodes (admin; an API server's `volumes/{name}/move` and drain use them).
        group.post("volumes/import") { request, context in
            let body = try await JSONBody.decode(API.VolumeExport.self, from: request)
            return try JSONBody.response(try await volumes.importVolume(body, for: try context.caller()), status: .created)
        }
        group.post("volumes/:name/export") { request, context in
            let withPaused = request.uri.queryParameters.get("withPaused") == "true"
            return try JSONBody.response(try await volumes.export(try context.parameters.require("name"), withPaused: withPaused, for: try context.caller()))
        }
        group.delete("volumes/:name/export") { _, context in
            try await volumes.cancelExport(try context.parameters.require("name"), for: try context.caller())
            return Response(status: .noContent)
        }
        group.get("volumes/:name/files/list") { request, context in
            try JSONBody.response(API.Entries(entries: try await files(context).list(try AgentRoutes.path(request))))
        }
        group.get("volumes/:name/files/stat") { request, context in
            try JSONBody.response(try await files(context).stat(try AgentRoutes.path(request)))
        }
        group.post("volumes/:name/files/mkdir") { request, context in
            let files = try await files(context)
            let path = try AgentRoutes.path(request)
            try await files.makeDirectory(path, parents: request.uri.queryParameters.get("parents") == "true")
            return try JSONBody.response(try await files.stat(path), status: .created)
        }
        group.delete("volumes/:name/files") { request, context in
            try await files(context).remove(try AgentRoutes.path(request))
            return Response(status: .noContent)
        }
        group.get("volumes/:name/files") { request, context in
            Self.download(try await files(context).openRead(try AgentRoutes.path(request)))
        }
        group.put("volumes/:name/files") { request, context in
            let files = try await files(context)
            let path = try AgentRoutes.path(request)
            if let length = request.headers[.contentLength].flatMap({ Int64($0) }), length > maxUploadBytes {
                throw SproutError(.tooLarge, "upload of \(length) bytes exceeds the limit of \(maxUploadBytes)")
            }
            let size = try await Self.upload(request.body, to: try await files.openWrite(path), limit: maxUploadBytes)
            return try JSONBody.response(["size": size], status: .created)
        }
    }

    func files(_ context: SproutContext) async throws -> VolumeFiles {
        try await volumes.files(try context.parameters.require("name"), for: try context.caller())
    }

    /// A file's bytes as a response body of its size, read a chunk at a time off the cooperative pool.
    static func download(_ file: (fd: Int32, size: Int64)) -> Response {
        let fd = file.fd
        return Response(
            status: .ok, headers: [.contentType: "application/octet-stream", .contentLength: String(file.size)],
            body: ResponseBody(contentLength: Int(file.size)) { writer in
                defer { close(fd) }
                while true {
                    let chunk = try await onThread { () -> [UInt8] in
                        var buffer = [UInt8](repeating: 0, count: 1 << 20)
                        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                        guard n >= 0 else { throw SproutError.system("read") }
                        return Array(buffer[0..<n])
                    }
                    if chunk.isEmpty { break }
                    try await writer.write(ByteBuffer(bytes: chunk))
                }
                try await writer.finish(nil)
            })
    }

    /// A request body into a volume's file; returns its size. A failure
    /// leaves the file as it was.
    static func upload(_ body: RequestBody, to upload: VolumeFiles.Upload, limit: Int64) async throws -> Int64 {
        do {
            var total: Int64 = 0
            for try await buffer in body {
                total += Int64(buffer.readableBytes)
                guard total <= limit else { throw SproutError(.tooLarge, "upload exceeds the limit of \(limit) bytes") }
                try await VolumeFiles.write(upload.fd, Array(buffer.readableBytesView))
            }
            try await upload.finish()
            return total
        } catch {
            upload.abort()
            throw error
        }
    }
}
