import Foundation
import Glibc
import NIOCore
import SproutCore
import SproutHost
import SproutStore
import SproutSystem
import Testing

/// Image layers and archives, made here with the host's own `tar` and
/// `gzip` (and Python's tarfile for a member GNU tar will not write).
@Suite("Unit: OCI images")
struct OCIImageTests {
    /// A scratch folder removed after `body`, however it ends.
    static func withScratch(_ body: (String) async throws -> Void) async throws {
        ignoreSIGPIPE()  // as the server does: a pipe into a tar that has ended is EPIPE, not the end of us
        let directory = "/tmp/sprout-oci-test-\(Identifiers.random(length: 8))"
        try FileSystem.makeDirectories(directory)
        do { try await body(directory) } catch {
            try? FileSystem.removeTree(directory)
            throw error
        }
        try FileSystem.removeTree(directory)
    }

    static func sha256(_ path: String) async throws -> String {
        "sha256:" + String(try await HostCommand.run(["sha256sum", path]).prefix(64))
    }

    static func write(_ path: String, _ text: String, mode: mode_t = 0o644) throws {
        try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent)
        try FileSystem.writeAtomically(path, text, mode: mode)
    }

    /// A layer as an image has it: a file owned by 1000, a whiteout, an opaque directory, a symlink.
    static func makeLayer(in scratch: String) async throws -> String {
        let source = scratch + "/layer-src"
        try write(source + "/etc/kept", "kept\n", mode: 0o640)
        try await HostCommand.run(["chown", "-h", "1000:1000", source + "/etc/kept"])
        try write(source + "/.wh.gone", "")
        try write(source + "/opaque/.wh..wh..opq", "")
        try write(source + "/opaque/new", "new\n")
        try await HostCommand.run(["ln", "-s", "/etc/kept", source + "/link"])
        let blob = scratch + "/layer.tar.gz"
        try await HostCommand.run(["tar", "--create", "--gzip", "--numeric-owner", "--file", blob, "--directory", source, "."])
        return blob
    }

    @Test("a layer unpacks with its owners, modes and links; OCI whiteouts become overlay ones; the same blob is stored once")
    func layer() async throws {
        try await Self.withScratch { scratch in
            let blob = try await Self.makeLayer(in: scratch)
            let store = LayerStore(root: scratch + "/layers")
            let (digest, added) = try await store.importLayer(blob, digest: try await Self.sha256(blob))
            #expect(added > 0)
            let layer = store.path(digest)
            var st = stat()
            #expect(lstat(layer + "/etc/kept", &st) == 0 && st.st_uid == 1000 && st.st_gid == 1000 && st.st_mode & 0o7777 == 0o640)
            #expect(lstat(layer + "/gone", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0, "the whiteout is a 0/0 device")
            #expect(!FileSystem.exists(layer + "/.wh.gone") && !FileSystem.exists(layer + "/opaque/.wh..wh..opq"))
            let opaque = try await HostCommand.run(["python3", "-c", "import os, sys; print(os.getxattr(sys.argv[1], 'trusted.overlay.opaque').decode())", layer + "/opaque"])
            #expect(opaque == "y\n", "the directory is opaque")
            #expect(try String(contentsOfFile: layer + "/opaque/new", encoding: .utf8) == "new\n")
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: layer + "/link") == "/etc/kept")

            // The same layer again, here unchecked: the same digest, nothing added, no scratch left.
            let again = try await store.importLayer(blob, digest: nil)
            #expect(again.digest == digest && again.addedBytes == 0)
            #expect(try FileSystem.children(store.root) == [String(digest.prefix(20))])
        }
    }

    /// Hands `bytes` to `unpacker` as a download would: a first piece too
    /// short to tell the compression, then 64 KiB pieces.
    static func feed(_ bytes: [UInt8], to unpacker: LayerUnpacker, stoppingAfter limit: Int = .max) async throws {
        var offset = 0
        var size = 3
        while offset < min(bytes.count, limit) {
            let end = min(offset + size, bytes.count)
            try await unpacker.write(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
            size = 64 << 10
        }
    }

    @Test("a layer unpacked as its bytes arrive (gzip, zstd or plain) is the layer its file makes; a blob stored before is not fetched again")
    func streamedLayer() async throws {
        try await Self.withScratch { scratch in
            _ = try await Self.makeLayer(in: scratch)
            // Some size, so the stream takes several pieces; a hard link, counted once.
            try await HostCommand.run(["sh", "-c", "head -c 300000 /dev/urandom > \"$1\"/filler && ln \"$1\"/filler \"$1\"/filler-too", "sh", scratch + "/layer-src"])
            let plain = scratch + "/layer.tar"
            try await HostCommand.run(["tar", "--create", "--numeric-owner", "--file", plain, "--directory", scratch + "/layer-src", "."])
            try await HostCommand.run(["sh", "-c", "gzip -c \"$1\" > \"$1\".gz && zstd -q -c \"$1\" > \"$1\".zst", "sh", plain])
            let store = LayerStore(root: scratch + "/layers")
            var layers: [String] = []
            for name in [plain + ".gz", plain + ".zst", plain] {
                let bytes = try Descriptor.readFile(name, limit: 4 << 20)
                let digest = try await Self.sha256(name)
                let (layer, added) = try await store.importLayer(blobDigest: digest) { try await Self.feed(bytes, to: $0) }
                #expect(layer == (try OCILayer.layerDigest(blob: digest)), "named by its blob's digest")
                let path = store.path(layer)
                #expect(added == Int64(try await HostCommand.run(["du", "-s", "-B1", path]).prefix { $0.isNumber }), "its bytes as du counts them")
                #expect(added > 300_000 && added < 600_000)
                var st = stat()
                #expect(lstat(path + "/etc/kept", &st) == 0 && st.st_uid == 1000 && st.st_mode & 0o7777 == 0o640, "\(name)")
                #expect(lstat(path + "/gone", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0, "the whiteout is a 0/0 device")
                #expect(!FileSystem.exists(path + "/.wh.gone") && !FileSystem.exists(path + "/opaque/.wh..wh..opq"))
                #expect(try Descriptor.readFile(path + "/filler", limit: 1 << 20) == Descriptor.readFile(scratch + "/layer-src/filler", limit: 1 << 20))

                // The same blob again, streamed or from its file: known by its digest, not fetched or unpacked.
                let again = try await store.importLayer(blobDigest: digest) { _ in Issue.record("a stored blob was fetched again") }
                #expect(again == (layer, 0))
                #expect(try await store.importLayer(name, digest: digest) == (layer, 0))
                layers.append(layer)
            }
            #expect(Set(layers).count == 3, "three blobs, three layers")
            #expect(try FileSystem.children(store.root).sorted() == layers.map { String($0.prefix(20)) }.sorted(), "no scratch left")
        }
    }

    @Test("a stream that breaks off, or whose bytes are no layer, stores nothing and leaves no tar running")
    func brokenStreams() async throws {
        try await Self.withScratch { scratch in
            let blob = try await Self.makeLayer(in: scratch)
            try await HostCommand.run(["sh", "-c", "head -c 2000000 /dev/urandom > \"$1\"/filler", "sh", scratch + "/layer-src"])
            try await HostCommand.run(["tar", "--create", "--gzip", "--numeric-owner", "--file", blob, "--directory", scratch + "/layer-src", "."])
            let bytes = try Descriptor.readFile(blob, limit: 8 << 20)
            let store = LayerStore(root: scratch + "/layers")

            // The download fails half way (a refused digest is such a failure too).
            struct Cut: Error {}
            await #expect(throws: Cut.self) {
                _ = try await store.importLayer(blobDigest: try await Self.sha256(blob)) { unpacker in
                    try await Self.feed(bytes, to: unpacker, stoppingAfter: bytes.count / 2)
                    #expect(try await !Self.processes(naming: store.root).isEmpty, "tar runs while the stream is open (the probe's control)")
                    throw Cut()
                }
            }
            #expect(try FileSystem.children(store.root).isEmpty, "nothing stored, no scratch left")
            #expect(try await Self.processes(naming: store.root).isEmpty, "tar was stopped")

            // Bytes that are no archive: tar's complaint, once they have all arrived.
            let noise = Array("hello, this is no archive, just some words\n".utf8)
            await #expect(throws: SproutError.self) {
                _ = try await store.importLayer(blobDigest: "sha256:" + String(repeating: "1", count: 64)) { try await Self.feed(noise, to: $0) }
            }
            // A corrupt gzip stream: tar gives up part way and the rest is still taken (the digest check must see it all).
            var corrupt = bytes
            corrupt[corrupt.count / 3] ^= 0xFF
            let delivered = Locked(0)
            await #expect(throws: SproutError.self) {
                _ = try await store.importLayer(blobDigest: "sha256:" + String(repeating: "2", count: 64)) { unpacker in
                    try await Self.feed(corrupt, to: unpacker)
                    delivered.withLock { $0 = corrupt.count }
                }
            }
            #expect(delivered.current == corrupt.count, "every byte was taken")
            #expect(try FileSystem.children(store.root).isEmpty, "nothing stored, no scratch left")
            #expect(try await Self.processes(naming: store.root).isEmpty)
        }
    }

    /// Processes whose command line names `path` (the store's `tar`, which unpacks into it).
    static func processes(naming path: String) async throws -> [String] {
        let out = try await HostCommand.capture(["pgrep", "-f", "--", path])
        return out.stdout.split(separator: "\n").map(String.init)
    }

    @Test("a layer whose digest does not match, that is not a tar, or whose member climbs out is refused, leaving nothing")
    func badLayers() async throws {
        try await Self.withScratch { scratch in
            let blob = try await Self.makeLayer(in: scratch)
            let store = LayerStore(root: scratch + "/layers")
            let wrong = "sha256:" + String(repeating: "0", count: 64)
            await #expect(throws: SproutError(.malformed, "blob \(wrong) does not match its digest (its content is \(try await Self.sha256(blob)))")) {
                _ = try await store.importLayer(blob, digest: wrong)
            }
            try Self.write(scratch + "/not-a-tar", "hello, this is no archive\n")
            await #expect(throws: SproutError.self) { _ = try await store.importLayer(scratch + "/not-a-tar", digest: nil) }
            // A member named ../escaped (GNU tar will not write one; Python's tarfile will).
            let climbing = scratch + "/climbing.tar"
            try await HostCommand.run(["python3", "-c", """
                import io, sys, tarfile
                with tarfile.open(sys.argv[1], "w") as t:
                    data = b"out\\n"
                    info = tarfile.TarInfo("../escaped"); info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
                """, climbing])
            await #expect(throws: SproutError.self) { _ = try await store.importLayer(climbing, digest: nil) }
            #expect(!FileSystem.exists(scratch + "/escaped") && !FileSystem.exists(store.root + "/escaped"))
            // A hard link to a file outside, and a write through a symlink the archive made to a folder outside.
            try FileSystem.makeDirectories(scratch + "/outside")
            try Self.write(scratch + "/secret", "secret\n")
            let linking = scratch + "/linking.tar"
            try await HostCommand.run(["python3", "-c", """
                import io, sys, tarfile
                with tarfile.open(sys.argv[1], "w") as t:
                    hard = tarfile.TarInfo("hard"); hard.type = tarfile.LNKTYPE; hard.linkname = sys.argv[2] + "/secret"
                    t.addfile(hard)
                    link = tarfile.TarInfo("out"); link.type = tarfile.SYMTYPE; link.linkname = sys.argv[2] + "/outside"
                    t.addfile(link)
                    data = b"through the link\\n"
                    info = tarfile.TarInfo("out/written"); info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
                """, linking, scratch])
            await #expect(throws: SproutError.self) { _ = try await store.importLayer(linking, digest: nil) }
            var st = stat()
            #expect(lstat(scratch + "/secret", &st) == 0 && st.st_nlink == 1, "no link to the outside file was made")
            #expect(try FileSystem.children(scratch + "/outside").isEmpty, "nothing was written through the link")
            #expect(try FileSystem.children(store.root).isEmpty, "nothing stored, no scratch left")
        }
    }

    /// An OCI layout with one image (or an index of platforms) and its blobs.
    static func makeLayout(in scratch: String, layer: String, platforms: Bool = false, corruptConfig: Bool = false) async throws -> String {
        let layout = scratch + "/layout"
        try FileSystem.makeDirectories(layout + "/blobs/sha256")
        func add(_ text: String) async throws -> (digest: String, size: Int) {
            let temp = layout + "/blob.tmp"
            try write(temp, text)
            let digest = try await sha256(temp)
            rename(temp, layout + "/blobs/sha256/" + digest.dropFirst(7))
            return (digest, text.utf8.count)
        }
        let layerDigest = try await sha256(layer)
        try await HostCommand.run(["cp", layer, layout + "/blobs/sha256/" + layerDigest.dropFirst(7)])
        let config = try await add("""
            {"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin","GREETING=hi there"],"WorkingDir":"/srv",\
            "User":"1000:1000","Entrypoint":["/bin/server"],"Cmd":["--port","8080"],"ExposedPorts":{"8080/tcp":{},"53/udp":{}}},\
            "rootfs":{"type":"layers","diff_ids":[]}}
            """)
        if corruptConfig { try write(layout + "/blobs/sha256/" + config.digest.dropFirst(7), "{}") }
        let manifest = try await add("""
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",\
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(config.digest)","size":\(config.size)},\
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\(layerDigest)","size":1}]}
            """)
        var top = "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"\(manifest.digest)\",\"size\":\(manifest.size)"
        if platforms {
            let other = try await add("{\"schemaVersion\":2,\"config\":{\"digest\":\"\(config.digest)\"},\"layers\":[]}")
            let index = try await add("""
                {"schemaVersion":2,"manifests":[\
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(other.digest)","size":\(other.size),"platform":{"os":"linux","architecture":"arm64"}},\
                {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(manifest.digest)","size":\(manifest.size),"platform":{"os":"linux","architecture":"amd64"}}]}
                """)
            top = "{\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"digest\":\"\(index.digest)\",\"size\":\(index.size)"
        }
        try write(layout + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}")
        try write(layout + "/index.json", """
            {"schemaVersion":2,"manifests":[\(top),"annotations":{"org.opencontainers.image.ref.name":"demo:1"}}]}
            """)
        return layout
    }

    @Test("an OCI layout: the named image's config (env, workdir, user, entrypoint and command, TCP ports) and layers; linux/amd64 from an index")
    func layout() async throws {
        try await Self.withScratch { scratch in
            let layer = try await Self.makeLayer(in: scratch)
            let layout = try await Self.makeLayout(in: scratch, layer: layer)
            let image = try OCIImageArchive.read(directory: layout)
            #expect(image.config.env == ["PATH=/usr/bin:/bin", "GREETING=hi there"])
            #expect(image.config.workingDir == "/srv" && image.config.user == "1000:1000")
            #expect(image.config.command == ["/bin/server", "--port", "8080"])
            #expect(image.config.exposedPorts == [8080])
            #expect(image.layers.map(\.digest) == [try await Self.sha256(layer)])
            #expect(image.references == ["demo:1"])
            #expect(try OCIImageArchive.read(directory: layout, reference: "demo:1").layers.count == 1)
            #expect(throws: SproutError(.notFound, "the archive has no image 'other'; it has demo:1")) {
                try OCIImageArchive.read(directory: layout, reference: "other")
            }
            try FileSystem.removeTree(layout)
            let platforms = try await Self.makeLayout(in: scratch, layer: layer, platforms: true)
            #expect(try OCIImageArchive.read(directory: platforms).layers.count == 1, "amd64's manifest, not arm64's (no layers)")
            try FileSystem.removeTree(platforms)
            let corrupt = try await Self.makeLayout(in: scratch, layer: layer, corruptConfig: true)
            #expect(throws: SproutError.self) { try OCIImageArchive.read(directory: corrupt) }
        }
    }

    @Test("docker save: manifest.json's image, its layers checked against the config's diff ids; a path that climbs out is refused")
    func dockerSave() async throws {
        try await Self.withScratch { scratch in
            let archive = scratch + "/saved"
            try FileSystem.makeDirectories(archive + "/abc")
            try Self.write(scratch + "/saved-src/hello", "hello\n")
            try await HostCommand.run(["tar", "--create", "--file", archive + "/abc/layer.tar", "--directory", scratch + "/saved-src", "."])
            let diffID = try await Self.sha256(archive + "/abc/layer.tar")
            try Self.write(archive + "/cfg.json", """
                {"config":{"Env":["A=1"],"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["\(diffID)"]}}
                """)
            try Self.write(archive + "/manifest.json", """
                [{"Config":"cfg.json","RepoTags":["demo:latest"],"Layers":["abc/layer.tar"]}]
                """)
            let image = try OCIImageArchive.read(directory: archive, reference: "demo")
            #expect(image.config.env == ["A=1"] && image.config.command == ["sh"] && image.config.user == nil)
            #expect(image.layers == [OCIImageArchive.Layer(path: archive + "/abc/layer.tar", digest: diffID)])
            try Self.write(archive + "/manifest.json", """
                [{"Config":"../cfg.json","RepoTags":["demo:latest"],"Layers":["abc/layer.tar"]}]
                """)
            #expect(throws: SproutError(.malformed, "the archive names a file outside itself: ../cfg.json")) {
                try OCIImageArchive.read(directory: archive)
            }
            #expect(throws: SproutError(.invalidArgument, "not an image archive: it has neither index.json (OCI) nor manifest.json (docker save)")) {
                try OCIImageArchive.read(directory: scratch + "/layers-none")
            }
        }
    }
}

extension OCIImageTests {
    @Test("an image archive imports its layers and config; a second import of the same image stores nothing")
    func importArchive() async throws {
        try await Self.withScratch { scratch in
            let layer = try await Self.makeLayer(in: scratch)
            let layout = try await Self.makeLayout(in: scratch, layer: layer)
            let archive = scratch + "/image.tar"
            try await HostCommand.run(["tar", "--create", "--file", archive, "--directory", layout, "."])
            let store = LayerStore(root: scratch + "/layers")
            let first = try await store.importImage(archive: archive, reference: "demo:1")
            #expect(first.layers.count == 1 && first.addedBytes > 0 && store.contains(first.layers[0]))
            #expect(first.config.command == ["/bin/server", "--port", "8080"])
            let second = try await store.importImage(archive: archive)
            #expect(second.layers == first.layers && second.addedBytes == 0)
            #expect(try FileSystem.children(store.root) == [String(first.layers[0].prefix(20))], "no scratch left")
            await #expect(throws: SproutError.self) { _ = try await store.importImage(archive: layer) }
            #expect(try FileSystem.children(store.root).count == 1, "a failed import leaves nothing")
        }
    }
}
