import Foundation
import SproutCore

/// A Dockerfile, read as Docker reads it (one stage: `FROM`, then
/// instructions), into what a Sprout build does: the parent (an image or an
/// env), steps (`RUN`, `COPY`/`ADD` of local files, `ENV`, `WORKDIR`,
/// `USER`), and how its sandboxes start (`CMD`/`ENTRYPOINT`, `EXPOSE`).
/// `ARG` and `ENV` values are substituted (`$NAME`, `${NAME}`,
/// `${NAME:-default}`) in the instructions Docker substitutes them in, and
/// `ARG`s reach `RUN` as variables. An instruction Sprout cannot run is an
/// error naming its line.
public struct Dockerfile: Equatable, Sendable {
    public enum Step: Equatable, Sendable {
        /// A command: shell form (`/bin/sh -c`) or exec form (argv).
        case run(shell: String?, argv: [String]?, env: [String: String], line: Int)
        /// Local sources (relative to the build context, `*` globs allowed) to `destination`.
        case copy(sources: [String], destination: String, owner: String?, line: Int)
        /// `COPY --from=STAGE`: paths in an earlier stage (its name or number) to `destination`.
        case copyFrom(stage: String, sources: [String], destination: String, owner: String?, line: Int)
        case env([String: String], line: Int)
        case workdir(String, line: Int)
        case user(String, line: Int)
    }

    /// One `FROM` and what follows it, up to the next.
    public struct Stage: Equatable, Sendable {
        /// An image, an env, or an earlier stage's name.
        public var from: String
        /// `AS name` (lowercased, as Docker matches it).
        public var name: String?
        public var steps: [Step] = []
        /// `ENTRYPOINT` + `CMD`, as Docker combines them (nil: neither).
        public var command: [String]?
        /// `EXPOSE`d TCP ports, in order.
        public var ports: [UInt16] = []
    }

    /// In order; the last is what the Dockerfile builds, the others are
    /// built only for what it copies from them.
    public var stages: [Stage]
    public var final: Stage { stages[stages.count - 1] }
    public var from: String { final.from }
    public var steps: [Step] { final.steps }
    public var command: [String]? { final.command }
    public var ports: [UInt16] { final.ports }

    static let unsupported: [String: String] = [
        "SHELL": "RUN runs with /bin/sh", "HEALTHCHECK": "use [build] ready in sprout.toml", "ONBUILD": "", "STOPSIGNAL": "",
        "VOLUME": "mount Sprout volumes with [sandbox] volumes in sprout.toml", "MAINTAINER": "use LABEL",
    ]

