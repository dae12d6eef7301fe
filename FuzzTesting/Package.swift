// swift-tools-version: 6.2
// libFuzzer harnesses for every parser of swift-mmoe. Built and run by FuzzTesting/run.sh,
// which links the parent package as .deps/swift-mmoe (so the package identity is stable
// whatever the checkout folder is called).
import PackageDescription

let package = Package(
    name: "MMoEFuzzing",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: ".deps/swift-mmoe")],
    targets: [
        .executableTarget(
            name: "mmoe-fuzz",
            dependencies: [
                .product(name: "MMoE", package: "swift-mmoe"),
                .product(name: "MMoEConversion", package: "swift-mmoe"),
            ],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        )
    ]
)
