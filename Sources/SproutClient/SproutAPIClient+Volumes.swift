import Foundation
import NIOCore
import SproutAPI
import SproutCore

extension SproutAPIClient {
    func volumePath(_ name: String, _ rest: String = "") -> String {
        "/v1/volumes/\(percentEncode(name))" + (rest.isEmpty ? "" : "/" + rest)
    }

    public func createVolume(_ request: API.CreateVolume) async throws -> API.Volume {
        try await call(.POST, "/v1/volumes", body: request, as: API.Volume.self)
    }

    public func volumes() async throws -> [API.Volume] {
        try await call(.GET, "/v1/volumes", as: [API.Volume].self)
    }

    public func volume(_ name: String) async throws -> API.Volume {
        try await call(.GET, volumePath(name), as: API.Volume.self)
    }

    /// Moves the volume to another node of a fleet (admin, through an API
    /// server): `node`, or the ready node with the fewest volumes.
    public func moveVolume(_ name: String, to node: String? = nil) async throws -> API.Volume {
        try await call(.POST, volumePath(name, "move") + (node.map { "?node=\(percentEncode($0))" } ?? ""), as: API.Volume.self)
    }

    /// Refused while a sandbox mounts it, unless `force` (which kills those sandboxes).
    public func deleteVolume(_ name: String, force: Bool = false) async throws {
        try await callExpectingNoBody(.DELETE, volumePath(name) + (force ? "?force=true" : ""))
    }

    public func volumeList(_ name: String, path: String) async throws -> [API.FileEntry] {
        try await call(.GET, volumePath(name, "files/list") + "?path=\(percentEncode(path))", as: API.Entries.self).entries
    }

    public func volumeStat(_ name: String, path: String) async throws -> API.FileEntry {
        try await call(.GET, volumePath(name, "files/stat") + "?path=\(percentEncode(path))", as: API.FileEntry.self)
    }

    public func volumeRead(_ name: String, path: String, limit: Int = 64 << 20) async throws -> [UInt8] {
        try await Self.collect(try await send(.GET, volumePath(name, "files") + "?path=\(percentEncode(path))"), limit: limit)
    }

    /// Writes a file whole (its parent directories made); returns its size.
    @discardableResult
    public func volumeWrite(_ name: String, path: String, bytes: [UInt8]) async throws -> Int64 {
        let response = try await send(.PUT, volumePath(name, "files") + "?path=\(percentEncode(path))",
                                      body: .bytes(ByteBuffer(bytes: bytes)), contentType: "application/octet-stream")
        _ = try await Self.collect(response, limit: 65536)
        return Int64(bytes.count)
    }

    public func volumeRemove(_ name: String, path: String) async throws {
        try await callExpectingNoBody(.DELETE, volumePath(name, "files") + "?path=\(percentEncode(path))")
    }

    public func volumeMakeDirectory(_ name: String, path: String, parents: Bool = false) async throws {
        _ = try await call(.POST, volumePath(name, "files/mkdir") + "?path=\(percentEncode(path))&parents=\(parents)", as: API.FileEntry.self)
    }
}
