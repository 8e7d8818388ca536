import Foundation
import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import SproutCore

/// Code to run in a sandbox's code interpreter (an env built from
/// `code-interpreter-v1`, whose server listens on port 49999): the body of
/// its `POST /execute`, as the e2b-code-interpreter SDK sends it.
public struct CodeRun: Codable, Sendable {
    public var code: String
    /// A context made with `createCodeContext`; nil: the language's default context.
    public var contextID: String?
    /// `python` (the default) or `bash`; not together with `contextID`.
    public var language: String?
    /// For this call only.
    public var envVars: [String: String]?

    public init(code: String, contextID: String? = nil, language: String? = nil, envVars: [String: String]? = nil) {
        self.code = code
        self.contextID = contextID
        self.language = language
        self.envVars = envVars
    }

    enum CodingKeys: String, CodingKey {
        case code, language
        case contextID = "context_id"
        case envVars = "env_vars"
    }
}

/// One streamed event of a code run.
public enum CodeEvent: Sendable, Equatable {
    case stdout(String)
    case stderr(String)
    /// A result: the cell's value (`isMain`) or something it displayed.
    case result(CodeResult)
    case error(CodeError)
    case executionCount(Int)
    case end
}

/// A result in every format the kernel gave: `text`, `html`, `png` (base64),
/// `markdown`, `svg`, ...; structured ones (`json`, `data`, `chart`, `extra`)
/// as JSON text.
public struct CodeResult: Sendable, Equatable {
    public var isMain: Bool
    public var formats: [String: String]
    public var text: String? { formats["text"] }
}

public struct CodeError: Sendable, Equatable, Error {
    public var name: String
    public var value: String
    public var traceback: String
}

/// What a code run produced, once it ended.
public struct CodeExecution: Sendable {
    public var stdout: [String] = []
    public var stderr: [String] = []
    public var results: [CodeResult] = []
    public var error: CodeError?
    public var executionCount: Int?
    /// The main result's text (the cell's value), if it had one.
    public var text: String? { results.first(where: \.isMain)?.text }
}

/// A code interpreter context: a kernel with its own state and working directory.
public struct CodeContext: Codable, Sendable, Equatable {
    public var id: String
    public var language: String
    public var cwd: String
}

extension SproutAPIClient {
    static let interpreterPort = 49999

    /// Runs code in the sandbox's code interpreter, streaming each event to
    /// `onEvent`, and returns what it produced. An error in the code is in the
    /// result (`error`), not thrown; a bad request (unknown context, a language
    /// and a context together, ...) throws the interpreter's message.
    @discardableResult
    public func runCode(_ id: String, _ run: CodeRun, onEvent: @escaping @Sendable (CodeEvent) -> Void = { _ in }) async throws -> CodeExecution {
        let response = try await interpreter(id, .POST, "/execute", body: try JSONEncoder().encode(run))
        var execution = CodeExecution()
        var pending: [UInt8] = []
        func handle(_ line: ArraySlice<UInt8>) throws {
            guard !line.allSatisfy({ $0 == 32 || $0 == 13 }) else { return }
            guard let event = try Self.codeEvent(Data(line)) else { return }
            switch event {
            case .stdout(let text): execution.stdout.append(text)
            case .stderr(let text): execution.stderr.append(text)
            case .result(let result): execution.results.append(result)
            case .error(let error): execution.error = error
            case .executionCount(let count): execution.executionCount = count
            case .end: break
            }
            onEvent(event)
        }
        do {
            for try await buffer in response.body {
                pending += buffer.readableBytesView
                while let newline = pending.firstIndex(of: 10) {
                    try handle(pending[..<newline])
                    pending.removeSubrange(...newline)
                }
            }
            if !pending.isEmpty { try handle(pending[...]) }
        } catch let error as SproutError {
            throw error
        } catch {
            throw SproutError(.unavailable, "the code run's stream was cut short: \(Self.describe(error))")
        }
        return execution
    }