    /// Parses `text` (named `file` in errors) with `--build-arg`s `arguments`.
    public static func parse(_ text: String, file: String = "Dockerfile", arguments: [String: String] = [:]) throws -> Dockerfile {
        var stages: [Stage] = []
        var result: Stage?
        var declared: [String: String] = [:]  // ARGs in scope
        var env: [String: String] = [:]
        var entrypoint: [String]?
        var cmd: [String]?
        func finish() {
            guard var stage = result else { return }
            let all = (entrypoint ?? []) + (cmd ?? [])
            stage.command = all.isEmpty ? nil : all
            stages.append(stage)
            (result, env, entrypoint, cmd) = (nil, [:], nil, nil)
        }
        func fail(_ line: Int, _ message: String) -> SproutError {
            SproutError(.invalidArgument, "\(file):\(line): \(message)")
        }
        for (line, instruction, rest) in try logicalLines(text, file: file) {
            let scope = env.merging(declared) { current, _ in current }
            func substituted(_ s: String) throws -> String {
                do { return try substitute(s, scope) } catch let error as SproutError { throw fail(line, error.message) }
            }
            if instruction != "FROM" && instruction != "ARG" && result == nil {
                throw fail(line, "\(instruction) before FROM: a Dockerfile starts with FROM (ARGs may come first)")
            }
            switch instruction {
            case "FROM":
                finish()
                var words = rest.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
                if words.first?.hasPrefix("--platform") == true { words.removeFirst() }
                guard words.count == 1 || (words.count == 3 && words[1].uppercased() == "AS") else {
                    throw fail(line, "FROM takes an image or env, and optionally AS NAME")
                }
                let parent = try substituted(words[0])
                guard !parent.isEmpty else { throw fail(line, "FROM names nothing") }
                let name = words.count == 3 ? words[2].lowercased() : nil
                if let name, stages.contains(where: { $0.name == name }) { throw fail(line, "a second stage named \(name)") }
                result = Stage(from: stages.first { $0.name == parent.lowercased() }.map { _ in parent.lowercased() } ?? parent, name: name)
            case "ARG":
                for word in try words(rest, line: line, file: file) {
                    let (name, value) = split(word)
                    guard isName(name) else { throw fail(line, "bad ARG name '\(name)'") }
                    let given = try value.map(substituted)
                    declared[name] = arguments[name] ?? given ?? declared[name] ?? ""
                }
            case "RUN":
                let argv = try jsonArray(rest, line: line, file: file)
                let args = declared.filter { env[$0.key] == nil }
                result!.steps.append(.run(shell: argv == nil ? rest : nil, argv: argv, env: args, line: line))
            case "COPY", "ADD":
                var arguments = Substring(rest)
                var flags: [String] = []
                while arguments.hasPrefix("--") {
                    let flag = arguments.prefix { !$0.isWhitespace }
                    flags.append(String(flag))
                    arguments = arguments.dropFirst(flag.count).drop(while: \.isWhitespace)
                }
                let words = try jsonArray(String(arguments), line: line, file: file) ?? words(String(arguments), line: line, file: file)
                var owner: String?
                var stage: String?
                for flag in flags {
                    if flag.hasPrefix("--chown=") {
                        owner = try substituted(String(flag.dropFirst(8)))
                    } else if flag.hasPrefix("--from="), instruction == "COPY" {
                        let named = String(flag.dropFirst(7)).lowercased()
                        guard stages.contains(where: { $0.name == named }) || Int(named).map({ $0 >= 0 && $0 < stages.count }) == true else {
                            throw fail(line, "COPY --from=\(named) names no earlier stage (images are not copied from; FROM one in a stage of its own)")
                        }
                        stage = Int(named).map { stages[$0].name ?? String($0) } ?? named
                    } else if flag.hasPrefix("--chmod=") || flag == "--link" {
                        throw fail(line, "\(instruction) \(flag) is not supported")
                    } else {
                        throw fail(line, "unknown \(instruction) flag \(flag)")
                    }
                }
                guard words.count >= 2 else { throw fail(line, "\(instruction) needs at least one source and a destination") }
                let sources = try words.dropLast().map(substituted)
                if instruction == "ADD", let remote = sources.first(where: { $0.contains("://") }) {
                    throw fail(line, "ADD of a URL (\(remote)) is not supported: RUN curl it instead")
                }
                let destination = try substituted(words.last!)
                let user = owner.map { String($0.split(separator: ":").first ?? "") }
                if let stage {
                    result!.steps.append(.copyFrom(stage: stage, sources: sources, destination: destination, owner: user, line: line))
                } else {
                    result!.steps.append(.copy(sources: sources, destination: destination, owner: user, line: line))
                }
            case "ENV":
                var pairs: [String: String] = [:]
                let items = try words(rest, line: line, file: file)
                if items.count >= 1, !items[0].contains("=") {
                    // The old form: ENV NAME value with spaces.
                    let name = items[0]
                    pairs[name] = try substituted(String(rest.dropFirst(name.count)).trimmingCharacters(in: .whitespaces))
                } else {
                    for item in items {
                        let (name, value) = split(item)
                        guard isName(name), let value else { throw fail(line, "ENV takes NAME=value pairs") }
                        pairs[name] = try substituted(value)
                    }
                }
                env.merge(pairs) { $1 }
                result!.steps.append(.env(pairs, line: line))
            case "WORKDIR":
                let path = try substituted(rest.trimmingCharacters(in: .whitespaces))
                guard !path.isEmpty else { throw fail(line, "WORKDIR names no directory") }
                result!.steps.append(.workdir(path, line: line))
            case "USER":
                let user = try substituted(rest.trimmingCharacters(in: .whitespaces))
                guard !user.isEmpty, !user.contains(" ") else { throw fail(line, "USER takes one user (name or uid, optionally :group)") }
                result!.steps.append(.user(String(user.split(separator: ":").first!), line: line))
            case "EXPOSE":
                for word in try words(rest, line: line, file: file) {
                    let spec = try substituted(word)
                    let parts = spec.split(separator: "/")
                    guard let port = UInt16(parts.first ?? ""), port > 0, parts.count == 1 || parts[1] == "tcp" || parts[1] == "udp" else {
                        throw fail(line, "EXPOSE takes ports (8080, 8080/tcp), got '\(spec)'")
                    }
                    if parts.count == 1 || parts[1] == "tcp" { result!.ports.append(port) }
                }
            case "CMD":
                cmd = try jsonArray(rest, line: line, file: file) ?? ["/bin/sh", "-c", rest]
            case "ENTRYPOINT":
                entrypoint = try jsonArray(rest, line: line, file: file) ?? ["/bin/sh", "-c", rest]
                cmd = nil  // as Docker: an ENTRYPOINT resets an earlier CMD
            case "LABEL":
                _ = try words(rest, line: line, file: file)
            default:
                if let hint = unsupported[instruction] {
                    throw fail(line, "Sprout cannot run \(instruction)" + (hint.isEmpty ? "" : ": \(hint)"))
                }
                throw fail(line, "unknown instruction \(instruction)")
            }
        }
        finish()
        guard !stages.isEmpty else { throw SproutError(.invalidArgument, "\(file): no FROM: a Dockerfile starts with FROM") }
        return Dockerfile(stages: stages)
    }

    // MARK: Lines and words

