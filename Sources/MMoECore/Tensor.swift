/// Immutable bytes shared by tensors: owned memory or a read-only file mapping.
///
/// The storage keeps its memory alive for as long as any tensor refers to it. It is never
/// written after creation, which is what makes sharing it between threads safe.
public final class ByteStorage: @unchecked Sendable {
    /// The bytes. Valid for the lifetime of this object.
    public let bytes: UnsafeRawBufferPointer
    private let release: (@Sendable (UnsafeRawBufferPointer) -> Void)?

    /// Copies `array` into new storage (64-byte aligned).
    public init(copying array: [UInt8]) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(array.count, 1), alignment: 64)
        array.withUnsafeBytes { source in
            if let base = source.baseAddress, array.count > 0 {
                memory.baseAddress?.copyMemory(from: base, byteCount: array.count)
            }
        }
        bytes = UnsafeRawBufferPointer(start: memory.baseAddress, count: array.count)
        release = { bytes in UnsafeMutableRawPointer(mutating: bytes.baseAddress)?.deallocate() }
    }

    /// Wraps memory the caller hands over; `release` runs once when the storage dies
    /// (for a file mapping: `munmap`).
    public init(bytes: UnsafeRawBufferPointer, release: (@Sendable (UnsafeRawBufferPointer) -> Void)?) {
        self.bytes = bytes
        self.release = release
    }

    deinit { release?(bytes) }
}

/// A named n-dimensional array: dtype, shape and a view into shared bytes.
///
/// Tensors are row-major (C order) and little-endian, whatever the source framework used;
/// importers transpose into the canonical layout (see `Docs/SPEC.md`).
public struct Tensor: Sendable {
    /// Element type.
    public let dtype: DType
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// The storage the data lives in.
    public let storage: ByteStorage
    /// Byte offset of the first element inside `storage`.
    public let byteOffset: Int

    /// Number of elements (product of the shape; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
    /// Number of bytes of data.
    public var byteCount: Int { elementCount * dtype.byteWidth }

    /// A tensor over `storage[byteOffset ..< byteOffset + byteCount]`, checked to lie inside it.
    public init(dtype: DType, shape: [Int], storage: ByteStorage, byteOffset: Int = 0) throws(ModelError) {
        guard let count = Tensor.checkedElementCount(shape) else {
            throw .invalidTensor(name: nil, reason: "shape \(shape) has a negative or overflowing size")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteWidth)
        guard !overflow, byteOffset >= 0, byteOffset <= storage.bytes.count,
            bytes <= storage.bytes.count - byteOffset
        else {
            throw .invalidTensor(
                name: nil,
                reason: "shape \(shape) of \(dtype) needs bytes past the end of its storage (\(storage.bytes.count) bytes)")
        }
        self.dtype = dtype
        self.shape = shape
        self.storage = storage
        self.byteOffset = byteOffset
    }

    /// An `f32` tensor holding a copy of `values`.
    public init(float32 values: [Float], shape: [Int]) throws(ModelError) {
        guard Tensor.checkedElementCount(shape) == values.count else {
            throw .invalidTensor(name: nil, reason: "shape \(shape) does not hold \(values.count) values")
        }
        let bytes = values.withUnsafeBytes { Array($0) }
        try self.init(dtype: .f32, shape: shape, storage: ByteStorage(copying: bytes))
    }

    /// A tensor of any dtype holding a copy of raw little-endian `bytes`.
    public init(dtype: DType, shape: [Int], bytes: [UInt8]) throws(ModelError) {
        guard let count = Tensor.checkedElementCount(shape), count * dtype.byteWidth == bytes.count else {
            throw .invalidTensor(name: nil, reason: "shape \(shape) of \(dtype) does not match \(bytes.count) bytes")
        }
        try self.init(dtype: dtype, shape: shape, storage: ByteStorage(copying: bytes))
    }

    /// The product of `shape`, or nil when a dimension is negative or the product overflows.
    public static func checkedElementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { return nil }
            count = product
        }
        return count
    }

    /// The tensor's bytes (valid while the tensor is alive).
    public var rawBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: storage.bytes[byteOffset..<(byteOffset + byteCount)])
    }

    /// The bytes as an array (a copy).
    public func bytesArray() -> [UInt8] { Array(rawBytes) }

    /// Element `index` as a Float (i8 gives the raw code).
    @inlinable
    public func element(_ index: Int) -> Float {
        let raw = rawBytes
        switch dtype {
        case .f32:
            return Float(bitPattern: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self).littleEndian)
        case .f16:
            return HalfPrecision.float(fromHalf: raw.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self).littleEndian)
        case .bf16:
            return HalfPrecision.float(
                fromBFloat16: raw.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self).littleEndian)
        case .i8:
            return Float(Int8(bitPattern: raw[index]))
        }
    }

    /// All elements widened to Float (a copy; i8 gives the raw codes).
    public func floats() -> [Float] {
        let count = elementCount
        if dtype == .f32 {
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0, let destination = buffer.baseAddress, let source = rawBytes.baseAddress {
                    UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: count * 4)
                }
                initialized = count
            }
        }
        return (0..<count).map { element($0) }
    }

    /// This tensor's values converted to `dtype` (f32/f16/bf16 only; rounding to nearest even).
    public func converted(to target: DType) throws(ModelError) -> Tensor {
        if target == dtype { return self }
        guard target.isFloatingPoint, dtype.isFloatingPoint else {
            throw .invalidTensor(name: nil, reason: "cannot convert \(dtype) to \(target) without quantization")
        }
        let values = floats()
        var bytes = [UInt8]()
        bytes.reserveCapacity(values.count * target.byteWidth)
        for value in values {
            let bits: UInt32
            switch target {
            case .f32: bits = value.bitPattern
            case .f16: bits = UInt32(HalfPrecision.half(from: value))
            case .bf16: bits = UInt32(HalfPrecision.bfloat16(from: value))
            case .i8: bits = 0
            }
            for byte in 0..<target.byteWidth { bytes.append(UInt8(truncatingIfNeeded: bits >> (8 * byte))) }
        }
        return try Tensor(dtype: target, shape: shape, bytes: bytes)
    }
}

/// The tensors of one model by canonical name, in a stable order.
public struct TensorStore: Sendable {
    private var storage: [String: Tensor] = [:]
    /// Names in insertion order.
    public private(set) var names: [String] = []

    /// An empty store.
    public init() {}

    /// Adds a tensor; a second tensor with the same name is an error.
    public mutating func insert(_ tensor: Tensor, named name: String) throws(ModelError) {
        guard storage[name] == nil else { throw .duplicateTensor(name: name) }
        storage[name] = tensor
        names.append(name)
    }

    /// Adds or replaces a tensor.
    public mutating func set(_ tensor: Tensor, named name: String) {
        if storage[name] == nil { names.append(name) }
        storage[name] = tensor
    }

    /// Removes a tensor if present.
    public mutating func remove(named name: String) {
        if storage.removeValue(forKey: name) != nil { names.removeAll { $0 == name } }
    }

    /// The tensor with this name, if any.
    public subscript(name: String) -> Tensor? { storage[name] }

    /// Number of tensors.
    public var count: Int { names.count }

    /// Names sorted by byte order (the order the native format writes).
    public var sortedNames: [String] { names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) } }
}
