import SproutCore

/// A parser for the subset of TOML that `sprout.toml` uses: tables with bare
/// names, `key = value` with bare keys, basic and literal strings, integers,
/// floats, booleans, and arrays of those (over several lines, trailing comma
/// allowed), with comments. Anything else is an error that names the line.
public enum TOMLSubset {
    public enum Value: Equatable, Sendable {
        case string(String)
        case integer(Int)
        case float(Double)
        case bool(Bool)
        case array([Value])

        public var typeName: String {
            switch self {
            case .string: "a string"
            case .integer: "an integer"
            case .float: "a number"
            case .bool: "a boolean"
            case .array: "an array"
            }
        }
    }

    /// A value with the line it was defined on.
    public struct Entry: Equatable, Sendable {
        public var value: Value
        public var line: Int
    }

    /// Parses `text` into dotted keys (`build.run`) and their entries.
    public static func parse(_ text: String, file: String) throws -> [String: Entry] {
        var parser = Parser(chars: Array(text.unicodeScalars), file: file)
        return try parser.document()
    }

    struct Parser {
        let chars: [Unicode.Scalar]
        let file: String
        var i = 0
        var line = 1

        func fail(_ message: String, line: Int? = nil) -> SproutError {
            SproutError(.invalidArgument, "\(file):\(line ?? self.line): \(message)")
        }

        var atEnd: Bool { i >= chars.count }
        var current: Unicode.Scalar? { atEnd ? nil : chars[i] }

        mutating func advance() {
            if chars[i] == "\n" { line += 1 }
            i += 1
        }

        /// Skips spaces and tabs (and, if `newlines`, newlines and comments).
        mutating func skip(newlines: Bool) {
            while let c = current {
                if c == " " || c == "\t" || c == "\r" {
                    advance()
                } else if c == "#" {
                    while let d = current, d != "\n" { advance() }
                } else if newlines && c == "\n" {
                    advance()
                } else {
                    break
                }
            }
        }

        mutating func endOfLine() throws {
            skip(newlines: false)
            guard let c = current else { return }
            guard c == "\n" else { throw fail("unexpected '\(c)' after the value") }
            advance()
        }

        static func isBare(_ c: Unicode.Scalar) -> Bool {
            (c >= "a" && c <= "z") || (c >= "A" && c <= "Z") || (c >= "0" && c <= "9") || c == "_" || c == "-"
        }

        mutating func bareKey() throws -> String {
            var key = ""
            while let c = current, Self.isBare(c) {
                key.unicodeScalars.append(c)
                advance()
            }
            guard !key.isEmpty else { throw fail(current.map { "expected a key, found '\($0)'" } ?? "expected a key") }
            return key
        }

        mutating func document() throws -> [String: Entry] {
            var result: [String: Entry] = [:]
            var table = ""
            var tables: Set<String> = []
            while true {
                skip(newlines: true)
                guard let c = current else { return result }
                if c == "[" {
                    advance()
                    skip(newlines: false)
                    let name = try bareKey()
                    skip(newlines: false)
                    guard current == "]" else { throw fail("expected ']' to close the table name") }
                    advance()
                    guard tables.insert(name).inserted else { throw fail("table [\(name)] is defined twice") }
                    table = name
                    try endOfLine()
                    continue
                }
                let keyLine = line
                let key = try bareKey()
                skip(newlines: false)
                guard current == "=" else { throw fail("expected '=' after '\(key)'") }
                advance()
                skip(newlines: false)
                let value = try self.value()
                let full = table.isEmpty ? key : "\(table).\(key)"
                guard result[full] == nil else { throw fail("'\(full)' is defined twice", line: keyLine) }
                result[full] = Entry(value: value, line: keyLine)
                try endOfLine()
            }
        }

        mutating func value() throws -> Value {
            guard let c = current else { throw fail("expected a value") }
            switch c {
            case "\"": return .string(try basicString())
            case "'": return .string(try literalString())
            case "[": return try array()
            case "t", "f":
                var word = ""
                while let d = current, Self.isBare(d) {
                    word.unicodeScalars.append(d)
                    advance()
                }
                if word == "true" { return .bool(true) }
                if word == "false" { return .bool(false) }
                throw fail("unknown value '\(word)' (strings need quotes)")
            default:
                var text = ""
                while let d = current, Self.isBare(d) || d == "." || d == "+" {
                    if d != "_" { text.unicodeScalars.append(d) }
                    advance()
                }
                if let n = Int(text) { return .integer(n) }
                if let x = Double(text), text.contains(".") { return .float(x) }
                throw fail(text.isEmpty ? "unexpected '\(c)'" : "unknown value '\(text)' (strings need quotes)")
            }
        }

        mutating func basicString() throws -> String {
            advance()  // opening quote
            var out = ""
            while true {
                guard let c = current, c != "\n" else { throw fail("unterminated string") }
                advance()
                if c == "\"" { return out }
                if c == "\\" {
                    guard let e = current else { throw fail("unterminated string") }
                    advance()
                    switch e {
                    case "n": out += "\n"
                    case "t": out += "\t"
                    case "r": out += "\r"
                    case "\\": out += "\\"
                    case "\"": out += "\""
                    case "u", "U":
                        let count = e == "u" ? 4 : 8
                        var hex = ""
                        for _ in 0..<count {
                            guard let h = current, h.properties.isASCIIHexDigit else { throw fail("bad \\\(e) escape") }
                            hex.unicodeScalars.append(h)
                            advance()
                        }
                        guard let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) else { throw fail("bad \\\(e) escape") }
                        out.unicodeScalars.append(scalar)
                    default: throw fail("unknown escape \\\(e)")
                    }
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }

        mutating func literalString() throws -> String {
            advance()
            var out = ""
            while true {
                guard let c = current, c != "\n" else { throw fail("unterminated string") }
                advance()
                if c == "'" { return out }
                out.unicodeScalars.append(c)
            }
        }

        mutating func array() throws -> Value {
            advance()  // [
            var items: [Value] = []
            while true {
                skip(newlines: true)
                guard let c = current else { throw fail("unterminated array") }
                if c == "]" {
                    advance()
                    return .array(items)
                }
                items.append(try value())
                skip(newlines: true)
                if current == "," {
                    advance()
                } else if current != "]" {
                    throw fail("expected ',' or ']' in the array")
                }
            }
        }
    }
}
