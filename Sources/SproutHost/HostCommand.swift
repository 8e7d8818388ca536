import Foundation
import SproutCore
import SproutSystem
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Runs host tools (`ip`, `nft`, `runsc`, `cp`, `debootstrap`) as supervised
/// children, over swift-subprocess: a minimal environment, their own process
/// group, no inherited descriptors, output captured, and a deadline after
/// which they get SIGTERM and then SIGKILL. Nothing here blocks a thread of
/// Swift's cooperative pool.
public enum HostCommand {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    public static let searchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    /// The environment every host command gets (and children spawned by hand use too).
    public static let environment = ["PATH=\(searchPath)", "LANG=C.UTF-8"]

    /// How long a host command may take unless its caller says otherwise.
    public static let defaultTimeout: Duration = .seconds(60)

    /// Output beyond this is an error (no host tool Sprout runs prints this much).
    static let outputLimit = 16 << 20

    /// Runs `argv` to completion and returns its status and output. Throws if
    /// it cannot start or does not finish within `timeout`.
    /// `environment` replaces the minimal default one (tests run the CLI with their own).
    public static func capture(
        _ argv: [String], input: String? = nil, environment: [String]? = nil, timeout: Duration = defaultTimeout
    ) async throws -> Output {
        let executable = try resolve(argv)
        let arguments = Arguments(Array(argv.dropFirst()))
        let environmentValue = environment.map(Self.environmentValue) ?? Self.environmentValue
        // Input goes in as an in-memory file the child reads as its stdin,
        // not through swift-subprocess's input writer: 1.0's writer stops the
        // process (`FileDescriptor … was not closed`) when a cancellation
        // lands before its write ends, as a cancelled build's network set-up did.
        let inputFile = try input.map { try Descriptor.memoryFile("sprout-input", containing: Array($0.utf8)) }
        defer { inputFile.map(Descriptor.close) }
        let result = try await withDeadline(timeout, argv) {
            if let inputFile {
                return try await Subprocess.run(
                    .path(executable), arguments: arguments, environment: environmentValue, platformOptions: options,
                    input: .fileDescriptor(FileDescriptor(rawValue: inputFile), closeAfterSpawningProcess: false),
                    output: .string(limit: outputLimit), error: .string(limit: outputLimit))
            }
            return try await Subprocess.run(
                .path(executable), arguments: arguments, environment: environmentValue, platformOptions: options,
                output: .string(limit: outputLimit), error: .string(limit: outputLimit))
        }
        return Output(status: status(result.terminationStatus), stdout: result.standardOutput, stderr: result.standardError)
    }

    /// Runs `argv` and throws a clear error unless it exits 0. Returns its output.
    @discardableResult
    public static func run(_ argv: [String], input: String? = nil, timeout: Duration = defaultTimeout) async throws -> String {
        let output = try await capture(argv, input: input, timeout: timeout)
        guard output.status == 0 else {
            let detail = output.stderr.isEmpty ? output.stdout : output.stderr
            throw SproutError(.internal, "\(argv.prefix(3).joined(separator: " ")) failed (exit \(output.status)): \(detail.trimmed)")
        }
        return output.stdout
    }

    /// Runs a command whose children outlive it (`runsc run --detach`): its
    /// output goes to /dev/null, so nothing it leaves running holds a pipe of
    /// ours open. Throws unless it exits 0.
    public static func runDetached(_ argv: [String], timeout: Duration = defaultTimeout) async throws {
        let executable = try resolve(argv)
        let result = try await withDeadline(timeout, argv) {
            try await Subprocess.run(
                .path(executable), arguments: Arguments(Array(argv.dropFirst())), environment: environmentValue,
                platformOptions: options, output: .discarded, error: .discarded)
        }
        guard result.terminationStatus.isSuccess else {
            throw SproutError(.internal, "\(argv.prefix(3).joined(separator: " ")) failed (\(result.terminationStatus))")
        }
    }

    // MARK: Pieces

    static func resolve(_ argv: [String]) throws -> FilePath {
        guard let first = argv.first, let path = Spawn.resolveExecutable(first, searchPath: searchPath) else {
            throw SproutError(.unavailable, "\(argv.first ?? "(nothing)") is not installed")
        }
        return FilePath(path)
    }

    static var environmentValue: Subprocess.Environment { environmentValue(environment) }

    /// `NAME=value` entries as swift-subprocess's raw environment. Each entry
    /// must end with a NUL: swift-subprocess 1.0.2 hands the bytes to
    /// `strdup`, which otherwise reads past them (the child saw garbage after
    /// every value: a wrong API key, a PATH entry that does not exist).
    static func environmentValue(_ entries: [String]) -> Subprocess.Environment {
        .custom(entries.map { Array($0.utf8) + [0] })
    }

    /// Own process group; on timeout or cancellation SIGTERM, then SIGKILL after 2 s.
    static var options: PlatformOptions {
        var options = PlatformOptions()
        options.processGroupID = 0
        options.teardownSequence = [.gracefulShutDown(allowedDurationToNextStep: .seconds(2))]
        return options
    }

    static func status(_ termination: TerminationStatus) -> Int32 {
        switch termination {
        case .exited(let code): code
        case .signaled(let signal): 128 + signal
        }
    }

    /// Runs `body`, cancelling it (which tears the process down) after `timeout`.
    static func withDeadline<T: Sendable>(
        _ timeout: Duration, _ argv: [String], _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw SproutError(.timeout, "\(argv.prefix(3).joined(separator: " ")) did not finish within \(timeout.components.seconds) s")
            }
            return value
        }
    }
}
