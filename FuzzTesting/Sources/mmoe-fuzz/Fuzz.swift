import Foundation
import MMoEImport

/// Which parser this process fuzzes (MMOE_FUZZ_TARGET, one of ParserHarness.targets).
let target = ProcessInfo.processInfo.environment["MMOE_FUZZ_TARGET"] ?? "mmoe"
let scratch = NSTemporaryDirectory() + "mmoe-fuzz-\(getpid())"
let weights = FileManager.default.currentDirectoryPath + "/../fixtures/torch/plain_mmoe/model.safetensors"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    ParserHarness.run(target, UnsafeRawBufferPointer(start: data, count: count), scratch: scratch, weights: weights)
    return 0
}

/// libFuzzer's driver, called from our own entry point: SwiftPM links an executable target's
/// entry as `<module>_main`, so libFuzzer's `main` is not the one that runs.
@_silgen_name("LLVMFuzzerRunDriver")
func runDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("mmoe_fuzz_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments, fuzzerTestOneInput)
}
