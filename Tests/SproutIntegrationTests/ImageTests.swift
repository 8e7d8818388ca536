import Foundation
import Glibc
import SproutAPI
import SproutClient
import SproutCore
import SproutHost
import SproutRegistry
import SproutSystem
import Testing

extension Integration {
    /// Images as envs, against a real registry (`docker-registry`) the test
    /// starts and pushes to with skopeo, and archives skopeo writes.
    @Suite("OCI images")
    struct ImageTests {
        /// The app image: a busybox root, then a layer that deletes a file
        /// (whiteout), replaces a directory (opaque) and adds the site.
        static var appConfig: [String: Any] { [
            "Env": ["PATH=/bin", "GREETING=hello from the image"], "WorkingDir": "/srv/app", "User": "app",
            "ExposedPorts": ["8080/tcp": [String: String]()], "Cmd": ["httpd", "-f", "-p", "8080", "-h", "/srv/app"],
        ] }
        static var appLayers: [TestImage.Layer] { [
            TestImage.Layer { root in
                try await TestImage.busyboxRoot(root)
                try FileSystem.writeAtomically(root + "/etc/gone.txt", "gone\n", mode: 0o644)
                try FileSystem.makeDirectories(root + "/opaque")
                try FileSystem.writeAtomically(root + "/opaque/old", "old\n", mode: 0o644)
            },
            TestImage.Layer { root in
                try FileSystem.makeDirectories(root + "/etc")
                try FileSystem.makeDirectories(root + "/opaque")
                try FileSystem.makeDirectories(root + "/srv/app")
                try FileSystem.writeAtomically(root + "/etc/.wh.gone.txt", "", mode: 0o644)
                try FileSystem.writeAtomically(root + "/opaque/.wh..wh..opq", "", mode: 0o644)
                try FileSystem.writeAtomically(root + "/opaque/new", "new\n", mode: 0o644)
                try FileSystem.writeAtomically(root + "/srv/app/hello.txt", "hello\n", mode: 0o644)
                chown(root + "/srv/app", 1000, 1000)
            },
        ] }

        @Test("from = an image in a private registry: pulled with its login, layers and whiteouts, Env/WorkingDir/User/Cmd honoured; a second env pulls nothing; bad logins and corrupt blobs refused")
        func registryPull() async throws {
            let registry = try await TestRegistry()
            defer { registry.stop() }
            let layout = registry.directory + "/layout"
            try await TestImage.write(layout: layout, tag: "v1", config: Self.appConfig, layers: Self.appLayers)
            try await registry.push(layout: layout, tag: "v1", as: "sprout-test/app")
            let reference = "\(registry.host)/sprout-test/app:v1"

            // Positive control for the refusals below: the registry wants its login.
            let anonymous = try await HostCommand.capture(["skopeo", "inspect", "--tls-verify=false", "docker://\(reference)"])
            #expect(anonymous.status != 0 && anonymous.stderr.contains("unauthorized"), "\(anonymous.stderr)")

            let auth = try registry.authFile()
            try await ServerHarness.with(extraArgs: ["--insecure-registry", registry.host, "--registry-auth", auth]) { server in
                let cli = CLI(server: server)
                let repo = server.data + "/repo"
                try FileSystem.makeDirectories(repo)
                func push(_ id: String, from: String, run: String) async throws -> CLI.Result {
                    try """
                        id = "\(id)"
                        [template]
                        from = "\(from)"
                        [build]
                        run = ["\(run)"]
                        """.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                    return try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait", "--json"])
                }
                let first = try await push("web", from: reference, run: "id -un > built-by.txt")
                #expect(first.status == 0, "\(first.stderr) \(first.stdout)")
                let build = try JSONDecoder().decode(API.Build.self, from: Data(first.stdout.utf8))
                #expect(build.status == "succeeded", "\(build)")
                let api = server.client
                let env = try await api.env(build.envID)
                let imageEnv = try await api.env(try #require(env.parent))
                #expect(imageEnv.base == "scratch" && imageEnv.layers.count == 2 && imageEnv.name == "image-app-v1")
                #expect(imageEnv.image?.hasPrefix(reference + "@sha256:") == true)
                #expect(imageEnv.process == API.ProcessDefaults(env: ["PATH": "/bin", "GREETING": "hello from the image"],
                                                                workdir: "/srv/app", user: "app"))
                #expect(imageEnv.start == "httpd -f -p 8080 -h /srv/app")
                // The env on it keeps its process defaults and runs the image's server.
                #expect(env.process == imageEnv.process && env.start == imageEnv.start)

                let sandbox = try await api.createSandbox(API.CreateSandbox(env: "web"))
                let out = try await api.run(sandbox.id, API.Exec(shell: """
                    id -un; pwd; echo "$GREETING"; cat built-by.txt; ls /opaque; cat /etc/gone.txt 2>&1; wget -qO- http://127.0.0.1:8080/hello.txt
                    """))
                #expect(out.stdoutText == "app\n/srv/app\nhello from the image\napp\nnew\ncat: can't open '/etc/gone.txt': No such file or directory\nhello\n",
                        "\(out.stdoutText) \(out.stderrText)")
                // A request's own user, cwd and variables win.
                let own = try await api.run(sandbox.id, API.Exec(shell: "id -un; pwd; echo $GREETING", cwd: "/tmp", env: ["GREETING": "mine"], user: "root"))
                #expect(own.stdoutText == "root\n/tmp\nmine\n")
                // The push had no files: /code, which the image lacks, was made without a sandbox, as `mkdir -p` would.
                let code = try await api.run(sandbox.id, API.Exec(shell: "stat -c '%U %a %F' /code"))
                #expect(code.stdoutText == "root 755 directory\n", "\(code.stdoutText) \(code.stderrText)")
                let firstLog = try await cli.run(["env", "logs", build.id]).stdout
                #expect(firstLog.contains("step files: no files (makes /code)"), "\(firstLog)")

