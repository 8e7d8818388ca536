import ArgumentParser
import Foundation
import SproutClient
import SproutCore
import SproutSystem

/// `sprout sandbox run-code ID CODE`: runs code in the sandbox's code
/// interpreter (an env built from `code-interpreter-v1`), printing output as
/// it streams. Exits 1 if the code raised an error.
struct SandboxRunCode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-code",
        abstract: "Run code in a sandbox's code interpreter (Jupyter kernels; envs from code-interpreter-v1).",
        discussion: """
            The kernel keeps its state between calls: `run-code ID 'x = 1'` then `run-code ID 'x + 1'` prints 2.
            CODE '-' reads the code from standard input. Results other than text (a plot's PNG, a DataFrame's
            HTML) are named, or written to --save DIR; --json prints every event as the interpreter sent it.
            """)
    @OptionGroup var client: ClientOptions
    @Option(help: "python (the default) or bash.") var language: String?
    @Option(help: "A context id (from --new-context or the SDK) instead of the language's default one.") var context: String?
    @Option(name: .customLong("env"), help: "Environment variable KEY=VALUE for this call (repeatable).") var envVars: [String] = []
    @Option(help: "Write each non-text result (png, svg, html, ...) to this folder.") var save: String?
    @Flag(help: "Print each event as one JSON line.") var json = false
    @Argument var id: String
    @Argument(help: "The code, or '-' for standard input.") var code: String

    func run() async throws {
        let source = code == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) : code
        let api = try client.client()
        let run = CodeRun(code: source, contextID: context, language: language,
                          envVars: envVars.isEmpty ? nil : try keyValues(envVars, what: "--env"))
        if let save { try FileManager.default.createDirectory(atPath: save, withIntermediateDirectories: true) }
        let counter = Locked(0)
        let execution = try await api.runCode(id, run) { event in
            if json {
                Self.printJSON(event)
                return
            }
            switch event {
            case .stdout(let text): FileHandle.standardOutput.write(Data(text.utf8))
            case .stderr(let text): FileHandle.standardError.write(Data(text.utf8))
            case .result(let result):
                let index = counter.withLock { $0 += 1; return $0 }
                Self.show(result, index: index, save: save)
            case .error(let error):
                FileHandle.standardError.write(Data(((error.traceback.isEmpty ? "\(error.name): \(error.value)" : error.traceback) + "\n").utf8))
            case .executionCount, .end: break
            }
        }
        if execution.error != nil { throw ExitCode(1) }
    }

    static func show(_ result: CodeResult, index: Int, save: String?) {
        let others = result.formats.keys.filter { $0 != "text" }.sorted()
        if let text = result.text, others.isEmpty || result.isMain || save == nil {
            print(text)
        }
        guard !others.isEmpty else { return }
        guard let save else {
            print("[result \(index): \(others.joined(separator: ", ")); --save DIR writes them]")
            return
        }
        for format in others {
            guard let value = result.formats[format] else { continue }
            let binary = ["png", "jpeg", "pdf"].contains(format)
            let bytes = binary ? (Data(base64Encoded: value, options: .ignoreUnknownCharacters) ?? Data()) : Data(value.utf8)
            let ext = ["markdown": "md", "javascript": "js", "latex": "tex", "data": "json", "chart": "json", "extra": "json"][format] ?? format
            let path = "\(save)/result-\(index).\(format == "data" || format == "chart" ? format + "." : "")\(ext)"
            if FileManager.default.createFile(atPath: path, contents: bytes) { print("[result \(index): \(format) written to \(path)]") }
        }
    }

    static func printJSON(_ event: CodeEvent) {
        var object: [String: Any]
        switch event {
        case .stdout(let text): object = ["type": "stdout", "text": text]
        case .stderr(let text): object = ["type": "stderr", "text": text]
        case .executionCount(let n): object = ["type": "number_of_executions", "execution_count": n]
        case .end: object = ["type": "end_of_execution"]
        case .error(let e): object = ["type": "error", "name": e.name, "value": e.value, "traceback": e.traceback]
        case .result(let r):
            object = ["type": "result", "is_main_result": r.isMain]
            for (key, value) in r.formats {
                let structured = ["json", "data", "chart", "extra"].contains(key)
                object[key] = structured ? ((try? JSONSerialization.jsonObject(with: Data(value.utf8))) ?? value) : value
            }
        }
        if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }
}
