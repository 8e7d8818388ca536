import Foundation
import SproutCore
import SproutRegistry
import SproutStore
import Testing

/// How image references, registry challenges and logins are read (the
/// pulls themselves run against a real registry in the integration tier).
@Suite("Unit: registry")
struct RegistryTests {
    @Test("image references as Docker reads them: Docker Hub and its library/, registries with ports, tags and digests")
    func references() throws {
        let python = try ImageReference(parsing: "python:3.12-slim")
        #expect(python == ImageReference(registry: "docker.io", repository: "library/python", tag: "3.12-slim", digest: nil))
        #expect(python.apiHost == "registry-1.docker.io" && python.description == "docker.io/library/python:3.12-slim")
        #expect(try ImageReference(parsing: "ubuntu").tag == "latest")
        #expect(try ImageReference(parsing: "org/app").repository == "org/app")
        let local = try ImageReference(parsing: "localhost:5000/team/app")
        #expect(local.registry == "localhost:5000" && local.repository == "team/app" && local.tag == "latest")
        let digest = "sha256:" + String(repeating: "a1", count: 32)
        let pinned = try ImageReference(parsing: "ghcr.io/org/app@\(digest)")
        #expect(pinned.registry == "ghcr.io" && pinned.tag == nil && pinned.digest == digest && pinned.manifestReference == digest)
        let both = try ImageReference(parsing: "registry.example:5000/x:1.2@\(digest)")
        #expect(both.tag == "1.2" && both.digest == digest && both.apiHost == "registry.example:5000")
        for bad in ["", "Python:3", "app:", "app@sha256:abc", "a b", "ghcr.io//x", "app:-bad", "/app"] {
            #expect(throws: SproutError.self, "\(bad)") { try ImageReference(parsing: bad) }
        }
        // Env names never look like images; image references written with a registry or tag do.
        #expect(!ImageReference.looksLikeImage("my-env_2") && ImageReference.looksLikeImage("python:3.12") && ImageReference.looksLikeImage("org/app"))
    }

    @Test("WWW-Authenticate challenges: Bearer with quoted parameters (commas, escapes), Basic")
    func challenges() {
        let (scheme, parameters) = RegistryClient.parseChallenge(
            #"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull,push""#)
        #expect(scheme == "Bearer")
        #expect(parameters == ["realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                               "scope": "repository:library/python:pull,push"])
        let basic = RegistryClient.parseChallenge(#"Basic realm="a \"quoted\" realm""#)
        #expect(basic.scheme == "Basic" && basic.parameters == ["realm": #"a "quoted" realm"#])
        #expect(RegistryClient.parseChallenge("Bearer").parameters.isEmpty)
    }

    @Test("logins from docker's config.json: auth or username/password; Docker Hub under any of its names; a broken file is an error")
    func credentials() throws {
        let path = "/tmp/sprout-registry-auth-\(Identifiers.random(length: 6)).json"
        defer { unlink(path) }
        let hub = Data("me:hub-token".utf8).base64EncodedString()
        try #"{"auths": {"https://index.docker.io/v1/": {"auth": "\#(hub)"}, "ghcr.io": {"username": "u", "password": "p:w"}}}"#
            .write(toFile: path, atomically: true, encoding: .utf8)
        let logins = try RegistryCredentials(file: path)
        #expect(logins.find("docker.io") == RegistryCredentials.Login(username: "me", password: "hub-token"))
        #expect(logins.find("ghcr.io") == RegistryCredentials.Login(username: "u", password: "p:w"))
        #expect(logins.find("quay.io") == nil)
        try #"{"auths": {"ghcr.io": {}}}"#.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: SproutError.self) { try RegistryCredentials(file: path) }
        try "not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: SproutError.self) { try RegistryCredentials(file: path) }
    }

    @Test("an index picks linux/amd64's manifest, or names the platforms it has")
    func platforms() throws {
        let index = try JSONDecoder().decode(OCIIndex.self, from: Data("""
            {"manifests": [
              {"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}},
              {"digest": "sha256:amd", "platform": {"os": "linux", "architecture": "amd64"}}]}
            """.utf8))
        #expect(try index.hostManifest().digest == "sha256:amd")
        let armOnly = try JSONDecoder().decode(OCIIndex.self, from: Data("""
            {"manifests": [{"digest": "sha256:arm", "platform": {"os": "linux", "architecture": "arm64"}}]}
            """.utf8))
        #expect(throws: SproutError(.invalidArgument, "the image has no linux/amd64 variant (it has linux/arm64)")) { try armOnly.hostManifest() }
    }
}