                // Another env on the same image: its env is there, no blob is fetched (the registry's own log says).
                let blobGets = { try registry.requests(matching: "GET /v2/sprout-test/app/blobs/") }
                let fetched = try blobGets()
                #expect(fetched == 3, "config and two layers")
                let second = try await push("web2", from: reference, run: "true")
                let build2 = try JSONDecoder().decode(API.Build.self, from: Data(second.stdout.utf8))
                #expect(build2.status == "succeeded")
                let log = try await cli.run(["env", "logs", build2.id])
                #expect(!log.stdout.contains("pull"), "\(log.stdout)")
                #expect(try await api.env(build2.envID).parent == imageEnv.id)
                #expect(try blobGets() == fetched + 1, "only the config blob, read with the manifest")
                // On an env that has /code, a push with no files adds nothing for them.
                let third = try JSONDecoder().decode(API.Build.self, from: Data(try await push("web3", from: "web", run: "true").stdout.utf8))
                #expect(third.status == "succeeded", "\(third)")
                #expect(try await cli.run(["env", "logs", third.id]).stdout.contains("step files: no files (/code is there)"))
                #expect(try await api.env(third.envID).layers.count == env.layers.count + 1, "web's layers and the run step's")

                // The stock E2B SDK's template builder from the same image, with a start command and wait_for_port.
                let sdk = try await CLI.runProcess([LongIntegration.E2BTests.python, "-c", """
                    from e2b import Sandbox, Template, wait_for_port
                    t = Template().from_image("\(reference)").run_cmd("echo from-sdk > sdk.txt").set_start_cmd("httpd -f -p 8081 -h /srv/app", wait_for_port(8081))
                    Template.build(t, "sdk-web")
                    s = Sandbox.create("sdk-web")
                    print(s.commands.run("cat sdk.txt; id -un; wget -qO- http://127.0.0.1:8081/hello.txt").stdout, end="")
                    s.kill()
                    """], env: ["PATH=/usr/bin:/bin", "HOME=/root", "E2B_API_URL=\(server.url)", "E2B_SANDBOX_URL=\(server.url)",
                                "E2B_API_KEY=\(server.adminKey)"])
                #expect(sdk.status == 0 && sdk.stdout == "from-sdk\napp\nhello\n", "\(sdk.stdout) \(sdk.stderr.suffix(3000))")

