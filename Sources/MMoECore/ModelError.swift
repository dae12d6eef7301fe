/// Why a model description or its tensors were rejected.
///
/// Every case names the place: the JSON path inside the spec, or the tensor and both shapes.
public enum ModelError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The spec is not valid JSON or does not have the documented structure.
    case malformedSpec(String)
    /// The spec's `format`/`version` is not one this build reads.
    case unsupportedSpecVersion(format: String, version: Int)
    /// A value in the spec is wrong; `path` is a JSON-path-like location (`architecture.experts[1].layers[0]`).
    case invalidSpec(path: String, reason: String)
    /// A tensor the spec needs is absent.
    case missingTensor(name: String, expectedShape: [Int])
    /// A tensor has the wrong shape.
    case shapeMismatch(tensor: String, expected: [Int], actual: [Int])
    /// A tensor has a dtype the spec does not allow at that place.
    case dtypeMismatch(tensor: String, allowed: [DType], actual: DType)
    /// A tensor the spec does not describe.
    case unexpectedTensor(name: String)
    /// Two tensors share a name.
    case duplicateTensor(name: String)
    /// A tensor's bytes or shape are inconsistent.
    case invalidTensor(name: String?, reason: String)
    /// A tensor holds NaN or infinity where finite values are required.
    case nonFiniteTensor(name: String, index: Int)
    /// An allocation the model asks for does not fit the memory this process may use
    /// (`MemoryBudget`); the text names the size, the budget and how to raise it.
    case memory(String)

    public var description: String {
        switch self {
        case .malformedSpec(let reason): "malformed model spec: \(reason)"
        case .unsupportedSpecVersion(let format, let version):
            "unsupported model spec \(format) version \(version) (this build reads mmoe-spec version \(ModelSpec.currentVersion))"
        case .invalidSpec(let path, let reason): "invalid model spec at \(path): \(reason)"
        case .missingTensor(let name, let shape): "missing tensor '\(name)' (expected shape \(shape))"
        case .shapeMismatch(let tensor, let expected, let actual):
            "tensor '\(tensor)' has shape \(actual), the spec needs \(expected)"
        case .dtypeMismatch(let tensor, let allowed, let actual):
            "tensor '\(tensor)' has dtype \(actual), allowed here: \(allowed.map(\.rawValue).joined(separator: ", "))"
        case .unexpectedTensor(let name): "tensor '\(name)' is not described by the spec"
        case .duplicateTensor(let name): "tensor '\(name)' appears twice"
        case .invalidTensor(let name, let reason):
            name.map { "tensor '\($0)': \(reason)" } ?? "invalid tensor: \(reason)"
        case .nonFiniteTensor(let name, let index): "tensor '\(name)' holds a non-finite value at element \(index)"
        case .memory(let reason): reason
        }
    }
}
