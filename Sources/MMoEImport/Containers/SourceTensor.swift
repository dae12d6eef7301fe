import MMoECore

/// Element types found in checkpoints (a superset of the model dtypes).
public enum SourceDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64: 8
        case .f32, .i32: 4
        case .f16, .bf16, .i16: 2
        case .i8, .u8, .bool: 1
        }
    }

    /// Whether the type is a float type.
    public var isFloat: Bool { self == .f64 || self == .f32 || self == .f16 || self == .bf16 }
}

/// A tensor as a checkpoint stores it: name, type, shape and its bytes (a view into the
/// mapped file where possible). Row-major, little-endian.
public struct SourceTensor: Sendable {
    /// Name in the checkpoint.
    public let name: String
    /// Element type.
    public let dtype: SourceDType
    /// Shape.
    public let shape: [Int]
    /// The storage holding the bytes.
    public let storage: ByteStorage
    /// Offset of the first byte in `storage`.
    public let byteOffset: Int

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// A tensor over checked bytes.
    public init(name: String, dtype: SourceDType, shape: [Int], storage: ByteStorage, byteOffset: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// Element `i` widened to Double.
    public func value(_ i: Int) -> Double {
        let raw = storage.bytes
        let at = byteOffset + i * dtype.size
        func bits<T: FixedWidthInteger>(_: T.Type) -> T { T(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: T.self)) }
        switch dtype {
        case .f64: return Double(bitPattern: bits(UInt64.self))
        case .f32: return Double(Float(bitPattern: bits(UInt32.self)))
        case .f16: return Double(HalfPrecision.float(fromHalf: bits(UInt16.self)))
        case .bf16: return Double(HalfPrecision.float(fromBFloat16: bits(UInt16.self)))
        case .i64: return Double(bits(Int64.self))
        case .i32: return Double(bits(Int32.self))
        case .i16: return Double(bits(Int16.self))
        case .i8: return Double(Int8(bitPattern: raw[at]))
        case .u8, .bool: return Double(raw[at])
        }
    }

    /// The model tensor: f32/f16/bf16 kept as they are (zero-copy), f64 narrowed to f32;
    /// integers refused.
    public func modelTensor() throws(ModelError) -> Tensor {
        switch dtype {
        case .f32, .f16, .bf16:
            let model: DType = dtype == .f32 ? .f32 : dtype == .f16 ? .f16 : .bf16
            do throws(ModelError) {
                return try Tensor(dtype: model, shape: shape, storage: storage, byteOffset: byteOffset)
            } catch {
                throw .invalidTensor(name: name, reason: error.description)
            }
        case .f64:
            return try Tensor(float32: (0..<count).map { Float(value($0)) }, shape: shape)
        default:
            throw .invalidTensor(name: name, reason: "holds \(dtype.rawValue) values where floats are needed")
        }
    }

    /// All values as Float.
    public func floats() -> [Float] { (0..<count).map { Float(value($0)) } }
}

/// The tensors of a checkpoint by name, in file order.
public struct SourceCheckpoint: Sendable {
    /// Tensors in file order.
    public var tensors: [SourceTensor]
    /// Where the checkpoint came from.
    public let path: String
    /// A finer format label where it matters (`keras2`, `keras3`), else empty.
    public let format: String
    /// What an ONNX graph says beyond its parameters (for conversion without a spec).
    var onnxFacts: OnnxFacts?
    /// How many optimizer variables and counters the reader skipped (TF checkpoints).
    var trainingState = 0
    /// The Keras model config (JSON) of a full-model `.h5` or a `.keras` archive, when present.
    var kerasConfig: [UInt8]?

    /// A checkpoint.
    public init(tensors: [SourceTensor], path: String, format: String = "") {
        self.tensors = tensors
        self.path = path
        self.format = format
    }

    /// The tensor with this name.
    public subscript(name: String) -> SourceTensor? { tensors.first { $0.name == name } }

    /// Names in file order.
    public var names: [String] { tensors.map(\.name) }
}