                // An image over the build's disk limit: refused before anything is fetched.
                let layout3 = registry.directory + "/layout3"
                try await TestImage.write(layout: layout3, tag: "v1", config: ["Env": ["PATH=/bin"]], layers: [
                    TestImage.Layer { root in
                        let out = try await HostCommand.capture(["sh", "-c", "head -c 18000000 /dev/urandom > \"$1\"", "sh", root + "/noise"],
                                                                timeout: .seconds(60))
                        #expect(out.status == 0)
                    },
                ])
                try await registry.push(layout: layout3, tag: "v1", as: "sprout-test/big")
                let before = try registry.requests(matching: "GET /v2/sprout-test/big/blobs/")
                try """
                    id = "big"
                    [template]
                    from = "\(registry.host)/sprout-test/big:v1"
                    [build]
                    disk_mb = 16
                    """.write(toFile: repo + "/sprout.toml", atomically: true, encoding: .utf8)
                let big = try await cli.run(["env", "push", "--file", repo + "/sprout.toml", "--wait", "--json"])
                let bigBuild = try JSONDecoder().decode(API.Build.self, from: Data(big.stdout.utf8))
                #expect(bigBuild.failedStep == "pull" && bigBuild.error?.contains("more than the build's disk limit of 16 MiB") == true, "\(bigBuild)")
                #expect(try registry.requests(matching: "GET /v2/sprout-test/big/blobs/") == before + 1, "only the config")

                // A registry that is down: a clear error at push time.
                let down = try await push("down", from: "127.0.0.1:9/sprout-test/app:v1", run: "true")
                #expect(down.status != 0 && down.stderr.contains("cannot reach registry 127.0.0.1:9"), "\(down.stderr)")

