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
