import Foundation
import Logging
import PostgresNIO
import SproutCore

/// A catalog's database in PostgreSQL (`--catalog postgres://…`). Every
/// write transaction first takes one advisory lock, so writes are as
/// serialized as SQLite's and a read-modify-write never loses an update.
public final class PostgresSQLDatabase: SQLDatabase {
    public let dialect = SQLDialect.postgres
    public let location: String
    let client: PostgresClient
    let logger: Logger
    private let runner: Task<Void, Never>
    /// The advisory lock every write holds (distinct from the fleet catalog's migration lock).
    static let writeLock: Int64 = 7263012

    public init(url: String, logger: Logger) async throws {
        location = ClusterCatalog.redacted(url)
        let configuration = try ClusterCatalog.configuration(url)
        // Reachable, or a clear error now rather than at the first request.
        try await ClusterCatalog.probe(url, logger: logger)
        client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        let client = self.client
        runner = Task { await client.run() }
    }

    public func close() async {
        runner.cancel()
        await runner.value
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) async throws -> T) async throws -> T {
        let logger = self.logger
        return try await Self.mapped {
            try await self.client.withConnection { connection in try await body(Session(connection: connection, logger: logger)) }
        }
    }

    public func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) async throws -> T) async throws -> T {
        let (client, logger) = (self.client, self.logger)
        // Its own task: a cancelled caller does not cut a transaction short.
        return try await Task {
            try await Self.mapped {
                try await client.withTransaction(logger: logger) { connection in
                    let session = Session(connection: connection, logger: logger)
                    try await session.execute("SELECT pg_advisory_xact_lock(\(Self.writeLock))", [])
                    return try await body(session)
                }
            }
        }.value
    }

    /// PostgreSQL's unique violation as `SQLUniqueViolation`, other server
    /// errors with their message, and what a transaction's body threw as itself.
    static func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw Self.mapped(error)
        }
    }

    static func mapped(_ error: any Error) -> any Error {
        if let error = error as? PostgresTransactionError,
           let cause = error.closureError ?? error.beginError ?? error.commitError ?? error.rollbackError {
            return mapped(cause)
        }
        guard let error = error as? PSQLError else { return error }
        if error.serverInfo?[.sqlState] == PostgresError.Code.uniqueViolation.raw {
            return SQLUniqueViolation(error.serverInfo?[.message] ?? "duplicate key")
        }
        return SproutError(.unavailable, "catalog: \(ClusterCatalog.describe(error))")
    }

    struct Session: SQLSession {
        let connection: PostgresConnection
        let logger: Logger

        func rows(_ sql: String, _ arguments: [SQLValue]) async throws -> [SQLRow] {
            try await PostgresSQLDatabase.mapped {
                var out: [SQLRow] = []
                for try await row in try await connection.query(try Self.query(sql, arguments), logger: logger) {
                    out.append(SQLRow(try row.map { ($0.columnName, try Self.value($0)) }))
                }
                return out
            }
        }

        func execute(_ sql: String, _ arguments: [SQLValue]) async throws {
            _ = try await rows(sql, arguments)
        }

        static func query(_ sql: String, _ arguments: [SQLValue]) throws -> PostgresQuery {
            var binds = PostgresBindings(capacity: arguments.count)
            for argument in arguments {
                switch argument {
                case .null: binds.appendNull()
                case .integer(let i): binds.append(i)
                case .real(let d): binds.append(d)
                case .text(let s): binds.append(s)
                case .bool(let b): binds.append(b)
                }
            }
            return PostgresQuery(unsafeSQL: numberedPlaceholders(sql), binds: binds)
        }

        static func value(_ cell: PostgresCell) throws -> SQLValue {
            guard cell.bytes != nil else { return .null }
            switch cell.dataType {
            case .bool: return .bool(try cell.decode(Bool.self))
            case .int2, .int4, .int8: return .integer(try cell.decode(Int64.self))
            case .float4, .float8: return .real(try cell.decode(Double.self))
            case .numeric: return .real(Double(try cell.decode(String.self)) ?? 0)
            default: return .text(try cell.decode(String.self))
            }
        }
    }
}
