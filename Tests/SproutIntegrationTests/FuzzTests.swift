import Foundation
import SproutClient
import SproutCore
import SproutSystem
import Testing
import SproutAPI
import SproutAgentClient
import SproutHost

extension Integration {
    @Suite("API fuzzing")
    struct FuzzTests {
        /// schemathesis (PyPI, installed by `make test`) generates requests
        /// from openapi.yaml and checks every response: no 5xx, and each one
        /// as the spec describes it. Left out: the routes that stream or
        /// relay (exec, terminal, port previews, followed logs, waiting
        /// builds), whose answers are not single JSON documents, and the
        /// memory-snapshot routes, which the memory snapshot suite covers.
        @Test("schemathesis against openapi.yaml: no server errors, no response outside the spec")
        func schemathesis() async throws {
            try await ServerHarness.with { (server: ServerHarness) async throws in
                // The fuzzer works as an ordinary team's key: it must not be able to
                // revoke the admin key (it would, given one: DELETE /v1/keys/{id}).
                let key = try await server.client.createKey(API.CreateKey(name: "fuzz", team: "fuzz"))
                let api = server.client(key: key.secret)
                // Something real to aim at, and another team's sandbox it must not touch.
                _ = try await api.createSandbox(API.CreateSandbox(env: "empty"))
                let bystander = try await server.client.createSandbox(API.CreateSandbox(env: "empty"))
                let spec = OpenAPITests.root + "/openapi.yaml"
                let reports = server.data + "/fuzz"
                // Through python3 (as on PATH) rather than the `st` script, wherever pip put that.
                let entry = "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; schemathesis()"
                let out = try await CLI.runProcess([
                    "/usr/bin/env", "python3", "-c", entry, "run", spec, "--url", "http://127.0.0.1:\(server.port)",
                    "--header", "X-API-Key: \(key.secret)",
                    "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                    // One worker: two threads building its coverage cases at once tripped CPython 3.11's
                    // thread-unsafe AST recursion counter once ("SystemError: AST constructor recursion
                    // depth mismatch", a schemathesis runtime error, no request involved).
                    "--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--seed", "1", "--workers", "1",
                    "--request-timeout", "20", "--no-color",
                    "--exclude-path-regex", "(/exec|/pty|/ports/|/logs|/pause|/resume|/fork)",
                    "--exclude-path", "/v1/builds/{id}",
                    "--report", "junit", "--report-dir", reports,
                ])
                let summary = out.stdout.split(separator: "\n").filter { $0.contains("generated") || $0.contains("passed") || $0.contains("failed") }
                print("schemathesis: \(summary.joined(separator: " | "))")
                #expect(out.status == 0, "schemathesis found problems:\n\(out.stdout.suffix(6000))\n\(out.stderr.suffix(2000))")
                // Another team's sandbox is untouched, and the server still serves.
                #expect(try await server.client.run(bystander.id, API.Exec(cmd: ["true"])).exit.code == 0)
                #expect(try await server.client.health().status == "ok")
                for other in try await api.sandboxes() + [bystander] { _ = try? await server.client(key: key.secret).killSandbox(other.id) }
                _ = try await server.client.killSandbox(bystander.id)
                // What the fuzzer made that outlives sandboxes: its volumes (mounted while they exist).
                for volume in try await api.volumes() { try await api.deleteVolume(volume.id, force: true) }
                await expectNoLeftovers(server.data)
            }
        }
    }
}
