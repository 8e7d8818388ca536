import SproutAPI
import SproutConfig
import SproutCore
import Testing

@Suite("sprout.toml")
struct EnvConfigTests {
    @Test("the full format parses, comments and multi-line arrays included")
    func full() throws {
        let config = try EnvConfig.parse("""
            # a comment
            id = "my-app"   # trailing comment
            [template]
            from = 'debian'
            [build]
            files = "files"
            run = [
              "apt-get update",   # one
              "apt-get install -y python3 \\"quoted\\"",
            ]
            start = "python3 -m http.server 8000"
            ready = "port:8000"
            cpu = 1.5
            memory_mb = 1024
            """)
        #expect(config == EnvConfig(
            id: "my-app", from: "debian", files: "files",
            run: ["apt-get update", "apt-get install -y python3 \"quoted\""],
            start: "python3 -m http.server 8000", ready: .port(8000), cpu: 1.5, memoryMB: 1024))
    }

    @Test("[sandbox] volumes: NAME:/path and NAME:/path:ro, in order")
    func sandboxVolumes() throws {
        let config = try EnvConfig.parse("id = \"a\"\n[sandbox]\nvolumes = [\"cache:/root/.cache\", \"data:/data:ro\"]")
        #expect(config.volumes == [API.VolumeMount(volume: "cache", path: "/root/.cache"), API.VolumeMount(volume: "data", path: "/data", readOnly: true)])
        #expect(config.volumes.map(\.text) == ["cache:/root/.cache", "data:/data:ro"])
        #expect(try EnvConfig.parse("id = \"a\"").volumes.isEmpty)
    }

    @Test("no [template] means the parent is empty; the template init writes parses back")
    func defaults() throws {
        #expect(try EnvConfig.parse(#"id = "x""#).from == "empty")
        let written = try EnvConfig.parse(EnvConfig.template(id: "demo", from: "debian"))
        #expect(written.id == "demo" && written.from == "debian" && written.run.isEmpty)
    }

    @Test("errors name the file, the line and the key", arguments: [
        ("id = \"a\"\n[build]\nrnu = [\"x\"]", "sprout.toml:3: unknown key 'build.rnu'"),
        ("id = \"a\"\n[build]\ncpu = \"two\"", "sprout.toml:3: 'build.cpu' must be a number, got a string"),
        ("id = \"a\"\n[build]\nrun = \"make\"", "sprout.toml:3: 'build.run' must be an array of strings, got a string"),
        ("[template]\nfrom = \"debian\"", "sprout.toml: missing 'id'"),
        ("id = \"a\"\nid = \"b\"", "sprout.toml:2: 'id' is defined twice"),
        ("id = \"a\"\n[build]\nstart = \"x\n", "sprout.toml:3: unterminated string"),
        ("id = a", "sprout.toml:1: unknown value 'a' (strings need quotes)"),
        ("id = \"Has Spaces\"", "sprout.toml:1: 'id' must be 1-64 characters"),
        ("id = \"a\"\n[build]\nready = \"port:99999\"\nstart = \"x\"", "sprout.toml:3: 'build.ready' port must be 1-65535"),
        ("id = \"a\"\n[sandbox]\nvolumes = \"data:/data\"", "sprout.toml:3: 'sandbox.volumes' must be an array"),
        ("id = \"a\"\n\n[sandbox]\nvolumes = [\"data\"]", "sprout.toml:4: a volume mount is NAME:/path or NAME:/path:ro, got 'data'"),
        ("id = \"a\"\n[sandbox]\nvolumes = [\"data:rel\"]", "sprout.toml:3: a volume mount is NAME:/path"),
        ("id = \"a\"\n[sandbox]\nvolumes = [1]", "sprout.toml:3: every 'sandbox.volumes' entry must be a string"),
    ])
    func errors(text: String, expected: String) {
        do {
            _ = try EnvConfig.parse(text)
            Issue.record("parsed: \(text)")
        } catch let error as SproutError {
            #expect(error.message.hasPrefix(expected), "\(error.message)")
            #expect(error.code == .invalidArgument)
        } catch {
            Issue.record("\(error)")
        }
    }
}
