import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoEImport
import MMoERuntime

/// Documented exit codes (see `Docs/CLI.md`).
enum ExitCodes {
    /// Verification outside tolerance, or a checksum mismatch.
    static let verificationFailed: Int32 = 1
    /// The input could not be used: damaged file, invalid model, spec mismatch, bad batch, I/O.
    static let failed: Int32 = 2
}

/// Prints `mmoe-convert: error: <one line>` to stderr.
func printError(_ message: String) {
    FileHandle.standardError.write(Data("mmoe-convert: error: \(printable(message))\n".utf8))
}

/// Longest message printed (a hostile file can put megabytes into a name the message echoes).
let maxMessageCharacters = 4096

/// One printable line: control characters (NUL included) escaped as `\u{…}`, at most
/// `maxMessageCharacters` characters with the rest counted.
func printable(_ message: String) -> String {
    var out = ""
    var count = 0
    var dropped = 0
    for scalar in message.unicodeScalars {
        if count >= maxMessageCharacters {
            dropped += 1
            continue
        }
        if scalar.value < 0x20 || scalar.value == 0x7F {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
        count += 1
    }
    if dropped > 0 { out += "… (\(dropped) more characters)" }
    return out
}

/// Prints to stderr (progress and notes stay out of stdout).
func printNote(_ message: String) {
    FileHandle.standardError.write(Data("\(printable(message))\n".utf8))
}

/// Runs `body`, turning every library error into one line on stderr and exit code 2.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as CustomStringConvertible
        where error is ModelError || error is FormatError || error is HDF5Error || error is ImportError || error is PredictError
        || error is InputError
    {
        printError(error.description)
        throw ExitCode(ExitCodes.failed)
    } catch {
        printError("\(error)")
        throw ExitCode(ExitCodes.failed)
    }
}

/// Problems with an inputs or expected-outputs file.
struct InputError: Error, CustomStringConvertible {
    let description: String
}

/// Checks a path names an existing regular file (before any work).
func requireFile(_ path: String, _ what: String) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
        throw ValidationError("\(what) '\(path)' does not exist or is not a file")
    }
}

/// Loads a model for prediction from `.mmoe` (memory-mapped) or our HDF5 layout.
func loadModel(_ path: String, verifyChecksums: Bool = false) throws -> Model {
    switch try SourceFormat.detect(path: path) {
    case .mmoe:
        return try Model.open(path: path, verifyChecksums: verifyChecksums)
    case .h5:
        let (spec, tensors) = try HDF5Codec.read(path: path)
        return try Model(spec: spec, tensors: tensors)
    case let other:
        throw InputError(description: "\(path): a \(other) file is not a model to run; convert it first with 'mmoe-convert convert'")
    }
}
