import Foundation
import SproutCore

/// One value of a row or of a statement's arguments, as both backends hold
/// it. SQLite keeps a boolean as an integer; PostgreSQL as a boolean: reads
/// accept either where a `Bool` is asked for.
public enum SQLValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case bool(Bool)

    public init(_ value: String?) { self = value.map { .text($0) } ?? .null }
    public init(_ value: Double?) { self = value.map { .real($0) } ?? .null }
    public init(_ value: Int?) { self = value.map { .integer(Int64($0)) } ?? .null }
    public init(_ value: Int64?) { self = value.map { .integer($0) } ?? .null }
    public init(_ value: Bool) { self = .bool(value) }

    public var string: String? {
        if case .text(let s) = self { return s }
        return nil
    }

    public var double: Double? {
        switch self {
        case .real(let d): return d
        case .integer(let i): return Double(i)
        default: return nil
        }
    }

    public var int64: Int64? {
        switch self {
        case .integer(let i): return i
        case .real(let d) where d.rounded() == d && abs(d) < 9.2e18: return Int64(d)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    public var bool: Bool? {
        switch self {
        case .bool(let b): return b
        case .integer(let i): return i != 0
        default: return nil
        }
    }
}

/// A row by column name. Names are compared without case: PostgreSQL folds
/// the unquoted `createdAt` of the shared SQL to `createdat`.
public struct SQLRow: Sendable {
    public let values: [String: SQLValue]
    public init(_ pairs: [(String, SQLValue)]) {
        values = Dictionary(pairs.map { ($0.0.lowercased(), $0.1) }, uniquingKeysWith: { first, _ in first })
    }
    public subscript(_ column: String) -> SQLValue { values[column.lowercased()] ?? .null }
    public func has(_ column: String) -> Bool { values[column.lowercased()] != nil }
}

/// The statements of one read or one write transaction. SQL is written once
/// for both backends: `?` placeholders, unquoted identifiers, and only what
/// SQLite 3.40 and PostgreSQL 15 both understand (`ON CONFLICT`, `RETURNING`,
/// `TRUE`/`FALSE`).
public protocol SQLSession: Sendable {
    func rows(_ sql: String, _ arguments: [SQLValue]) async throws -> [SQLRow]
    func execute(_ sql: String, _ arguments: [SQLValue]) async throws
}

public enum SQLDialect: Sendable { case sqlite, postgres }

/// A catalog's database: SQLite in the data directory or PostgreSQL.
/// `write` is one transaction, serialized with every other write (SQLite's
/// single writer; PostgreSQL takes a transaction-scoped advisory lock), so a
/// read-modify-write in it never loses an update on either backend. A write
/// runs to its end even if the task that asked is cancelled (a commit is
/// never left half done).
public protocol SQLDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// Where it is, without secrets (for messages and logs).
    var location: String { get }
    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) async throws -> T) async throws -> T
    func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) async throws -> T) async throws -> T
    func close() async
}

/// A unique or primary key already held by another row.
public struct SQLUniqueViolation: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "unique constraint violated: \(message)" }
}

extension SQLSession {
    public func rows(_ sql: String, _ arguments: SQLValue...) async throws -> [SQLRow] { try await rows(sql, arguments) }
    public func execute(_ sql: String, _ arguments: SQLValue...) async throws { try await execute(sql, arguments) }

    /// The first column of the first row.
    public func scalar(_ sql: String, _ arguments: SQLValue...) async throws -> SQLValue? {
        try await rows(sql, arguments).first?.values.first?.value
    }

    /// The first column of every row, as text.
    public func strings(_ sql: String, _ arguments: SQLValue...) async throws -> [String] {
        try await rows(sql, arguments).compactMap { $0.values.first?.value.string }
    }

    public func fetchAll<T: StoredRecord>(_ type: T.Type, where condition: String = "TRUE", _ arguments: [SQLValue] = [],
                                          orderBy order: String? = nil, limit: Int? = nil) async throws -> [T] {
        var sql = "SELECT * FROM \(T.table) WHERE \(condition)"
        if let order { sql += " ORDER BY \(order)" }
        if let limit { sql += " LIMIT \(limit)" }
        return try await rows(sql, arguments).map { try RowDecoder.decode(T.self, from: $0) }
    }

    public func fetchOne<T: StoredRecord>(_ type: T.Type, where condition: String, _ arguments: [SQLValue] = [],
                                          orderBy order: String? = nil) async throws -> T? {
        try await fetchAll(type, where: condition, arguments, orderBy: order, limit: 1).first
    }

    public func find<T: StoredRecord>(_ type: T.Type, id: String) async throws -> T? {
        try await fetchOne(type, where: "\(T.key) = ?", [.text(id)])
    }

    public func count(_ table: String, where condition: String, _ arguments: [SQLValue] = []) async throws -> Int {
        Int(try await rows("SELECT COUNT(*) AS n FROM \(table) WHERE \(condition)", arguments).first?["n"].int64 ?? 0)
    }

    /// Inserts `record` (columns that are nil take their default).
    public func insert<T: StoredRecord>(_ record: T) async throws {
        let columns = try RowEncoder.columns(of: record).filter { $0.1 != .null }
        try await execute("INSERT INTO \(T.table) (\(columns.map(\.0).joined(separator: ", "))) VALUES (\(columns.map { _ in "?" }.joined(separator: ", ")))",
                          columns.map(\.1))
    }

    /// Writes every column of `record` over the stored row with its key.
    public func update<T: StoredRecord>(_ record: T) async throws {
        let columns = try RowEncoder.columns(of: record)
        guard let key = columns.first(where: { $0.0 == T.key }) else { throw SproutError(.internal, "\(T.table) record without \(T.key)") }
        let set = columns.filter { $0.0 != T.key }
        try await execute("UPDATE \(T.table) SET \(set.map { "\($0.0) = ?" }.joined(separator: ", ")) WHERE \(T.key) = ?", set.map(\.1) + [key.1])
    }
}

/// A Codable record kept as one row of `table`: each stored property a
/// column of its name; lists, maps and nested values JSON text.
public protocol StoredRecord: Codable, Sendable {
    static var table: String { get }
    /// Its primary key column (one text column).
    static var key: String { get }
}

extension StoredRecord {
    public static var key: String { "id" }
}

/// Rewrites `?` placeholders as PostgreSQL's `$1`, `$2`, … (not inside quotes).
public func numberedPlaceholders(_ sql: String) -> String {
    var out = ""
    var n = 0
    var quoted = false
    for c in sql {
        if c == "'" { quoted.toggle() }
        if c == "?" && !quoted {
            n += 1
            out += "$\(n)"
        } else {
            out.append(c)
        }
    }
    return out
}
