import Foundation
import SproutAPI
import SproutCore
import Testing
@testable import SproutServer

/// How the SDK's template becomes a Sprout push (the build itself runs
/// against a real server with the stock SDK in the E2B suite).
@Suite("Unit: E2B templates")
struct E2BTemplateTests {
    func body(_ json: String) throws -> E2B.TemplateBuildStart {
        try JSONDecoder().decode(E2B.TemplateBuildStart.self, from: Data(json.utf8))
    }

    @Test("the parent: e2bdev/base is base, a template by name, an image (with :latest when untagged); registry credentials refused")
    func parent() throws {
        #expect(try E2BTemplateTranslation.parent(try body(#"{"fromImage": "e2bdev/base"}"#)) == "base")
        #expect(try E2BTemplateTranslation.parent(try body(#"{"fromTemplate": "code-interpreter-v1"}"#)) == "code-interpreter-v1")
        #expect(try E2BTemplateTranslation.parent(try body(#"{"fromImage": "python:3.12-slim"}"#)) == "python:3.12-slim")
        #expect(try E2BTemplateTranslation.parent(try body(#"{"fromImage": "ubuntu"}"#)) == "ubuntu:latest")
        #expect(throws: SproutError.self) {
            try E2BTemplateTranslation.parent(try body(#"{"fromImage": "x/y:1", "fromImageRegistry": {"type": "registry", "username": "u", "password": "p"}}"#))
        }
    }

    @Test("steps as the SDK sends them; wait_for_port's ss check becomes port:N")
    func steps() throws {
        let run = try E2BTemplateTranslation.step(.init(type: "RUN", args: ["apt-get update", "root"]), number: 1)
        #expect(run == API.Push.Step(kind: .run, shell: "apt-get update", user: "root", source: "step 1"))
        let env = try E2BTemplateTranslation.step(.init(type: "ENV", args: ["A", "1", "B", "two words"]), number: 2)
        #expect(env.env == ["A": "1", "B": "two words"])
        #expect(try E2BTemplateTranslation.step(.init(type: "WORKDIR", args: ["/app"]), number: 3).path == "/app")
        #expect(try E2BTemplateTranslation.step(.init(type: "USER", args: ["user"]), number: 4).user == "user")
        #expect(throws: SproutError.self) { try E2BTemplateTranslation.step(.init(type: "ENV", args: ["A"]), number: 5) }
        #expect(throws: SproutError.self) { try E2BTemplateTranslation.step(.init(type: "HEALTHCHECK", args: []), number: 6) }
        #expect(E2BTemplateTranslation.ready(#"[ -n "$(ss -Htuln sport = :8000)" ]"#) == "port:8000")
        #expect(E2BTemplateTranslation.ready("test -f /tmp/ready") == "test -f /tmp/ready")
        #expect(E2BTemplateTranslation.ready("") == nil)
    }
}
