// swift-tools-version:6.2
import PackageDescription

// Declared before `let package` so it applies to every target (SwiftPM #6597).
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .treatAllWarnings(as: .error),
]

let log = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")

func cLibrary(_ name: String, pkgConfig: String, apt: String) -> Target {
    .systemLibrary(name: name, path: "Libraries/\(name)", pkgConfig: pkgConfig, providers: [.apt([apt])])
}

func library(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .target(name: name, dependencies: dependencies, path: "Libraries/\(name)", swiftSettings: swiftSettings)
}

func service(_ name: String, _ dependencies: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["ServiceKit", "Contracts", "Nats", hummingbird, lifecycle, log] + dependencies,
        path: "Services/\(name)",
        swiftSettings: swiftSettings
    )
}

func tests(_ name: String, _ dependencies: [Target.Dependency]) -> Target {
    .testTarget(name: name, dependencies: dependencies, path: "Tests/\(name)", swiftSettings: swiftSettings)
}

let package = Package(
    name: "sessions",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "control-plane", targets: ["ControlPlane"]),
        .executable(name: "realtime", targets: ["Realtime"]),
        .executable(name: "replicator", targets: ["Replicator"]),
        .executable(name: "waitpoints", targets: ["Waitpoints"]),
        .executable(name: "sessions-bench", targets: ["SessionsBench"]),
        .executable(name: "sessionsctl", targets: ["SessionsCtl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        // Already Hummingbird's: its HTTP part types, for a handler in the server's pipeline.
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        library("Contracts", []),

        cLibrary("CNats", pkgConfig: "libnats", apt: "libnats-dev"),
        cLibrary("CLibPQ", pkgConfig: "libpq", apt: "libpq-dev"),
        cLibrary("CHiredis", pkgConfig: "hiredis", apt: "libhiredis-dev"),
        cLibrary("CCurl", pkgConfig: "libcurl", apt: "libcurl4-openssl-dev"),

        library("ConnectionPool", [nioPosix]),
        library("Nats", ["CNats", "Contracts", nioPosix, log, lifecycle]),
        library("Postgres", ["CLibPQ", "ConnectionPool", "Contracts", nioPosix, log]),
        library("Redis", ["CHiredis", "ConnectionPool", "Contracts", nioPosix, log]),
        library("HTTPClient", ["CCurl", "ConnectionPool", "Contracts", nioPosix, log]),
        library("ClickHouse", ["HTTPClient", "Contracts"]),
        library(
            "ServiceKit",
            [
                "Contracts", "Nats", hummingbird, lifecycle, log, metrics,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ]
        ),

        service(
            "ControlPlane",
            [
                "Postgres", "ClickHouse", "HTTPClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        service(
            "Realtime",
            [
                "HTTPClient", metrics,
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        service("Replicator", ["Postgres", "Redis", "ClickHouse", "HTTPClient", metrics]),
        service("Waitpoints", ["Postgres", "Redis", metrics, .product(name: "Crypto", package: "swift-crypto")]),

        .executableTarget(
            name: "SessionsBench",
            dependencies: [
                "Nats", "HTTPClient", nioPosix,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/SessionsBench",
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "SessionsCtl",
            dependencies: [
                "Contracts", "HTTPClient", "ServiceKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/SessionsCtl",
            swiftSettings: swiftSettings
        ),

        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: swiftSettings),
        tests("ContractsTests", ["Contracts"]),
        tests(
            "NatsTests",
            [
                "Nats", "Contracts", "TestSupport", log, lifecycle,
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ]
        ),
        tests("PostgresTests", ["Postgres", "TestSupport"]),
        tests("RedisTests", ["Redis", "TestSupport"]),
        tests("HTTPClientTests", ["HTTPClient", "ClickHouse", "TestSupport"]),
        tests(
            "ControlPlaneTests",
            [
                "ControlPlane", "ServiceKit", "Contracts", "Postgres", "Nats", "ClickHouse", "HTTPClient",
                "TestSupport",
                hummingbird, log,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        tests(
            "EndToEndTests",
            [
                "ControlPlane", "Realtime", "Replicator", "Waitpoints", "Contracts", "Nats", "HTTPClient",
                "ServiceKit", "Redis", "Postgres", "ClickHouse", "TestSupport", hummingbird, log,
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]
        ),
    ]
)