    public func codeContexts(_ id: String) async throws -> [CodeContext] {
        try await interpreterJSON(id, .GET, "/contexts", as: [CodeContext].self)
    }

    public func createCodeContext(_ id: String, language: String? = nil, cwd: String? = nil) async throws -> CodeContext {
        var body: [String: String] = [:]
        body["language"] = language
        body["cwd"] = cwd
        return try await interpreterJSON(id, .POST, "/contexts", body: try JSONEncoder().encode(body), as: CodeContext.self)
    }

    public func removeCodeContext(_ id: String, context: String) async throws {
        _ = try await Self.collect(try await interpreter(id, .DELETE, "/contexts/\(percentEncode(context))"), limit: 1 << 20)
    }

    public func restartCodeContext(_ id: String, context: String) async throws {
        _ = try await Self.collect(try await interpreter(id, .POST, "/contexts/\(percentEncode(context))/restart"), limit: 1 << 20)
    }

    private func interpreterJSON<T: Decodable>(_ id: String, _ method: HTTPMethod, _ path: String, body: Data? = nil, as type: T.Type) async throws -> T {
        let bytes = try await Self.collect(try await interpreter(id, method, path, body: body), limit: 16 << 20)
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw SproutError(.malformed, "the code interpreter answered \(path) with something else than expected: \(error)")
        }
    }

    /// A request to the interpreter through the port preview; a non-2xx answer
    /// throws its message (Sprout's own, or the interpreter's `{code, message}`).
    private func interpreter(_ id: String, _ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> HTTPClientResponse {
        let response = try await send(method, sandboxPath(id, "ports/\(Self.interpreterPort)\(path)"),
                                      body: body.map { .bytes(ByteBuffer(bytes: $0)) }, contentType: body == nil ? nil : "application/json",
                                      checked: false)
        let status = Int(response.status.code)
        guard (200..<300).contains(status) else {
            let bytes = (try? await Self.collect(response, limit: 1 << 20)) ?? []
            let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
            if let envelope = object?["error"] as? [String: Any], let message = envelope["message"] as? String {
                let code = (envelope["code"] as? String).map(SproutError.Code.init(rawValue:)) ?? .internal
                throw SproutError(code, message)
            }
            let message = object?["message"] as? String ?? String(decoding: bytes.prefix(500), as: UTF8.self)
            let code: SproutError.Code = switch status {
            case 400: .invalidArgument
            case 404: .notFound
            case 413: .tooLarge
            case 503: .unavailable
            default: .internal
            }
            throw SproutError(code, "code interpreter: \(message)")
        }
        return response
    }

    /// One JSON line of `/execute` as an event (nil for a type this client does not know).
    static func codeEvent(_ line: Data) throws -> CodeEvent? {
        guard let object = try? JSONSerialization.jsonObject(with: line) as? [String: Any], let type = object["type"] as? String else {
            throw SproutError(.malformed, "the code interpreter sent a line that is not a JSON event: \(String(decoding: line.prefix(200), as: UTF8.self))")
        }
        switch type {
        case "stdout": return .stdout(object["text"] as? String ?? "")
        case "stderr": return .stderr(object["text"] as? String ?? "")
        case "number_of_executions": return .executionCount(object["execution_count"] as? Int ?? 0)
        case "end_of_execution": return .end
        case "error":
            return .error(CodeError(name: object["name"] as? String ?? "", value: object["value"] as? String ?? "",
                                    traceback: object["traceback"] as? String ?? ""))
        case "result":
            var formats: [String: String] = [:]
            for (key, value) in object where key != "type" && key != "is_main_result" {
                if let text = value as? String {
                    formats[key] = text
                } else if !(value is NSNull), let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) {
                    formats[key] = String(decoding: data, as: UTF8.self)
                }
            }
            return .result(CodeResult(isMain: object["is_main_result"] as? Bool ?? false, formats: formats))
        default: return nil
        }
    }
}