    /// (line number, instruction in capitals, the rest), with `\` continuations joined and comments dropped.
    static func logicalLines(_ text: String, file: String) throws -> [(Int, String, String)] {
        var out: [(Int, String, String)] = []
        var pending = ""
        var start = 0
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : String(raw)
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if pending.isEmpty {
                if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
                start = index + 1
            } else if trimmed.hasPrefix("#") || trimmed.isEmpty {
                continue  // comments and empty lines inside a continued instruction
            }
            if trimmed.hasSuffix("\\") {
                pending += String(trimmed.dropLast()) + " "
                continue
            }
            pending += trimmed
            let name = String(pending.prefix { !$0.isWhitespace })
            let rest = String(pending.dropFirst(name.count)).trimmingCharacters(in: .whitespaces)
            if rest.hasPrefix("<<") { throw SproutError(.invalidArgument, "\(file):\(start): heredocs are not supported") }
            out.append((start, name.uppercased(), rest))
            pending = ""
        }
        if !pending.isEmpty { throw SproutError(.invalidArgument, "\(file):\(start): the file ends inside a continued line") }
        return out
    }

    /// `["a", "b"]` (exec form), or nil when `text` is not a JSON array.
    static func jsonArray(_ text: String, line: Int, file: String) throws -> [String]? {
        guard text.hasPrefix("[") else { return nil }
        var items: [String] = []
        var rest = Substring(text.dropFirst())
        func skipSpace() { rest = rest.drop { $0 == " " || $0 == "\t" } }
        skipSpace()
        if rest.first == "]" { return [] }
        while true {
            skipSpace()
            guard rest.first == "\"" else { return nil }  // not JSON: Docker runs it as a shell command
            rest = rest.dropFirst()
            var item = ""
            while let c = rest.first, c != "\"" {
                rest = rest.dropFirst()
                if c == "\\", let next = rest.first {
                    rest = rest.dropFirst()
                    switch next {
                    case "n": item.append("\n")
                    case "t": item.append("\t")
                    default: item.append(next)
                    }
                } else {
                    item.append(c)
                }
            }
            guard rest.first == "\"" else { throw SproutError(.invalidArgument, "\(file):\(line): unterminated string in a JSON array") }
            rest = rest.dropFirst()
            items.append(item)
            skipSpace()
            if rest.first == "," { rest = rest.dropFirst(); continue }
            if rest.first == "]" && rest.dropFirst().allSatisfy(\.isWhitespace) { return items }
            return nil
        }
    }

    /// Words separated by spaces; `"…"` and `'…'` keep spaces (quotes removed).
    static func words(_ text: String, line: Int, file: String) throws -> [String] {
        var out: [String] = []
        var current = ""
        var quote: Character?
        var inWord = false
        var iterator = text.makeIterator()
        while let c = iterator.next() {
            if let q = quote {
                if c == q { quote = nil } else if c == "\\" && q == "\"", let next = iterator.next() { current.append(next) } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
                inWord = true
            } else if c == " " || c == "\t" {
                if inWord { out.append(current) }
                current = ""
                inWord = false
            } else if c == "\\", let next = iterator.next() {
                current.append(next)
                inWord = true
            } else {
                current.append(c)
                inWord = true
            }
        }
        if quote != nil { throw SproutError(.invalidArgument, "\(file):\(line): unterminated quote") }
        if inWord { out.append(current) }
        return out
    }

    static func split(_ word: String) -> (String, String?) {
        guard let equals = word.firstIndex(of: "=") else { return (word, nil) }
        return (String(word[..<equals]), String(word[word.index(after: equals)...]))
    }

    static func isName(_ name: String) -> Bool {
        guard let first = name.first, first.isLetter || first == "_" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }

    /// `$NAME`, `${NAME}`, `${NAME:-default}` and `${NAME:+alt}` from `scope`
    /// (unknown names are empty, as in Docker); `\$` is a literal `$`.
    static func substitute(_ text: String, _ scope: [String: String]) throws -> String {
        var out = ""
        var rest = Substring(text)
        while let c = rest.first {
            rest = rest.dropFirst()
            if c == "\\", rest.first == "$" {
                out.append("$")
                rest = rest.dropFirst()
                continue
            }
            guard c == "$" else { out.append(c); continue }
            if rest.first == "{" {
                guard let close = rest.firstIndex(of: "}") else { throw SproutError(.invalidArgument, "unterminated ${ in '\(text)'") }
                let body = rest[rest.index(after: rest.startIndex)..<close]
                rest = rest[rest.index(after: close)...]
                if let range = body.range(of: ":-") {
                    let value = scope[String(body[..<range.lowerBound])] ?? ""
                    out += value.isEmpty ? String(body[range.upperBound...]) : value
                } else if let range = body.range(of: ":+") {
                    let value = scope[String(body[..<range.lowerBound])] ?? ""
                    out += value.isEmpty ? "" : String(body[range.upperBound...])
                } else {
                    out += scope[String(body)] ?? ""
                }
            } else {
                let name = rest.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
                guard !name.isEmpty else { out.append("$"); continue }
                rest = rest.dropFirst(name.count)
                out += scope[String(name)] ?? ""
            }
        }
        return out
    }
}
