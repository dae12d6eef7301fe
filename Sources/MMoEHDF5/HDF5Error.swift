import MMoECore
import MMoEFormat

/// Why an HDF5 file could not be read or written. Every case names the file; library
/// failures carry HDF5's own error stack as text.
public enum HDF5Error: Error, Sendable, Equatable, CustomStringConvertible {
    /// An HDF5 call failed; `stack` is HDF5's error stack, innermost first.
    case library(path: String, operation: String, object: String?, stack: String)
    /// The file is HDF5 but not in the layout expected.
    case invalidLayout(path: String, object: String, reason: String)
    /// A soft, external or user-defined link: refused (it could make us open other files).
    case unsafeLink(path: String, group: String)
    /// An object that would make the library read another file (external link, external
    /// raw storage, virtual dataset) or that exceeds a structural limit; refused before any
    /// data is read.
    case unsafeObject(path: String, object: String, reason: String)
    /// The spec or tensors were rejected.
    case invalidModel(path: String, ModelError)
    /// Creating or replacing the file failed.
    case io(FormatError)

    /// The same error reported against `path` (a file read through a temporary copy).
    public func replacingPath(_ path: String) -> HDF5Error {
        switch self {
        case .library(_, let operation, let object, let stack): .library(path: path, operation: operation, object: object, stack: stack)
        case .invalidLayout(_, let object, let reason): .invalidLayout(path: path, object: object, reason: reason)
        case .unsafeLink(_, let group): .unsafeLink(path: path, group: group)
        case .unsafeObject(_, let object, let reason): .unsafeObject(path: path, object: object, reason: reason)
        case .invalidModel(_, let error): .invalidModel(path: path, error)
        case .io: self
        }
    }

    public var description: String {
        switch self {
        case .library(let path, let operation, let object, let stack):
            "\(path): HDF5 \(operation)\(object.map { " of '\($0)'" } ?? "") failed: \(stack.isEmpty ? "no details" : stack)"
        case .invalidLayout(let path, let object, let reason): "\(path): '\(object)': \(reason)"
        case .unsafeLink(let path, let group): "\(path): '\(group)' contains a soft or external link, which is refused"
        case .unsafeObject(let path, let object, let reason): "\(path): '\(object)': \(reason)"
        case .invalidModel(let path, let error): "\(path): \(error)"
        case .io(let error): error.description
        }
    }
}
