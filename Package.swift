// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "sprout",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sprout-agent", targets: ["sprout-agent"]),
        .library(name: "SproutClient", targets: ["SproutClient"]),
    ],
    targets: [
        // Ids, the one error type, hashing helpers. No I/O.
        .target(name: "SproutCore"),
        // Thin, safe wrappers over the POSIX calls everything else needs:
        // descriptors, sockets, threads, locks, process spawning.
        .target(name: "CSprout"),
        .target(name: "SproutSystem", dependencies: ["SproutCore", "CSprout"]),
        // The versioned host <-> agent wire format, defined once.
        .target(name: "SproutAgentProtocol", dependencies: ["SproutCore", "SproutSystem"]),
        // The in-sandbox daemon as a library; `sprout-agent` is its thin executable.
        .target(name: "SproutAgent", dependencies: ["SproutCore", "SproutSystem", "SproutAgentProtocol"]),
        .executableTarget(name: "sprout-agent", dependencies: ["SproutAgent", "CSprout"]),
        // Typed Swift client for the agent protocol (and, later, the REST API).
        .target(name: "SproutClient", dependencies: ["SproutCore", "SproutSystem", "SproutAgentProtocol"]),
        // Loopback micro-benchmark of the agent protocol.
        .executableTarget(name: "sprout-agent-bench", dependencies: ["SproutClient"]),
        .testTarget(name: "SproutAgentTests", dependencies: ["SproutAgent", "SproutClient", "SproutSystem"]),
    ]
)
