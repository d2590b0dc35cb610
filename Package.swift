// swift-tools-version: 6.1
import PackageDescription

#if arch(x86_64)
let inferenceSettings: [SwiftSetting] = [
    .unsafeFlags(["-Xcc", "-march=haswell", "-target-cpu", "haswell"]),
    .unsafeFlags(["-O", "-enforce-exclusivity=unchecked"], .when(configuration: .debug)),
]
#else
let inferenceSettings: [SwiftSetting] = [
    .unsafeFlags(["-O", "-enforce-exclusivity=unchecked"], .when(configuration: .debug)),
]
#endif

// Arrows point down only:
// modelgate -> Platform -> Gateway -> {Tenancy, Metering, Upstream -> Inference} -> {Postgres, Encryption} -> C shims
let package = Package(
    name: "modelgate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "modelgate", targets: ["modelgate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        // The Prometheus backend of swift-metrics, for GET /metrics.
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
    ],
    targets: [
        // MARK: System libraries (module map + one-line shim, nothing else)
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CPrefetch"),
        // Our own C: the AVX-512 kernels Swift cannot spell (AVX512-BF16 products, AVX512-VNNI int8
        // products for the greedy head's approximate copy, float32 products on 512-bit
        // registers), compiled per function for their extension and chosen at run time.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),

        // MARK: Foundations
        .target(
            name: "Postgres",
            dependencies: [
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "Encryption",
            dependencies: ["COpenSSL"]
        ),
        // The hash-chained audit log: Tenancy and Metering both append to it.
        .target(
            name: "Audit",
            dependencies: ["Postgres", "Encryption"]
        ),
        .target(
            name: "Tenancy",
            dependencies: [
                "Postgres",
                "Encryption",
                "Audit",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Knows nothing of Tenancy: it meters a `MeteredCaller`, and publishes limit changes
        // through a `LimitChangeNotifier` the composition root supplies.
        .target(
            name: "Metering",
            dependencies: [
                "Postgres",
                "Encryption",
                "Audit",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Inference knows nothing of tenants or HTTP. Its kernels are compiled optimised even in
        // debug builds (tests run real models), for a CPU with AVX2 and FMA.
        .target(
            name: "Inference",
            dependencies: ["CBLAS", "CTurboJPEG", "CPNG", "CPrefetch", "CKernels"],
            swiftSettings: inferenceSettings
        ),
        // The upstream engine: models served by remote OpenAI-compatible servers. Above Inference
        // (it is an engine like the native ones), below the Gateway: it knows no tenant, and is
        // handed the upstream's credential by its caller.
        .target(
            name: "Upstream",
            dependencies: [
                "Inference",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Plain SQL migrations, embedded into the binary so it runs from any directory.
        .target(
            name: "SchemaMigrations",
            dependencies: ["Postgres"],
            path: "sql",
            exclude: ["README.md"],
            resources: [.embedInCode("migrations")]
        ),

        // MARK: Product
        .target(
            name: "Gateway",
            dependencies: [
                "Audit",
                "Tenancy",
                "Metering",
                "Inference",
                "Upstream",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            resources: [.embedInCode("OpenAPI/openapi.json")]
        ),
        .target(
            name: "Platform",
            dependencies: [
                "Postgres",
                "Audit",
                "Tenancy",
                "Metering",
                "Inference",
                "Upstream",
                "Encryption",
                "SchemaMigrations",
                "Gateway",
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "modelgate",
            dependencies: [
                "Platform",
                "Inference",
                "Postgres",
                "Audit",
                "Tenancy",
                "Metering",
                "Encryption",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),

        // MARK: Benchmarks (bench/run; not tests)
        .executableTarget(
            name: "modelgate-bench",
            dependencies: ["Postgres", "Encryption", "Inference", "Metering", "Tenancy", "Audit", "SchemaMigrations"],
            path: "bench/Sources/modelgate-bench",
            swiftSettings: inferenceSettings
        ),

        // MARK: Tests
        .target(
            name: "TestSupport",
            dependencies: ["Postgres", "SchemaMigrations", "Tenancy", "Encryption", "Audit", "Metering"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "PostgresTests",
            dependencies: ["Postgres", "TestSupport"]
        ),
        .testTarget(
            name: "EncryptionTests",
            dependencies: ["Encryption"]
        ),
        .testTarget(
            name: "InferenceTests",
            dependencies: ["Inference", "TestSupport", "CKernels"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "MeteringTests",
            dependencies: ["Metering", "Tenancy", "Audit", "Postgres", "Encryption", "SchemaMigrations", "TestSupport"]
        ),
        .testTarget(
            name: "TenancyTests",
            dependencies: ["Tenancy", "Audit", "Encryption", "Postgres", "TestSupport"]
        ),
        .testTarget(
            name: "GatewayTests",
            dependencies: [
                "Gateway", "Tenancy", "Audit", "Inference", "Metering", "TestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "UpstreamTests",
            dependencies: ["Upstream", "Inference", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "PlatformTests",
            dependencies: ["Platform", "SchemaMigrations", "TestSupport", "Postgres"]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "TestSupport",
                "Tenancy",
                "Audit",
                "Metering",
                "Inference",
                "Postgres",
                "modelgate",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            exclude: ["Python", "Fixtures"]  // read by the tests from the source tree, not bundled resources
        ),
    ]
)
