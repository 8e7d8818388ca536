import Foundation
import SproutCore

/// A record's columns: its stored properties by name. Strings, numbers and
/// booleans are columns of their own kind; a string enum is its raw value;
/// anything else (lists, maps, nested structs) is JSON text with sorted
/// keys, the format the catalog has always held. A nil property is a NULL
/// column (never left out, so an update clears it).
public enum RowEncoder {
    public static func columns<T: Encodable>(of value: T) throws -> [(String, SQLValue)] {
        let encoder = ColumnEncoder()
        try value.encode(to: encoder)
        return encoder.storage.columns
    }

    /// The column value of a nested value: a JSON fragment's own value, else the JSON text.
    static func value<T: Encodable>(_ value: T) throws -> SQLValue {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(value)
        guard let first = data.first else { return .null }
        switch first {
        case UInt8(ascii: "\""): return .text(try JSONDecoder().decode(String.self, from: data))
        case UInt8(ascii: "{"), UInt8(ascii: "["): return .text(String(decoding: data, as: UTF8.self))
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return .bool(first == UInt8(ascii: "t"))
        case UInt8(ascii: "n"): return .null
        default:
            let text = String(decoding: data, as: UTF8.self)
            if let i = Int64(text) { return .integer(i) }
            return .real(Double(text) ?? 0)
        }
    }
}

private final class ColumnStorage {
    var columns: [(String, SQLValue)] = []
}

private struct ColumnEncoder: Encoder {
    let storage = ColumnStorage()
    var codingPath: [CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(ColumnContainer<Key>(storage: storage))
    }
    func unkeyedContainer() -> UnkeyedEncodingContainer { fatalError("a record is encoded as columns, not as a list") }
    func singleValueContainer() -> SingleValueEncodingContainer { fatalError("a record is encoded as columns, not as one value") }
}

private struct ColumnContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let storage: ColumnStorage
    var codingPath: [CodingKey] { [] }

    func put(_ value: SQLValue, _ key: Key) { storage.columns.append((key.stringValue, value)) }

    mutating func encodeNil(forKey key: Key) throws { put(.null, key) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { put(.bool(value), key) }
    mutating func encode(_ value: String, forKey key: Key) throws { put(.text(value), key) }
    mutating func encode(_ value: Double, forKey key: Key) throws { put(.real(value), key) }
    mutating func encode(_ value: Float, forKey key: Key) throws { put(.real(Double(value)), key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { put(.integer(value), key) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { put(.integer(Int64(value)), key) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { put(try RowEncoder.value(value), key) }

    // A nil optional is a NULL column, not a missing one.
    mutating func encodeIfPresent(_ value: Bool?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: String?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Double?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Float?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Int?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Int8?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Int16?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Int32?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: Int64?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: UInt?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: UInt8?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: UInt16?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: UInt32?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent(_ value: UInt64?, forKey key: Key) throws { try encodeOptional(value, key) }
    mutating func encodeIfPresent<T: Encodable>(_ value: T?, forKey key: Key) throws { try encodeOptional(value, key) }

    private mutating func encodeOptional<T: Encodable>(_ value: T?, _ key: Key) throws {
        guard let value else { return put(.null, key) }
        try encode(value, forKey: key)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        fatalError("nested containers are encoded as JSON columns")
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer { fatalError("nested containers are encoded as JSON columns") }
    mutating func superEncoder() -> Encoder { fatalError("records have no superclass") }
    mutating func superEncoder(forKey key: Key) -> Encoder { fatalError("records have no superclass") }
}

/// Reads a record back from a row (see `RowEncoder` for the columns).
/// A JSON column that does not parse is an error, never an empty value.
public enum RowDecoder {
    public static func decode<T: Decodable>(_ type: T.Type, from row: SQLRow) throws -> T {
        try T(from: RowValuesDecoder(row: row))
    }

    static func nested<T: Decodable>(_ type: T.Type, from value: SQLValue, column: String) throws -> T {
        do {
            switch value {
            case .text(let text) where text.hasPrefix("{") || text.hasPrefix("["):
                return try JSONDecoder().decode(T.self, from: Data(text.utf8))
            case .text(let text):
                return try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(text))
            case .integer(let i): return try JSONDecoder().decode(T.self, from: Data(String(i).utf8))
            case .real(let d): return try JSONDecoder().decode(T.self, from: try JSONEncoder().encode(d))
            case .bool(let b): return try JSONDecoder().decode(T.self, from: Data((b ? "true" : "false").utf8))
            case .null: return try JSONDecoder().decode(T.self, from: Data("null".utf8))
            }
        } catch {
            throw SproutError(.internal, "catalog column \(column) does not hold a \(T.self): \(error)")
        }
    }
}

private struct RowValuesDecoder: Decoder {
    let row: SQLRow
    var codingPath: [CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(RowContainer<Key>(row: row))
    }
    func unkeyedContainer() throws -> UnkeyedDecodingContainer { throw SproutError(.internal, "a row is not a list") }
    func singleValueContainer() throws -> SingleValueDecodingContainer { throw SproutError(.internal, "a row is not one value") }
}

private struct RowContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let row: SQLRow
    var codingPath: [CodingKey] { [] }
    var allKeys: [Key] { row.values.keys.compactMap { Key(stringValue: $0) } }

    func contains(_ key: Key) -> Bool { row.has(key.stringValue) }
    func decodeNil(forKey key: Key) throws -> Bool { row[key.stringValue] == .null }

    private func missing(_ key: Key, _ kind: String) -> Error {
        SproutError(.internal, "catalog column \(key.stringValue) is \(row[key.stringValue]), not \(kind)")
    }
    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool {
        guard let b = row[key.stringValue].bool else { throw missing(key, "a boolean") }
        return b
    }
    func decode(_ type: String.Type, forKey key: Key) throws -> String {
        guard let s = row[key.stringValue].string else { throw missing(key, "text") }
        return s
    }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double {
        guard let d = row[key.stringValue].double else { throw missing(key, "a number") }
        return d
    }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { Float(try decode(Double.self, forKey: key)) }
    func integer<I: FixedWidthInteger>(_ key: Key) throws -> I {
        guard let i = row[key.stringValue].int64, let exact = I(exactly: i) else { throw missing(key, "an integer") }
        return exact
    }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try integer(key) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try integer(key) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try integer(key) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try integer(key) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try integer(key) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try integer(key) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try integer(key) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try integer(key) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try integer(key) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try integer(key) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        try RowDecoder.nested(T.self, from: row[key.stringValue], column: key.stringValue)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        throw SproutError(.internal, "nested containers are JSON columns")
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer { throw SproutError(.internal, "nested containers are JSON columns") }
    func superDecoder() throws -> Decoder { throw SproutError(.internal, "records have no superclass") }
    func superDecoder(forKey key: Key) throws -> Decoder { throw SproutError(.internal, "records have no superclass") }
}
