import MMoECore
import MMoEFormat
import MMoEHDF5

/// Why a source file could not be imported. Every case names the file and the place
/// (member, tensor, offset, key) where it went wrong.
public enum ImportError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Reading the file failed.
    case io(FormatError)
    /// The bytes are not in the expected format at `offset`.
    case malformed(path: String, offset: Int?, reason: String)
    /// Something a limit forbids (size cap, nesting depth, count).
    case limitExceeded(path: String, what: String, limit: Int)
    /// A feature of the format that is deliberately not supported (with what to do instead).
    case unsupported(path: String, reason: String)
    /// A pickle asked for a global outside the allow-list; nothing was executed.
    case forbiddenGlobal(path: String, name: String)
    /// The checkpoint does not match what the conversion spec says.
    case mismatch(path: String, reason: String)
    /// HDF5 failure.
    case hdf5(HDF5Error)
    /// The resulting model was rejected.
    case invalidModel(path: String, ModelError)
    /// An allocation the file asks for does not fit the memory this process may use
    /// (`MemoryBudget`); the reason names the size, the budget and how to raise it.
    case memory(path: String, reason: String)

    /// The same error reported against `path` instead of `old` (a member read through a
    /// temporary copy is named `archive:member`).
    func relocated(from old: String, to path: String) -> ImportError {
        switch self {
        case .malformed(let p, let offset, let reason): .malformed(path: p == old ? path : p, offset: offset, reason: reason)
        case .limitExceeded(let p, let what, let limit): .limitExceeded(path: p == old ? path : p, what: what, limit: limit)
        case .unsupported(let p, let reason): .unsupported(path: p == old ? path : p, reason: reason)
        case .mismatch(let p, let reason): .mismatch(path: p == old ? path : p, reason: reason)
        case .hdf5(let error): .hdf5(error.replacingPath(path))
        case .memory(let p, let reason): .memory(path: p == old ? path : p, reason: reason)
        default: self
        }
    }

    public var description: String {
        switch self {
        case .io(let error): error.description
        case .malformed(let path, let offset, let reason):
            "\(path): \(offset.map { "at offset \($0): " } ?? "")\(reason)"
        case .limitExceeded(let path, let what, let limit): "\(path): \(what) exceeds the limit of \(limit)"
        case .unsupported(let path, let reason): "\(path): \(reason)"
        case .forbiddenGlobal(let path, let name):
            "\(path): the pickle references '\(name)', which a state_dict never needs; refused without executing anything"
        case .mismatch(let path, let reason): "\(path): \(reason)"
        case .hdf5(let error): error.description
        case .invalidModel(let path, let error): "\(path): \(error)"
        case .memory(let path, let reason): "\(path): \(reason)"
        }
    }
}
