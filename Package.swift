// swift-tools-version: 6.2
import PackageDescription

/// Settings every Swift target shares: Swift 6 language mode (the tools-version default)
/// and warnings treated as errors.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "swift-mmoe",
    platforms: [.macOS(.v15)],
    products: [
        /// What an embedding Swift tool imports to run models: spec, runtime, native format.
        /// It never links libhdf5.
        .library(name: "MMoE", targets: ["MMoE", "MMoECore", "MMoERuntime", "MMoEFormat"]),
        /// Conversion: importers and the HDF5 codec (links libhdf5 and zlib).
        .library(name: "MMoEConversion", targets: ["MMoEImport", "MMoEHDF5"]),
        .executable(name: "mmoe-convert", targets: ["mmoe-convert"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `swift package generate-documentation` (scripts/docs.sh): DocC for the public modules.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // MARK: C libraries (implementation details: tiny system-library targets with shims)
        .systemLibrary(
            name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"]), .brew(["hdf5"])]),
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]),

        /// The packed AVX2/FMA matrix-multiply kernel (runtime CPU dispatch; BLAS elsewhere).
        .target(name: "CMMoEKernels", path: "Sources/CMMoEKernels"),

        // MARK: Layers (dependencies point downwards only)
        .target(name: "MMoECore", swiftSettings: strict),
        .target(name: "MMoERuntime", dependencies: ["MMoECore", "CBLAS", "CMMoEKernels"], swiftSettings: strict),
        .target(name: "MMoEFormat", dependencies: ["MMoECore", "MMoERuntime", "CMMoEKernels"], swiftSettings: strict),
        /// The umbrella module: `import MMoE` re-exports the three above.
        .target(name: "MMoE", dependencies: ["MMoECore", "MMoERuntime", "MMoEFormat"], swiftSettings: strict),
        .target(name: "MMoEHDF5", dependencies: ["MMoECore", "MMoERuntime", "MMoEFormat", "CHDF5"], swiftSettings: strict),
        .target(
            name: "MMoEImport",
            dependencies: ["MMoECore", "MMoERuntime", "MMoEFormat", "MMoEHDF5", "CZlib"],
            swiftSettings: strict),
        .executableTarget(
            name: "mmoe-convert",
            dependencies: [
                "MMoECore", "MMoERuntime", "MMoEFormat", "MMoEHDF5", "MMoEImport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // MARK: Tests
        .target(
            name: "MMoETestSupport", dependencies: ["MMoECore", "MMoERuntime"],
            path: "Tests/MMoETestSupport", swiftSettings: strict),
        .testTarget(
            name: "MMoECoreTests", dependencies: ["MMoECore", "MMoETestSupport"], swiftSettings: strict),
        .testTarget(
            name: "MMoERuntimeTests", dependencies: ["MMoECore", "MMoERuntime", "MMoETestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "MMoEFormatTests",
            dependencies: ["MMoECore", "MMoERuntime", "MMoEFormat", "MMoETestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "MMoEHDF5Tests",
            dependencies: ["MMoECore", "MMoERuntime", "MMoEFormat", "MMoEHDF5", "MMoETestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "MMoEConvertTests",
            dependencies: ["MMoECore", "MMoERuntime", "MMoEFormat", "MMoEImport", "mmoe-convert", "MMoETestSupport"],
            swiftSettings: strict),
    ]
)
