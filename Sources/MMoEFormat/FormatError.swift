import MMoECore

/// Why a `.mmoe` file could not be read or written. Every case names the file; most name the
/// byte offset or the tensor.
public enum FormatError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The operating system refused (open, stat, map, write, rename); `reason` is its message.
    case io(path: String, operation: String, reason: String)
    /// The file does not start with the `.mmoe` magic.
    case notAModelFile(path: String)
    /// A major version this reader does not know.
    case unsupportedVersion(path: String, major: Int, minor: Int)
    /// Required-flag bits this reader does not understand.
    case unknownRequiredFlags(path: String, flags: UInt32)
    /// The file ends before a structure it declares.
    case truncated(path: String, what: String, offset: Int, needed: Int, available: Int)
    /// The stored header checksum does not match the header bytes.
    case headerChecksumMismatch(path: String, stored: UInt32, computed: UInt32)
    /// The tensor table is inconsistent at `offset`.
    case invalidTable(path: String, offset: Int, reason: String)
    /// A tensor's bytes do not match its stored checksum.
    case tensorChecksumMismatch(path: String, tensor: String, stored: UInt32, computed: UInt32)
    /// Bytes after the last tensor.
    case trailingBytes(path: String, offset: Int, count: Int)
    /// The spec or the tensors were rejected.
    case invalidModel(path: String, ModelError)

    public var description: String {
        switch self {
        case .io(let path, let operation, let reason): "\(path): cannot \(operation): \(reason)"
        case .notAModelFile(let path): "\(path): not a .mmoe model file (bad magic)"
        case .unsupportedVersion(let path, let major, let minor):
            "\(path): format version \(major).\(minor) is not supported (this build reads \(ModelFileLayout.major).x)"
        case .unknownRequiredFlags(let path, let flags):
            "\(path): required flags 0x\(String(flags, radix: 16)) are not understood by this reader"
        case .truncated(let path, let what, let offset, let needed, let available):
            "\(path): truncated: \(what) at offset \(offset) needs \(needed) bytes, \(available) remain"
        case .headerChecksumMismatch(let path, let stored, let computed):
            "\(path): header checksum mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"
        case .invalidTable(let path, let offset, let reason): "\(path): invalid header or tensor table at offset \(offset): \(reason)"
        case .tensorChecksumMismatch(let path, let tensor, let stored, let computed):
            "\(path): tensor '\(tensor)' checksum mismatch (stored 0x\(String(stored, radix: 16)), computed "
                + "0x\(String(computed, radix: 16)))"
        case .trailingBytes(let path, let offset, let count): "\(path): \(count) unexpected bytes after the last tensor at offset \(offset)"
        case .invalidModel(let path, let error): "\(path): \(error)"
        }
    }
}
