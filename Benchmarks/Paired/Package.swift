// swift-tools-version: 6.2
import PackageDescription

// Paired runs: one model loaded twice, with and without load-time environment settings, and
// predicted with alternately in one process (Docs/PERFORMANCE.md, "Paired runs").
let package = Package(
    name: "Paired",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "swift-mmoe", path: "../..")],
    targets: [
        .executableTarget(
            name: "paired",
            dependencies: [.product(name: "MMoE", package: "swift-mmoe")],
            swiftSettings: [.treatAllWarnings(as: .error)])
    ]
)
