import Foundation
import SproutAPI
import SproutClient
import SproutCore
import Testing

extension Integration {
    @Suite("volumes")
    struct VolumeTests {
        @Test("volumes on gVisor and runc: shared between sandboxes, read-only enforced, the size is ENOSPC inside and bounds the host's disk, files without a sandbox stay inside, other teams see nothing, data outlives every sandbox and is not frozen into envs",
              arguments: ["gvisor", "runc"])
        func sharedLimitedConfined(runtime: String) async throws {
            let data = try await ServerHarness.with(runtime: runtime) { (server: ServerHarness) async throws in
                let api = server.client
                let volume = try await api.createVolume(API.CreateVolume(name: "data", sizeMB: 32))
                #expect(volume.sizeMB == 32 && volume.mountedBy.isEmpty)
                let writer = try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "data", path: "/data")]))
                let reader = try await api.createSandbox(API.CreateSandbox(
                    env: "empty", volumes: [API.VolumeMount(volume: volume.id, path: "/mnt/shared/", readOnly: true)]))
                #expect(reader.volumes == [API.VolumeMount(volume: "data", path: "/mnt/shared", readOnly: true)])

                // One file system: a write in one is read in the other and through the API.
                #expect(try await api.run(writer.id, API.Exec(shell: "echo from-writer > /data/a.txt")).exit.code == 0)
                #expect(try await api.run(reader.id, API.Exec(shell: "cat /mnt/shared/a.txt")).stdoutText == "from-writer\n")
                #expect(String(decoding: try await api.volumeRead("data", path: "/a.txt"), as: UTF8.self) == "from-writer\n")
                try await api.volumeWrite("data", path: "/dir/b.txt", bytes: Array("from-api\n".utf8))
                #expect(try await api.run(writer.id, API.Exec(shell: "cat /data/dir/b.txt")).stdoutText == "from-api\n")
                #expect(try await api.volumeList("data", path: "/").map(\.name) == ["a.txt", "dir"])

                // Read-only is enforced by the mount.
                let refused = try await api.run(reader.id, API.Exec(shell: "echo x > /mnt/shared/c.txt"))
                #expect(refused.exit.code != 0 && refused.stderrText.contains("Read-only"), "\(refused.stderrText)")

                // The size: ENOSPC inside at the limit; the host's disk holds no more than the size.
                let fill = try await api.run(writer.id, API.Exec(shell: "dd if=/dev/zero of=/data/fill bs=1M count=64"))
                #expect(fill.exit.code != 0 && fill.stderrText.contains("No space left on device"), "\(fill.stderrText)")
                let image = server.data + "/volumes/\(volume.id).ext4"
                var st = stat()
                #expect(stat(image, &st) == 0 && Int64(st.st_blocks) * 512 <= 33 << 20, "the image holds \(Int64(st.st_blocks) * 512) bytes")
                #expect(try await api.run(writer.id, API.Exec(shell: "rm /data/fill && echo ok > /data/after-full.txt")).exit.code == 0)
                let used = try await api.volume("data").usedBytes ?? 0
                #expect(used > 0)
                #expect(try await api.metrics().contains("sprout_volume_used_bytes{volume=\"\(volume.id)\",name=\"data\",team=\"default\"}"))

                // Paths of the files API stay inside the volume: `..` and symlinks made in a sandbox included.
                #expect(try await api.run(writer.id, API.Exec(shell: "ln -s / /data/root-link && ln -s ../../../../etc /data/up-link")).exit.code == 0)
                for path in ["/root-link/etc/passwd", "/up-link/passwd", "/dir/../../etc/passwd"] {
                    await #expect(throws: SproutError.self, "\(path) reached outside") { _ = try await api.volumeRead("data", path: path) }
                }
                await #expect(throws: SproutError.self) { try await api.volumeWrite("data", path: "/../../escaped.txt", bytes: [1]) }
                try await api.volumeWrite("data", path: "/root-link/tmp/through-link.txt", bytes: Array("inside too\n".utf8))
                #expect(try await api.run(writer.id, API.Exec(shell: "cat /data/tmp/through-link.txt")).stdoutText == "inside too\n")
                #expect(!FileManager.default.fileExists(atPath: "/tmp/through-link.txt"))
                // Removing a symlink removes the link, never what it points to.
                try await api.volumeRemove("data", path: "/root-link")
                #expect(FileManager.default.fileExists(atPath: "/etc/passwd"))

                // Another team: not found, however it is named.
                let other = server.client(key: try await api.createKey(API.CreateKey(name: "other", team: "other")).secret)
                await #expect(throws: SproutError.self) { _ = try await other.volume("data") }
                await #expect(throws: SproutError.self) { _ = try await other.volumeRead("data", path: "/a.txt") }
                await #expect(throws: SproutError.self) {
                    _ = try await other.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: volume.id, path: "/data")]))
                }
                #expect(try await other.volumes().isEmpty)

                // Bad mounts are refused before anything is made.
                for bad in [API.VolumeMount(volume: "data", path: "relative"), API.VolumeMount(volume: "data", path: "/"),
                            API.VolumeMount(volume: "data", path: "/.sprout/x"), API.VolumeMount(volume: "nope", path: "/data")] {
                    await #expect(throws: SproutError.self, "\(bad)") { _ = try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [bad])) }
                }

                // Deleting a mounted volume is refused; the data outlives every sandbox; envs do not take it.
                await #expect(throws: SproutError.self) { try await api.deleteVolume("data") }
                let env = try await api.snapshot(writer.id, name: "with-volume")
                _ = try await api.killSandbox(writer.id)
                _ = try await api.killSandbox(reader.id)
                let later = try await api.createSandbox(API.CreateSandbox(env: env.id, volumes: [API.VolumeMount(volume: "data", path: "/data")]))
                #expect(try await api.run(later.id, API.Exec(shell: "cat /data/a.txt /data/after-full.txt")).stdoutText == "from-writer\nok\n")
                let bare = try await api.createSandbox(API.CreateSandbox(env: env.id))
                #expect(try await api.run(bare.id, API.Exec(shell: "ls -A /data 2>/dev/null | wc -l")).stdoutText.trimmedLines == "0")
                try await api.deleteVolume("data", force: true)
                #expect(try await api.sandbox(later.id).state == .killed)
                #expect(try await api.volumes().isEmpty)
                #expect(!FileManager.default.fileExists(atPath: image))
                #expect(!(try await api.metrics().contains(volume.id)), "a deleted volume's series goes")
                return server.data
            }
            await expectNoLeftovers(data)
        }

        @Test("a volume keeps a paused sandbox's open file, is shared with its live forks, and survives kill -9 of the server")
        func pauseForkAndCrash() async throws {
            let data = try await ServerHarness.with { (server: ServerHarness) async throws in
                let api = server.client
                _ = try await api.createVolume(API.CreateVolume(name: "work", sizeMB: 64))
                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "work", path: "/work")]))
                // A process holds a file on the volume open across the pause.
                _ = try await api.run(sandbox.id, API.Exec(shell: "sh -c 'exec 3>>/work/log; echo one >&3; while [ ! -e /work/go ]; do sleep 0.1; done; echo two >&3' &"))
                try await eventually { (try? await api.volumeRead("work", path: "/log")) == Array("one\n".utf8) }
                _ = try await api.pause(sandbox.id)
                _ = try await api.resume(sandbox.id)
                let forks = try await api.fork(sandbox.id, count: 1)
                try await api.volumeWrite("work", path: "/go", bytes: [])
                // Both the resumed process and its fork's copy write through their open descriptors.
                try await eventually { String(decoding: (try? await api.volumeRead("work", path: "/log")) ?? [], as: UTF8.self) == "one\ntwo\ntwo\n" }
                #expect(try await api.run(forks[0].id, API.Exec(shell: "echo fork > /work/from-fork")).exit.code == 0)
                #expect(try await api.run(sandbox.id, API.Exec(shell: "cat /work/from-fork")).stdoutText == "fork\n")

                // kill -9: what was written is there after the restart, through the API and in a new sandbox.
                server.crash()
                try server.start()
                let again = server.client
                #expect(String(decoding: try await again.volumeRead("work", path: "/from-fork"), as: UTF8.self) == "fork\n")
                let after = try await again.createSandbox(API.CreateSandbox(env: "empty", volumes: [API.VolumeMount(volume: "work", path: "/w")]))
                #expect(try await again.run(after.id, API.Exec(shell: "cat /w/log")).stdoutText == "one\ntwo\ntwo\n")
                return server.data
            }
            await expectNoLeftovers(data)
        }

        @Test("an env's [sandbox] volumes mount when a create names none; a sandbox of a warm env with volumes boots and runs start (gVisor and runc)",
              arguments: ["gvisor", "runc"])
        func envDefaults(runtime: String) async throws {
            let data = try await ServerHarness.with(runtime: runtime) { (server: ServerHarness) async throws in
                let api = server.client
                _ = try await api.createVolume(API.CreateVolume(name: "site", sizeMB: 32))
                _ = try await api.volumeWrite("site", path: "/index.html", bytes: Array("from the volume\n".utf8))
                let repo = server.data + "/repo"
                try FileManager.default.createDirectory(atPath: repo, withIntermediateDirectories: true)
                let config = """
                    id = "web"
                    [template]
                    from = "empty"
                    [build]
                    start = "mkdir -p /srv && exec httpd -f -p 8080 -h /srv"
                    ready = "port:8080"
                    [sandbox]
                    volumes = ["site:/srv"]
                    """
                try config.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                let cli = CLI(server: server)
                let pushed = try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait"])
                #expect(pushed.status == 0, "\(pushed.stdout) \(pushed.stderr)")
                let env = try await api.env("web")
                #expect(env.volumes == [API.VolumeMount(volume: "site", path: "/srv")] && env.start != nil)
                #expect(env.warm == (runtime == "gvisor"))

                // Named by the env: mounted, and start (booted, not restored) serves it.
                let mounted = try await api.createSandbox(API.CreateSandbox(env: "web"))
                #expect(mounted.volumes == [API.VolumeMount(volume: "site", path: "/srv", readOnly: false)])
                let (status, body) = try await api.preview(mounted.id, port: 8080, path: "/index.html")
                #expect(status == 200 && body == Array("from the volume\n".utf8))
                #expect(try await api.processes(mounted.id).contains { $0.tag == "start" && $0.exit == nil })
                // No volumes asked for: none; start runs all the same (from the memory image on gVisor).
                let bare = try await api.createSandbox(API.CreateSandbox(env: "web", volumes: []))
                #expect(bare.volumes == nil)
                #expect(try await api.preview(bare.id, port: 8080, path: "/index.html").0 == 404)
                #expect(try await api.processes(bare.id).contains { $0.tag == "start" && $0.exit == nil })
                // A pause that keeps only files ends every process; the resume boots and runs start again.
                _ = try await api.pause(mounted.id, memory: false)
                _ = try await api.resume(mounted.id)
                #expect(try await api.preview(mounted.id, port: 8080, path: "/index.html").1 == Array("from the volume\n".utf8))
                // A snapshot keeps its parent's start (not its default volumes): its sandboxes boot and run it.
                let snapshot = try await api.snapshot(bare.id, name: "web-snapshot")
                #expect(snapshot.start == env.start && snapshot.volumes == nil)
                let fromSnapshot = try await api.createSandbox(API.CreateSandbox(env: snapshot.id))
                #expect(fromSnapshot.volumes == nil)
                #expect(try await api.processes(fromSnapshot.id).contains { $0.tag == "start" && $0.exit == nil })
                _ = try await api.killSandbox(fromSnapshot.id)

                // A push naming a volume the team lacks is refused and changes nothing.
                try config.replacingOccurrences(of: "site:/srv", with: "nope:/srv").write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                let refused = try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait"])
                #expect(refused.status != 0 && refused.stderr.contains("no volume named 'nope'"), "\(refused.stderr)")
                #expect(try await api.env("web").id == env.id)

                // The volume gone: a create that would mount it says which env named it.
                for sandbox in [mounted, bare] { _ = try await api.killSandbox(sandbox.id) }
                try await api.deleteVolume("site")
                do {
                    _ = try await api.createSandbox(API.CreateSandbox(env: "web"))
                    Issue.record("created a sandbox whose default volume is gone")
                } catch let error as SproutError {
                    #expect(error.code == .notFound && error.message.contains("a volume \(env.id) mounts by default"), "\(error.message)")
                }
                return server.data
            }
            await expectNoLeftovers(data)
        }
    }
}
