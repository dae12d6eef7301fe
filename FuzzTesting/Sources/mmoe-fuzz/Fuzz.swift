import Foundation
import MMoEImport

/// Which parser this process fuzzes (MMOE_FUZZ_TARGET, one of ParserHarness.targets).
let target = ProcessInfo.processInfo.environment["MMOE_FUZZ_TARGET"] ?? "mmoe"
let scratch = NSTemporaryDirectory() + "mmoe-fuzz-\(getpid())"
let weights = FileManager.default.currentDirectoryPath + "/../fixtures/torch/plain_mmoe/model.safetensors"

/// Targets whose files are read by libhdf5. `mmoe-convert` reads such files in a child process
/// of itself, so that libhdf5's own faults (Docs/ROBUSTNESS.md, "Findings") end as one error
/// line. The harness does the same: each input runs first in a forked child; only an input the
/// child got through also runs in this process, where libFuzzer sees its coverage.
/// Not a finding (the isolated libhdf5 fault the tool reports as an error): a child killed by
/// SIGSEGV, SIGBUS or SIGABRT, still running after `childSeconds`, or stopped by an
/// AddressSanitizer report located in libhdf5 (run.sh also suppresses leak reports of
/// libhdf5's own allocations). A finding: an AddressSanitizer report elsewhere or a Swift trap
/// in the child (both end it with another non-zero status), or any crash in this process.
let isolated: Set<String> = ["hdf5", "keras"]
let childSeconds = 5.0
nonisolated(unsafe) var isolatedFaults = 0

/// The child's exit status for an AddressSanitizer report whose summary points into libhdf5
/// (libhdf5 is not instrumented: its reports come from intercepted calls, such as a `malloc`
/// of 2^53 bytes or an overlapping `memcpy`).
let libhdf5ReportStatus: CInt = 77

@_silgen_name("__asan_set_error_report_callback")
func setErrorReportCallback(_ callback: @convention(c) (UnsafePointer<CChar>?) -> Void)

func survivesInChild(_ bytes: UnsafeRawBufferPointer) -> Bool {
    let pid = fork()
    if pid == 0 {
        for sig in [SIGSEGV, SIGBUS, SIGABRT] { signal(sig, SIG_DFL) }
        setErrorReportCallback { report in
            guard let report else { return }
            let text = String(cString: report)
            let summary = text.split(separator: "\n").first { $0.hasPrefix("SUMMARY:") } ?? ""
            if summary.contains("libhdf5") { _exit(libhdf5ReportStatus) }
        }
        ParserHarness.run(target, bytes, scratch: scratch + "-child", weights: weights)
        _exit(0)
    }
    guard pid > 0 else { return false }
    var status: CInt = 0
    let deadline = Date().addingTimeInterval(childSeconds)
    while waitpid(pid, &status, WNOHANG) == 0 {
        if Date() > deadline {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            break
        }
        usleep(200)
    }
    let signalled = status & 0x7f
    if signalled == 0 {
        let code = (status >> 8) & 0xff
        if code != 0, code != libhdf5ReportStatus {
            // An AddressSanitizer report or a trap in our code: the child has written the
            // artifact; stop here so that libFuzzer keeps this input too.
            fatalError("the isolated child exited with status \(code) (a finding in swift-mmoe's code)")
        }
        if code == 0 { return true }
    }
    isolatedFaults += 1
    if isolatedFaults.isMultiple(of: 10) || isolatedFaults == 1 {
        FileHandle.standardError.write(Data("isolated libhdf5 faults so far: \(isolatedFaults)\n".utf8))
    }
    return false
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: count)
    if isolated.contains(target), !survivesInChild(bytes) { return -1 }
    ParserHarness.run(target, bytes, scratch: scratch, weights: weights)
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
