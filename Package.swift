// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "sprout",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sprout", targets: ["sprout"]),
        .executable(name: "sprout-agent", targets: ["sprout-agent"]),
        .library(name: "SproutClient", targets: ["SproutClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        // Already built for async-http-client and swift-nio-extras: HTTPS serving and the self-signed certificate.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", from: "1.5.0"),
        .package(url: "https://github.com/vapor/multipart-kit.git", from: "4.7.1"),
        // envd's messages (E2B's process and filesystem services), generated from proto/envd.
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        // The fleet's catalog: nodes, their leases and placement in PostgreSQL.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // Ids, the one error type. No I/O; linked into the static agent.
        .target(name: "SproutCore"),
        // The few GNU/Linux calls Swift's Glibc module does not expose.
        .target(name: "CSprout"),
        // Thin, safe wrappers over the POSIX calls everything else needs:
        // descriptors, sockets, threads, locks, process spawning.
        .target(name: "SproutSystem", dependencies: ["SproutCore", "CSprout"]),
        // Blocking calls off Swift's cooperative pool, on a SwiftNIO thread pool (`onThread`).
        .target(name: "SproutBlocking", dependencies: [.product(name: "NIOPosix", package: "swift-nio")]),
        // The versioned host <-> agent wire format, defined once.
        .target(name: "SproutAgentProtocol", dependencies: ["SproutCore", "SproutSystem"]),
        // The in-sandbox daemon as a library; `sprout-agent` is its thin executable.
        .target(name: "SproutAgent", dependencies: ["SproutCore", "SproutSystem", "SproutAgentProtocol", "CSprout"]),
        .executableTarget(name: "sprout-agent", dependencies: ["SproutAgent", "CSprout"]),
        // Connections into sandboxes: the agent client, and the raw HTTP and
        // WebSocket connections of port previews (they close with a reset).
        .target(name: "SproutAgentClient", dependencies: ["SproutCore", "SproutSystem", "SproutAgentProtocol", "SproutBlocking"]),
        // The REST API's bodies, shared by the server and the client.
        .target(name: "SproutAPI", dependencies: ["SproutCore"]),
        // `sprout.toml`: a TOML subset with line-numbered errors.
        .target(name: "SproutConfig", dependencies: ["SproutCore", "SproutAPI"]),
        // Host commands (ip, nft, runsc, cp) with timeouts, over swift-subprocess.
        .target(name: "SproutHost", dependencies: [
            "SproutCore", "SproutSystem",
            .product(name: "Subprocess", package: "swift-subprocess"),
        ]),
        // Content-addressed layers: freezing a sandbox's writable layer,
        // deterministic digests, deduplication; memory images in chunks.
        .target(name: "SproutStore", dependencies: [
            "SproutCore", "SproutSystem", "SproutHost", "CSprout", "SproutBlocking",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        // Image pulls by the OCI distribution protocol, over async-http-client.
        .target(name: "SproutRegistry", dependencies: [
            "SproutCore", "SproutSystem", "SproutStore", "SproutHost",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOFoundationCompat", package: "swift-nio"),
        ]),
        // The object store's client: S3 signed with SigV4 over async-http-client,
        // and a local S3 server (OpenStack Swift's s3api) for tests and trials.
        .target(name: "SproutS3", dependencies: [
            "SproutCore", "SproutSystem", "SproutHost", "SproutStore",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOFoundationCompat", package: "swift-nio"),
        ]),
        // The fleet's shared state in PostgreSQL (postgres-nio): nodes with
        // leases fenced by epochs, and placement reserved atomically; and a
        // local PostgreSQL server for tests and trials.
        .target(name: "SproutCluster", dependencies: [
            "SproutCore", "SproutSystem", "SproutHost",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // SandboxRuntime and its drivers (runsc, runc): OCI bundles, overlay
        // mounts, network namespaces and firewall sets, cgroups.
        .target(name: "SproutRuntime", dependencies: [
            "SproutCore", "SproutSystem", "SproutHost", "SproutBlocking",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // envd's messages, generated by `make proto` from proto/envd/*.proto
        // (committed, so a build needs neither protoc nor the plugin).
        .target(name: "EnvdProto", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        // The server: catalog, lifecycle state machines, services, routes.
        .target(name: "SproutServer", dependencies: [
            "SproutCore", "SproutSystem", "SproutHost", "SproutRuntime", "SproutAgentClient", "SproutAPI",
            "SproutAgentProtocol", "SproutStore", "SproutConfig", "SproutBlocking", "EnvdProto", "SproutRegistry", "SproutS3", "SproutCluster",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "MultipartKit", package: "multipart-kit"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
        ]),
        // Typed Swift client for the REST API: async-http-client for requests,
        // hummingbird-websocket's client for terminals.
        .target(name: "SproutClient", dependencies: [
            "SproutCore", "SproutSystem", "SproutAPI", "SproutAgentProtocol",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOTLS", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The `sprout` command line: one file per command.
        .target(name: "SproutCLI", dependencies: [
            "SproutCore", "SproutSystem", "SproutHost", "SproutClient", "SproutAPI", "SproutServer", "SproutAgentProtocol",
            "SproutAgentClient", "SproutRuntime", "SproutStore", "SproutConfig", "SproutBlocking", "SproutRegistry", "SproutS3", "SproutCluster",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "sprout", dependencies: ["SproutCLI"]),
        // Loopback micro-benchmark of the agent protocol.
        .executableTarget(name: "sprout-agent-bench", dependencies: ["SproutAgentClient"]),
        // Fast tier, no root: the agent on loopback.
        .testTarget(name: "SproutAgentTests", dependencies: ["SproutAgent", "SproutAgentClient", "SproutSystem", "SproutHost"]),
        // Fast tier, no root: state machines, planners, config parsing, and the
        // HTTP layer through Hummingbird's test client on a fake runtime.
        .testTarget(name: "SproutUnitTests", dependencies: [
            "SproutCore", "SproutConfig", "SproutServer", "SproutAPI", "SproutRuntime", "SproutAgentClient", "SproutSystem",
            "SproutAgentProtocol", "SproutStore", "SproutHost", "SproutBlocking", "EnvdProto", "SproutRegistry", "SproutS3", "SproutCluster",
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
        // Real server binary, real runsc and runc, real namespaces: needs root.
        .testTarget(name: "SproutIntegrationTests", dependencies: [
            "SproutClient", "SproutAPI", "SproutAgentClient", "SproutSystem", "SproutHost", "SproutCore", "SproutRuntime",
            "SproutAgentProtocol", "SproutServer", "SproutStore", "SproutBlocking", "SproutRegistry", "SproutS3", "SproutCluster",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
        ]),
    ]
)