                // A corrupt blob in the registry: the pull fails naming the digest, no env appears.
                let layout2 = registry.directory + "/layout2"
                try await TestImage.write(layout: layout2, tag: "v2", config: ["Env": ["PATH=/bin"]], layers: [
                    TestImage.Layer { root in try FileSystem.writeAtomically(root + "/only-here", "\(Identifiers.random(length: 12))\n", mode: 0o644) },
                ])
                try await registry.push(layout: layout2, tag: "v2", as: "sprout-test/broken")
                let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: layout2 + "/index.json"))) as! [String: Any]
                let manifestDigest = ((manifest["manifests"] as! [[String: Any]])[0]["digest"] as! String).dropFirst(7)
                let manifestJSON = try JSONSerialization.jsonObject(
                    with: Data(contentsOf: URL(fileURLWithPath: layout2 + "/blobs/sha256/\(manifestDigest)"))) as! [String: Any]
                let layerDigest = ((manifestJSON["layers"] as! [[String: Any]])[0]["digest"] as! String).dropFirst(7)
                let stored = "\(registry.storage)/docker/registry/v2/blobs/sha256/\(layerDigest.prefix(2))/\(layerDigest)/data"
                var bytes = try Descriptor.readFile(stored, limit: 1 << 20)
                bytes[bytes.count / 2] ^= 0xFF
                try FileSystem.writeAtomically(stored, String(decoding: [], as: UTF8.self))
                try Data(bytes).write(to: URL(fileURLWithPath: stored))
                let broken = try await push("broken", from: "\(registry.host)/sprout-test/broken:v2", run: "true")
                #expect(broken.status != 0)
                let failed = try JSONDecoder().decode(API.Build.self, from: Data(broken.stdout.utf8))
                #expect(failed.failedStep == "pull" && failed.error?.contains("sha256:\(layerDigest) from \(registry.host) does not match its digest") == true,
                        "\(failed)")
                #expect(try await api.envs().allSatisfy { !$0.name.hasPrefix("image-broken") && $0.name != "broken" })

                // Unknown tags and malformed references are clear errors at push time.
                let missing = try await push("nope", from: "\(registry.host)/sprout-test/app:v9", run: "true")
                #expect(missing.status != 0 && missing.stderr.contains("has no image sprout-test/app:v9"), "\(missing.stderr)")
                let malformed = try await push("nope", from: "\(registry.host)/Sprout/App:v1", run: "true")
                #expect(malformed.status != 0 && malformed.stderr.contains("is not an image reference"), "\(malformed.stderr)")
                try await api.killSandbox(sandbox.id)
            }

            // The wrong login: refused with the registry's words, nothing made.
            let wrong = try registry.authFile(password: "not-it")
            try await ServerHarness.with(extraArgs: ["--insecure-registry", registry.host, "--registry-auth", wrong]) { server in
                try await Self.expectRefused(server, reference, saying: "refused access to sprout-test/app")
                #expect(try await server.client.envs().allSatisfy(\.builtin))
            }
        }

        @Test("a Dockerfile env: ARG and --build-arg, ENV, WORKDIR, COPY --chown, USER, CMD + EXPOSE as a warm start, multi-stage COPY --from; unchanged push builds nothing; bad Dockerfiles name the line")
        func dockerfile() async throws {
            try await ServerHarness.with { server in
                let context = server.data + "/ctx"
                try FileSystem.makeDirectories(context + "/site")
                try FileSystem.writeAtomically(context + "/site/index.html", "<h1>hi</h1>\n", mode: 0o644)
                try FileSystem.writeAtomically(context + "/app.py", "print('x')\n", mode: 0o755)
                try FileSystem.writeAtomically(context + "/Dockerfile", """
                    # comments and continuations as Docker reads them
                    FROM empty
                    ARG VERSION=1.0
                    ENV APP_HOME=/srv/app \\
                        MODE=prod
                    RUN echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group
                    WORKDIR $APP_HOME
                    COPY --chown=app:app site/ ./site/
                    COPY app.py main.py
                    LABEL org.example.version=$VERSION
                    RUN chown app:app /srv/app
                    USER app
                    RUN echo "$VERSION $MODE" > built.txt; id -un >> built.txt; pwd >> built.txt
                    EXPOSE 8080
                    CMD ["httpd", "-f", "-p", "8080", "-h", "/srv/app/site"]

                    """, mode: 0o644)
                let cli = CLI(server: server)
                let push = ["env", "push", "--dockerfile", context + "/Dockerfile", "--build-arg", "VERSION=2.5", "--wait", "--json"]
                let first = try await cli.run(push)
                #expect(first.status == 0, "\(first.stderr) \(first.stdout)")
                let build = try JSONDecoder().decode(API.Build.self, from: Data(first.stdout.utf8))
                #expect(build.status == "succeeded" && build.envID.hasPrefix("ctx-") && build.steps == 9, "\(build)")
                let env = try await server.client.env(build.envID)
                #expect(env.process == API.ProcessDefaults(env: ["APP_HOME": "/srv/app", "MODE": "prod"], workdir: "/srv/app", user: "app"))
                #expect(env.start == "httpd -f -p 8080 -h /srv/app/site")
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: "ctx"))
                let out = try await server.client.run(sandbox.id, API.Exec(shell: """
                    cat built.txt; stat -c '%u %a %n' site/index.html main.py; echo $MODE; wget -qO- http://127.0.0.1:8080/index.html
                    """))
                #expect(out.stdoutText == "2.5 prod\napp\n/srv/app\n1000 644 site/index.html\n0 755 main.py\nprod\n<h1>hi</h1>\n",
                        "\(out.stdoutText) \(out.stderrText)")
                try await server.client.killSandbox(sandbox.id)

                // Unchanged: the same env, no build; another build-arg is another env.
                let again = try JSONDecoder().decode(API.PushResult.self, from: Data(try await cli.run(push).stdout.utf8))
                #expect(again.envID == build.envID && again.build == nil)

                // The same Dockerfile named by sprout.toml, which adds its own settings.
                try FileSystem.writeAtomically(context + "/sprout.toml", """
                    id = "from-toml"
                    [template]
                    dockerfile = "Dockerfile"
                    [build]
                    memory_mb = 256

                    """, mode: 0o644)
                let viaToml = try await cli.run(["env", "push", "--file", context + "/sprout.toml", "--build-arg", "VERSION=2.5", "--wait", "--json"])
                let tomlBuild = try JSONDecoder().decode(API.Build.self, from: Data(viaToml.stdout.utf8))
                #expect(tomlBuild.status == "succeeded" && tomlBuild.cachedSteps == 6, "\(tomlBuild)")  // every RUN, WORKDIR and COPY layer

                // Multi-stage: the first stage builds as an env of its own; the last copies from it.
                try FileSystem.writeAtomically(context + "/Dockerfile.multi", """
                    FROM empty AS build
                    WORKDIR /out
                    COPY site/ ./site/
                    RUN echo compiled > artifact.bin && chmod 755 artifact.bin
                    FROM empty
                    COPY --from=build /out/artifact.bin /app/bin/
                    COPY --from=0 /out/site /app/site
                    """, mode: 0o644)
                let multi = try await cli.run(["env", "push", "--dockerfile", context + "/Dockerfile.multi", "--name", "multi", "--wait", "--json"])
                #expect(multi.status == 0, "\(multi.stderr)")
                let multiBuild = try JSONDecoder().decode(API.Build.self, from: Data(multi.stdout.utf8))
                let stageEnv = try #require(try await server.client.envs().first { $0.name == "multi--build" })
                #expect(!stageEnv.published)
                let multiBox = try await server.client.createSandbox(API.CreateSandbox(env: multiBuild.envID))
                let multiOut = try await server.client.run(multiBox.id, API.Exec(shell: "stat -c '%a %n' /app/bin/artifact.bin; cat /app/site/index.html; ls /out 2>&1"))
                #expect(multiOut.stdoutText == "755 /app/bin/artifact.bin\n<h1>hi</h1>\nls: /out: No such file or directory\n", "\(multiOut.stdoutText)")
                try await server.client.killSandbox(multiBox.id)
                let multiAgain = try await cli.run(["env", "push", "--dockerfile", context + "/Dockerfile.multi", "--name", "multi", "--json"])
                #expect(try JSONDecoder().decode(API.PushResult.self, from: Data(multiAgain.stdout.utf8)).build == nil, "\(multiAgain.stdout)")

                // Bad Dockerfiles: the line is named, nothing is built.
                for (text, message) in [
                    ("FROM empty\nRUN true\nVOLUME /data\n", "Dockerfile:3: Sprout cannot run VOLUME"),
                    ("FROM empty\nFROBNICATE x\n", "Dockerfile:2: unknown instruction FROBNICATE"),
                    ("FROM empty\nCOPY missing.txt /x\n", "Dockerfile:2: COPY source 'missing.txt' is not in the build context"),
                    ("RUN true\n", "Dockerfile:1: RUN before FROM"),
                ] {
                    try FileSystem.writeAtomically(context + "/Dockerfile", text, mode: 0o644)
                    let bad = try await cli.run(["env", "push", "--dockerfile", context + "/Dockerfile", "--name", "bad"])
                    #expect(bad.status != 0 && bad.stderr.contains(message), "\(bad.stderr)")
                }
                #expect(try await server.client.envs().allSatisfy { $0.name != "bad" })
            }
        }

        @Test("a registry that hands out bearer tokens (Docker Hub's scheme): the token service is asked with the login, the registry checks the token; a wrong login is refused")
        func bearerToken() async throws {
            let directory = try FileSystem.makeTemporaryDirectory(prefix: "sprout-token")
            defer { try? FileSystem.removeTree(directory) }
            for argv in [["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
                          "-days", "1", "-subj", "/CN=sprout-test-token"],
                         ["openssl", "x509", "-in", directory + "/cert.pem", "-outform", "der", "-out", directory + "/cert.der"]] {
                let out = try await HostCommand.capture(argv)
                #expect(out.status == 0, "\(out.stderr)")
            }
            // The token service: its port on its first line.
            let portFile = open(directory + "/token.port", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
            var options = Spawn.Options()
            options.stdout = portFile
            let service = try Spawn.spawn(path: "/usr/bin/python3", argv: ["python3", Integration.OpenAPITests.root + "/Tests/registry/token_server.py",
                                                                          directory, "tester", "s3cret"],
                                          env: HostCommand.environment, options: options)
            close(portFile)
            defer { Spawn.terminate(service, graceSeconds: 5) }
            var port = 0
            #expect(try await eventually {
                port = Int(String(decoding: (try? Descriptor.readFile(directory + "/token.port")) ?? [], as: UTF8.self).trimmed) ?? 0
                return port > 0
            })
            try FileSystem.makeDirectories(directory + "/registry")
            let registry = try await LocalRegistry(directory: directory + "/registry", token: LocalRegistry.TokenAuth(
                realm: "http://127.0.0.1:\(port)/token", service: "sprout-test-registry", issuer: "sprout-test-issuer",
                certificate: directory + "/cert.pem"))
            defer { registry.stop() }
            let login = RegistryCredentials.Login(username: "tester", password: "s3cret")
            try await TestImage.write(layout: directory + "/layout", tag: "v1", config: Self.appConfig, layers: Self.appLayers)
            try await registry.push(layout: directory + "/layout", tag: "v1", as: "sprout-test/app", login: login)
            let reference = "\(registry.host)/sprout-test/app:v1"
            // Positive control: anonymous reads are refused; the registry points at the token service.
            let anonymous = try await HostCommand.capture(["skopeo", "inspect", "--tls-verify=false", "docker://\(reference)"])
            #expect(anonymous.status != 0 && anonymous.stderr.contains("unauthorized"), "\(anonymous.stderr)")

            func authFile(_ password: String) throws -> String {
                try TestRegistry.authFile(in: directory, host: registry.host, login: RegistryCredentials.Login(username: "tester", password: password))
            }
            try await ServerHarness.with(extraArgs: ["--insecure-registry", registry.host, "--registry-auth", try authFile("s3cret")]) { server in
                let result = try await server.client.push(API.Push(id: "tokened", from: reference, run: ["true"], start: nil, ready: nil, cpu: nil,
                                                                   memoryMB: nil, files: []))
                let build = try await server.client.build(try #require(result.build).id, wait: true)
                #expect(build.status == "succeeded", "\(build)")
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: "tokened"))
                #expect(try await server.client.run(sandbox.id, API.Exec(shell: "cat /srv/app/hello.txt")).stdoutText == "hello\n")
                try await server.client.killSandbox(sandbox.id)
            }
            try await ServerHarness.with(extraArgs: ["--insecure-registry", registry.host, "--registry-auth", try authFile("wrong")]) { server in
                try await Self.expectRefused(server, reference, saying: "refused access to sprout-test/app (401)")
            }
        }

        /// A push from `reference` with the server's (wrong) login is refused at once, `forbidden`, with `message`.
        static func expectRefused(_ server: ServerHarness, _ reference: String, saying message: String) async throws {
            do {
                let result = try await server.client.push(API.Push(id: "refused", from: reference, run: ["true"], start: nil, ready: nil, cpu: nil,
                                                                   memoryMB: nil, files: []))
                Issue.record("a push with a login the registry refuses went through: \(result)")
            } catch let error as SproutError {
                #expect(error.code == .forbidden && error.message.contains(message), "\(error)")
            }
        }

        @Test("sprout env import: a docker-save archive and an OCI archive become envs; the same image again adds nothing")
        func archiveImport() async throws {
            try await ServerHarness.with { server in
                let layout = server.data + "/layout"
                try await TestImage.write(layout: layout, tag: "v1", config: Self.appConfig, layers: Self.appLayers)
                let dockerArchive = server.data + "/app-docker.tar"
                let copied = try await HostCommand.capture([
                    "skopeo", "copy", "--insecure-policy", "oci:\(layout):v1", "docker-archive:\(dockerArchive):example.com/team/app:v1",
                ])
                #expect(copied.status == 0, "\(copied.stderr)")
                let cli = CLI(server: server)
                let imported = try await cli.run(["env", "import", dockerArchive, "--json"])
                #expect(imported.status == 0, "\(imported.stderr)")
                let env = try JSONDecoder().decode(API.Env.self, from: Data(imported.stdout.utf8))
                #expect(env.name == "image-app-v1" && env.base == "scratch" && env.process?.user == "app", "\(env)")
                #expect(env.image == "example.com/team/app:v1")
                let sandbox = try await server.client.createSandbox(API.CreateSandbox(env: env.id))
                let out = try await server.client.run(sandbox.id, API.Exec(shell: "id -un; cat hello.txt; wget -qO- http://127.0.0.1:8080/hello.txt"))
                #expect(out.stdoutText == "app\nhello\nhello\n", "\(out.stdoutText) \(out.stderrText)")
                try await server.client.killSandbox(sandbox.id)

                // The same image again: the same env, no bytes added.
                let again = try JSONDecoder().decode(API.Env.self, from: Data(try await cli.run(["env", "import", dockerArchive, "--json"]).stdout.utf8))
                #expect(again.id == env.id)

                // An OCI archive of it, named: its own env. Layers are named by their blobs: these are gzip, docker save's plain tars.
                let ociArchive = server.data + "/app-oci.tar"
                let tarred = try await HostCommand.capture(["tar", "-C", layout, "-cf", ociArchive, "."])
                #expect(tarred.status == 0)
                let named = try await cli.run(["env", "import", ociArchive, "--name", "app", "--image", "v1", "--json"])
                #expect(named.status == 0, "\(named.stderr)")
                let ociEnv = try JSONDecoder().decode(API.Env.self, from: Data(named.stdout.utf8))
                #expect(ociEnv.name == "app" && ociEnv.layers.count == env.layers.count && Set(ociEnv.layers).isDisjoint(with: env.layers), "\(ociEnv)")
                let ociAgain = try await cli.run(["env", "import", ociArchive, "--name", "app", "--image", "v1", "--json"])
                #expect(try JSONDecoder().decode(API.Env.self, from: Data(ociAgain.stdout.utf8)).id == ociEnv.id, "the same archive again: the same env")

                // Not an archive: a clear error, nothing made.
                try FileSystem.writeAtomically(server.data + "/junk.tar", "not a tar\n")
                let junk = try await cli.run(["env", "import", server.data + "/junk.tar"])
                #expect(junk.status != 0 && junk.stderr.contains("not an image archive"), "\(junk.stderr)")
                #expect(try await server.client.envs().filter { !$0.builtin }.map(\.id).sorted() == [env.id, ociEnv.id].sorted())
            }
        }
    }
}
