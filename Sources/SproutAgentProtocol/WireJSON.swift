#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import SproutCore

/// JSON coding for protocol messages: one encoder configuration for both sides.
public enum WireJSON {
    public static func encode<M: Encodable>(_ message: M) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(message))
    }

    public static func decode<M: Decodable>(_ type: M.Type, _ bytes: [UInt8]) throws -> M {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch let error as DecodingError {
            throw SproutError(.malformed, "malformed \(M.self): \(describe(error))")
        }
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ ctx: DecodingError.Context) -> String {
            let p = ctx.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p)"
        }
        switch error {
        case .dataCorrupted(let ctx):
            // Our own decoders explain themselves; JSONDecoder's syntax errors do not.
            return ctx.codingPath.isEmpty ? "not valid JSON" : "\(ctx.debugDescription)\(path(ctx))"
        case .keyNotFound(let key, let ctx): return "missing key '\(key.stringValue)'\(path(ctx))"
        case .typeMismatch(let type, let ctx): return "expected \(type)\(path(ctx))"
        case .valueNotFound(let type, let ctx): return "missing \(type)\(path(ctx))"
        @unknown default: return "\(error)"
        }
    }
}
