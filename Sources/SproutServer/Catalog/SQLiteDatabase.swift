import Foundation
import GRDB
import SproutCluster
import SproutCore

/// A catalog's database in SQLite (WAL), the default: `sprout.db` in the
/// data directory. Reads run on GRDB's reader connections and threads,
/// never on Swift's cooperative pool; a write holds `writer` (one at a time)
/// and runs its statements in one `BEGIN IMMEDIATE` transaction on GRDB's
/// writer connection, so its body may suspend between statements.
final class SQLiteDatabase: SQLDatabase {
    let dialect = SQLDialect.sqlite
    let location: String
    let pool: DatabasePool
    private let writer = AsyncLock()

    init(path: String) throws {
        location = path
        var config = Configuration()
        config.busyMode = .timeout(5)
        // A write's transaction spans several accesses of the writer
        // connection (its body is async); `writer` keeps every other write out.
        config.allowsUnsafeTransactions = true
        // WAL with synchronous=NORMAL: a commit survives a crash of the
        // server (SIGKILL included); only a power cut can lose the last ones.
        config.prepareDatabase { try $0.execute(sql: "PRAGMA synchronous = NORMAL") }
        pool = try DatabasePool(path: path, configuration: config)
    }

    func close() async {}

    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) async throws -> T) async throws -> T {
        try await body(Session(pool: pool, writing: false))
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) async throws -> T) async throws -> T {
        let (pool, writer) = (self.pool, self.writer)
        // Its own task: a cancelled caller does not leave a transaction open.
        return try await Task {
            try await writer.withLock {
                try await pool.writeWithoutTransaction { try $0.execute(sql: "BEGIN IMMEDIATE") }
                do {
                    let result = try await body(Session(pool: pool, writing: true))
                    try await pool.writeWithoutTransaction { try $0.execute(sql: "COMMIT") }
                    return result
                } catch {
                    try? await pool.writeWithoutTransaction { try $0.execute(sql: "ROLLBACK") }
                    throw error
                }
            }
        }.value
    }

    struct Session: SQLSession {
        let pool: DatabasePool
        let writing: Bool

        func rows(_ sql: String, _ arguments: [SQLValue]) async throws -> [SQLRow] {
            let bound = StatementArguments(arguments.map(Self.databaseValue))
            let fetch: @Sendable (Database) throws -> [SQLRow] = { db in
                try Row.fetchAll(db, sql: sql, arguments: bound).map { row in
                    SQLRow(row.columnNames.map { name in (name, Self.value(row[name] as DatabaseValue)) })
                }
            }
            return try await Self.mapped { writing ? try await pool.writeWithoutTransaction(fetch) : try await pool.read(fetch) }
        }

        func execute(_ sql: String, _ arguments: [SQLValue]) async throws {
            let bound = StatementArguments(arguments.map(Self.databaseValue))
            try await Self.mapped {
                try await pool.writeWithoutTransaction { try $0.execute(sql: sql, arguments: bound) }
            }
        }

        static func mapped<T>(_ body: () async throws -> T) async throws -> T {
            do {
                return try await body()
            } catch let error as DatabaseError where error.extendedResultCode == .SQLITE_CONSTRAINT_UNIQUE
                || error.extendedResultCode == .SQLITE_CONSTRAINT_PRIMARYKEY {
                throw SQLUniqueViolation(error.message ?? "duplicate key")
            }
        }

        static func databaseValue(_ value: SQLValue) -> DatabaseValue {
            switch value {
            case .null: return .null
            case .integer(let i): return i.databaseValue
            case .real(let d): return d.databaseValue
            case .text(let s): return s.databaseValue
            case .bool(let b): return b.databaseValue
            }
        }

        static func value(_ value: DatabaseValue) -> SQLValue {
            switch value.storage {
            case .null: return .null
            case .int64(let i): return .integer(i)
            case .double(let d): return .real(d)
            case .string(let s): return .text(s)
            case .blob(let data): return .text(String(decoding: data, as: UTF8.self))
            }
        }
    }
}
