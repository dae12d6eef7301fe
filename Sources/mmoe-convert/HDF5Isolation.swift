import ArgumentParser
import Foundation
import MMoEImport

#if canImport(Glibc)
    import Glibc
#endif

/// libhdf5 (Debian's 1.10.8) can crash, loop or corrupt memory on damaged files, inside its own
/// code where no Swift check reaches (Docs/ROBUSTNESS.md, fuzzing findings). So the tool reads
/// every HDF5-based file — our HDF5 layout, Keras `.h5`/`.weights.h5`, `.keras` archives — in a
/// child process of itself: a child killed by a signal becomes one error line and exit code 2,
/// never a crashed tool. Other formats never touch libhdf5 and run in-process.
enum HDF5Isolation {
    /// Set in the child so that it does the work itself.
    static let childVariable = "MMOE_HDF5_CHILD"
    /// Seconds the isolated reader may take (default 1800).
    static let timeVariable = "MMOE_HDF5_TIMEOUT"

    static var timeLimit: Int {
        guard let raw = getenv(timeVariable), let value = Int(String(cString: raw)), value > 0 else { return 1800 }
        return value
    }

    /// Whether `path` is read through libhdf5: the HDF5 signature, or a zip holding `model.weights.h5`.
    static func needsIsolation(_ path: String) -> Bool {
        // Non-blocking, regular files only: a FIFO must not hang the tool here (the readers
        // refuse it with a typed error).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return false }
        var head = [UInt8](repeating: 0, count: 8)
        guard read(fd, &head, 8) == 8 else { return false }
        if head.elementsEqual([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) { return true }
        if head.starts(with: [0x50, 0x4B]), let zip = try? ZipArchive(path: path) { return zip.entry("model.weights.h5") != nil }
        return false
    }

    /// Runs this very command in a child process when any of `paths` is read through libhdf5
    /// and this is not already the child. Returns true when the child did the work (the caller
    /// returns); throws `ExitCode` with the child's status, or 2 when it was killed by a signal.
    static func runInChild(for paths: [String]) throws -> Bool {
        guard getenv(childVariable) == nil, let path = paths.first(where: needsIsolation) else { return false }
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return false }
        let executable = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let child = Process()
        child.executableURL = URL(fileURLWithPath: executable)
        child.arguments = Array(CommandLine.arguments.dropFirst())
        // The child's crash report would only repeat libhdf5's address; one error line says it all.
        child.environment = ProcessInfo.processInfo.environment.merging([childVariable: "1", "SWIFT_BACKTRACE": "enable=no"]) { $1 }
        let finished = DispatchSemaphore(value: 0)
        child.terminationHandler = { _ in finished.signal() }
        do { try child.run() } catch { return false }
        // libhdf5 can also loop forever on a damaged file: the child gets a time limit.
        if finished.wait(timeout: .now() + .seconds(timeLimit)) == .timedOut {
            child.terminate()
            kill(child.processIdentifier, SIGKILL)
            finished.wait()
            printError(
                "\(path): reading this HDF5 file took longer than \(timeLimit) s in the isolated reader (libhdf5 loops on some "
                    + "damaged files); stopped. \(timeVariable) raises the limit"
            )
            throw ExitCode(ExitCodes.failed)
        }
        if child.terminationReason == .uncaughtSignal {
            printError(
                "\(path): reading this HDF5 file crashed libhdf5 (signal \(child.terminationStatus)) in the isolated reader: the "
                    + "file is damaged or hostile; nothing was written"
            )
            throw ExitCode(ExitCodes.failed)
        }
        if child.terminationStatus != 0 { throw ExitCode(child.terminationStatus) }
        return true
    }
}
