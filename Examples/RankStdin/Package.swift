// swift-tools-version: 6.2
import PackageDescription

// An example of embedding the swift-mmoe runtime: `import MMoE` only (no libhdf5, no converter).
let package = Package(
    name: "RankStdin",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-mmoe", path: "../..")],
    targets: [
        .executableTarget(
            name: "rank-stdin",
            dependencies: [.product(name: "MMoE", package: "swift-mmoe")],
            swiftSettings: [.treatAllWarnings(as: .error)])
    ]
)
