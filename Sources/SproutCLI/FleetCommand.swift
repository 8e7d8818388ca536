import ArgumentParser
import Foundation
import Glibc
import SproutAPI
import SproutClient
import SproutCluster
import SproutCore
import SproutS3
import SproutServer
import SproutSystem

/// `sprout fleet up N|down`: a whole fleet on this machine, to try it.
struct FleetCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet", abstract: "Try a fleet on this machine: PostgreSQL, an S3 server, an API server and N nodes.",
        subcommands: [FleetUp.self, FleetDown.self])
}

struct FleetUp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up", abstract: "Start PostgreSQL, an S3 server (OpenStack Swift), one API server and N nodes here; print the API's URL and key.")
    @Argument(help: "How many nodes.") var nodes = 3
    @Option(help: "Where everything lives (removed by `sprout fleet down`).") var directory = LocalFleet.defaultDirectory
    @Option(help: "The nodes' runtime: gvisor or runc.") var runtime = "gvisor"
    @Option(help: "The nodes' cache of built-in envs (shared: each builds nothing another built).") var cache = "/var/cache/sprout"
    @Option(help: "The API server's port.") var apiPort = 7070

    func run() async throws {
        guard getuid() == 0 else { throw SproutError(.forbidden, "sprout fleet up needs root (its nodes run sandboxes)") }
        guard (1...16).contains(nodes) else { throw SproutError(.invalidArgument, "a fleet here has 1 to 16 nodes") }
        let fleet = try await LocalFleet.start(directory: directory, nodes: nodes, runtime: runtime, cache: cache, apiPort: apiPort)
        print("""
            fleet up in \(directory): \(nodes) node(s), PostgreSQL at \(fleet.state.catalog), S3 at \(fleet.state.store)
            export SPROUT_API_URL=\(fleet.state.apiURL)
            export SPROUT_API_KEY=\(fleet.state.adminKey)
            (sprout fleet down stops and removes it all)
            """)
    }
}

struct FleetDown: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop the fleet `sprout fleet up` started and remove it all.")
    @Option(help: "Where it lives.") var directory = LocalFleet.defaultDirectory

    func run() async throws {
        try await LocalFleet.stop(directory: directory)
        print("fleet in \(directory) stopped and removed")
    }
}

/// A fleet on one machine: every part a process of its own, started
/// detached (it outlives the command), its state in `DIRECTORY/fleet.json`.
struct LocalFleet {
    static let defaultDirectory = "/tmp/sprout-fleet"

    struct State: Codable {
        var catalog: String
        var store: String
        var apiURL: String
        var adminKey: String
        var api: pid_t
        var nodes: [pid_t]
        var s3: [pid_t]
    }

    let state: State

    static func start(directory: String, nodes: Int, runtime: String, cache: String, apiPort: Int) async throws -> LocalFleet {
        if FileSystem.exists(directory + "/fleet.json") {
            throw SproutError(.conflict, "a fleet is up in \(directory) already (sprout fleet down --directory \(directory))")
        }
        try FileSystem.makeDirectories(directory + "/postgres", mode: 0o755)
        try FileSystem.makeDirectories(directory + "/s3", mode: 0o700)
        var started: [pid_t] = []
        var s3: LocalS3?
        var postgres: LocalPostgres?
        do {
            postgres = try await LocalPostgres(directory: directory + "/postgres")
            s3 = try await LocalS3(directory: directory + "/s3")
            let catalog = postgres!.url()
            let store = s3!.location(bucket: "sprout-fleet").description
            let token = directory + "/cluster-token"
            try FileSystem.writeAtomically(token, Identifiers.random(length: 40) + "\n", mode: 0o600)
            let credentials = directory + "/s3-credentials"
            try FileSystem.writeAtomically(
                credentials, "AWS_ACCESS_KEY_ID=\(s3!.credentials.accessKey)\nAWS_SECRET_ACCESS_KEY=\(s3!.credentials.secretKey)\n", mode: 0o600)
            let (api, boundPort) = try await serve(["--port", "\(apiPort)", "--role", "api", "--catalog", catalog, "--cluster-token", token], in: directory + "/api")
            started.append(api)
            var nodePIDs: [pid_t] = []
            for index in 1...nodes {
                // Each node takes a free port and registers it (--advertise without one).
                let (pid, _) = try await serve([
                    "--port", "0", "--role", "node", "--catalog", catalog, "--cluster-token", token, "--advertise", "http://127.0.0.1",
                    "--store", store, "--store-credentials", credentials, "--runtime", runtime, "--cache", cache,
                    // Built-in envs are built on first use, not by every node at once.
                    "--no-prebuild-envs",
                ], in: directory + "/node-\(index)")
                started.append(pid)
                nodePIDs.append(pid)
            }
            let key = (try String(contentsOfFile: directory + "/api/admin.key", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)
            let state = State(catalog: catalog, store: store, apiURL: "http://127.0.0.1:\(boundPort)", adminKey: key, api: api, nodes: nodePIDs,
                              s3: s3!.processIDs)
            try FileSystem.writeAtomically(directory + "/fleet.json", Array(try JSONEncoder().encode(state)), mode: 0o600)
            return LocalFleet(state: state)
        } catch {
            for pid in started.reversed() { Spawn.terminate(pid, graceSeconds: 60) }
            s3?.stop()
            await postgres?.stop()
            try? FileSystem.removeTree(directory)
            throw error
        }
    }

    static func stop(directory: String) async throws {
        guard let bytes = try? Descriptor.readFile(directory + "/fleet.json"), let state = try? JSONDecoder().decode(State.self, from: Data(bytes)) else {
            throw SproutError(.notFound, "no fleet is up in \(directory)")
        }
        // The admin's sandboxes first, paused ones too (a node's stop keeps those for its restart).
        if let client = try? SproutAPIClient(url: state.apiURL, apiKey: state.adminKey) {
            for sandbox in (try? await client.sandboxes()) ?? [] { _ = try? await client.killSandbox(sandbox.id) }
        }
        for pid in state.nodes + [state.api] { Spawn.stopDetached(pid, pollEvery: 50_000) }
        LocalS3.stop(processIDs: state.s3)
        await LocalPostgres.stop(directory: directory + "/postgres")
        try FileSystem.removeTree(directory)
    }

    /// Starts `sprout server ARGS --data DATA` detached; returns its pid and port once it listens.
    static func serve(_ args: [String], in data: String) async throws -> (pid_t, Int) {
        try FileSystem.makeDirectories(data, mode: 0o700)
        let logPath = data + "/server.log"
        let log = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw SproutError.system("open \(logPath)") }
        defer { close(log) }
        var options = Spawn.Options()
        options.stdout = log
        options.stderr = log
        let pid = try Spawn.spawn(path: OwnExecutable.path ?? "sprout", argv: ["sprout", "server", "--data", data] + args,
                                  env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"], options: options)
        let (port, text) = try await Spawn.awaitLog(logPath, of: pid, every: .milliseconds(50)) { text in
            text.split(separator: "\n").first { $0.hasPrefix("sprout server listening on ") }.flatMap { Int($0.split(separator: ":").last ?? "") }
        }
        guard let port else { throw SproutError(.unavailable, "sprout server \(args.prefix(2).joined(separator: " ")) did not start: \(text.suffix(1500))") }
        return (pid, port)
    }
}
