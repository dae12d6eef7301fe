import Foundation
import MMoECore
import MMoEFormat

/// Reads ONNX models as checkpoints: the graph's initializers (raw_data, typed fields, or
/// external data in a side file inside the model's folder) by name, after checking that every
/// node's operator belongs to the model family. PyTorch's exporters keep parameter names
/// (`expert_dnn.0.linears.0.weight`), so the framework importers map them as for a state_dict;
/// batch norm already folded into Gemm by the exporter simply reads as a linear without it.
public enum OnnxReader {
    /// Operators the family's exports use (embedding lookups, MLPs, gates, mixing, heads and
    /// the shape plumbing around them). Anything else is refused, naming the node.
    public static let allowedOperators: Set<String> = [
        "Gather", "Concat", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Softmax",
        "Erf", "Sqrt", "Pow", "BatchNormalization", "LayerNormalization", "ReduceSum", "ReduceMean", "ReduceMax", "Reshape", "Flatten",
        "Squeeze", "Unsqueeze", "Slice", "Cast", "Constant", "Identity", "Shape", "Transpose", "Einsum", "Expand", "Where", "Equal",
        "Not", "Greater", "Less", "Max", "Min", "Clip", "Neg", "Exp", "Split", "ConstantOfShape", "Range", "Gelu", "Dropout",
        "Tile", "And", "Or", "GreaterOrEqual", "LessOrEqual", "Abs", "ReduceProd", "Mod", "Floor", "Ceil", "Size",
    ]

    /// Largest model file read.
    public static let maxModelBytes = 2 << 30

    /// The parameters of `path` (an `.onnx` file) in PyTorch state_dict naming and layout,
    /// recovered by walking the graph from its inputs (see `OnnxRecovery`), with notes on what
    /// was recovered. Refuses operators outside the family, naming the node.
    public static func read(path: String) throws(ImportError) -> (SourceCheckpoint, [ImportNote]) {
        let graph = try OnnxGraph.read(path: path)
        return try OnnxRecovery.recover(graph, path: path)
    }

    /// Refuses a node whose operator is outside the family (or in a foreign domain).
    static func checkOperators(_ graph: OnnxGraph, path: String) throws(ImportError) {
        for node in graph.nodes {
            guard node.domain.isEmpty || node.domain == "ai.onnx", allowedOperators.contains(node.op) else {
                let op = node.domain.isEmpty ? node.op : "\(node.domain).\(node.op)"
                throw .unsupported(
                    path: path, reason: "node '\(node.name)' uses operator \(op), which is outside the multi-task MoE family")
            }
        }
    }

    /// A dimension (an int64 on the wire; negative ones are refused).
    static func dimension(_ reader: inout ProtoReader) throws(ImportError) -> Int {
        let value = Int64(bitPattern: try reader.varint())
        guard value >= 0 else { throw reader.fail("a tensor has the negative dimension \(value)") }
        return Int(value)
    }

    static func tensor(
        _ bytes: UnsafeRawBufferPointer, range: Range<Int>, storage: ByteStorage, path: String, folder: String,
        sideFiles: inout [String: ByteStorage]
    ) throws(ImportError) -> SourceTensor {
        var reader = ProtoReader(bytes, path: path, range: range)
        var dims: [Int] = []
        var dataType = 0
        var name = ""
        var raw: Range<Int>?
        var floats: [Float] = []
        var int64s: [Int64] = []
        var int32s: [UInt32] = []
        var doubles: [UInt64] = []
        var external: [String: String] = [:]
        while !reader.atEnd {
            let field = try reader.field()
            switch (field.number, field.wire, field.range) {
            case (1, 0, _): dims.append(try dimension(&reader))
            case (1, 2, let r?):
                var packed = ProtoReader(bytes, path: path, range: r)
                while !packed.atEnd { dims.append(try dimension(&packed)) }
            case (2, 0, _): dataType = try reader.int("data type")
            case (4, 2, let r?):
                guard r.count % 4 == 0 else { throw reader.fail("float_data of \(r.count) bytes") }
                floats += stride(from: r.lowerBound, to: r.upperBound, by: 4).map { at in
                    Float(bitPattern: (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) })
                }
            case (4, 5, _): floats.append(Float(bitPattern: try reader.fixed32()))
            case (7, 2, let r?):
                var packed = ProtoReader(bytes, path: path, range: r)
                while !packed.atEnd { int64s.append(Int64(bitPattern: try packed.varint())) }
            case (7, 0, _): int64s.append(Int64(bitPattern: try reader.varint()))
            case (5, 2, let r?):
                var packed = ProtoReader(bytes, path: path, range: r)
                while !packed.atEnd { int32s.append(UInt32(truncatingIfNeeded: try packed.varint())) }
            case (5, 0, _): int32s.append(UInt32(truncatingIfNeeded: try reader.varint()))
            case (10, 2, let r?):
                guard r.count % 8 == 0 else { throw reader.fail("double_data of \(r.count) bytes") }
                doubles += stride(from: r.lowerBound, to: r.upperBound, by: 8).map { at in
                    (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
                }
            case (8, 2, let r?): name = reader.string(r)
            case (9, 2, let r?): raw = r
            case (13, 2, let r?):
                let (key, value) = try OnnxGraph.keyValue(bytes, range: r, path: path)
                external[key] = value
            default:
                try reader.skip(wire: field.wire)
            }
            guard dims.count <= 16 else { throw reader.fail("initializer '\(name)' has too many dimensions") }
        }
        let dtype: SourceDType
        switch dataType {
        case 1: dtype = .f32
        case 11: dtype = .f64
        case 10: dtype = .f16
        case 16: dtype = .bf16
        case 7: dtype = .i64
        case 6: dtype = .i32
        case 9: dtype = .bool
        case 3: dtype = .i8
        default: throw .unsupported(path: path, reason: "initializer '\(name)' has ONNX data type \(dataType)")
        }
        guard let count = Tensor.checkedElementCount(dims), count.multipliedReportingOverflow(by: dtype.size).overflow == false else {
            throw .malformed(path: path, offset: range.lowerBound, reason: "initializer '\(name)' has an invalid shape \(dims)")
        }
        let length = count * dtype.size
        if let location = external["location"] {
            guard !location.hasPrefix("/"), !location.split(separator: "/").contains(".."), !location.isEmpty else {
                throw .unsupported(
                    path: path, reason: "initializer '\(name)': external data location '\(location)' leaves the model's folder")
            }
            let file = folder.isEmpty ? location : folder + "/" + location
            let side: ByteStorage
            if let cached = sideFiles[file] {
                side = cached
            } else {
                // Resolved component by component beneath the model's folder: no symbolic link
                // anywhere on the path, a regular file only (a FIFO never blocks).
                do throws(FormatError) { side = try FileIO.mapBeneath(folder: folder, relative: location) } catch {
                    throw .unsupported(path: path, reason: "initializer '\(name)': external data '\(location)': \(error)")
                }
                sideFiles[file] = side
            }
            let offset = Int(external["offset"] ?? "0") ?? -1
            let declared = external["length"].flatMap { Int($0) } ?? length
            guard offset >= 0, declared == length, offset <= side.bytes.count, length <= side.bytes.count - offset else {
                throw .malformed(
                    path: file, offset: offset,
                    reason: "initializer '\(name)' (\(length) bytes at \(offset)) lies outside the external data file")
            }
            return SourceTensor(name: name, dtype: dtype, shape: dims, storage: side, byteOffset: offset)
        }
        if let raw {
            guard raw.count == length else {
                throw .malformed(
                    path: path, offset: raw.lowerBound,
                    reason: "initializer '\(name)' has \(raw.count) raw bytes, shape \(dims) needs \(length)")
            }
            return SourceTensor(name: name, dtype: dtype, shape: dims, storage: storage, byteOffset: raw.lowerBound)
        }
        if dtype == .f32 {
            guard floats.count == count else {
                throw .malformed(
                    path: path, offset: range.lowerBound, reason: "initializer '\(name)' holds \(floats.count) floats for shape \(dims)")
            }
            return SourceTensor(
                name: name, dtype: .f32, shape: dims, storage: ByteStorage(copying: floats.withUnsafeBytes { Array($0) }), byteOffset: 0)
        }
        if dtype == .i64 {
            guard int64s.count == count else {
                throw .malformed(
                    path: path, offset: range.lowerBound, reason: "initializer '\(name)' holds \(int64s.count) integers for shape \(dims)")
            }
            return SourceTensor(
                name: name, dtype: .i64, shape: dims, storage: ByteStorage(copying: int64s.withUnsafeBytes { Array($0) }), byteOffset: 0)
        }
        if dtype == .f16 || dtype == .bf16 || dtype == .i32 {
            // 16-bit values sit in the low bits of int32_data.
            guard int32s.count == count else {
                throw .malformed(
                    path: path, offset: range.lowerBound,
                    reason: "initializer '\(name)' holds \(int32s.count) int32_data values for shape \(dims)")
            }
            let data: [UInt8] =
                dtype == .i32
                ? int32s.withUnsafeBytes { Array($0) }
                : int32s.map { UInt16(truncatingIfNeeded: $0) }.withUnsafeBytes { Array($0) }
            return SourceTensor(name: name, dtype: dtype, shape: dims, storage: ByteStorage(copying: data), byteOffset: 0)
        }
        if dtype == .f64 {
            guard doubles.count == count else {
                throw .malformed(
                    path: path, offset: range.lowerBound, reason: "initializer '\(name)' holds \(doubles.count) doubles for shape \(dims)")
            }
            return SourceTensor(
                name: name, dtype: .f64, shape: dims, storage: ByteStorage(copying: doubles.withUnsafeBytes { Array($0) }), byteOffset: 0)
        }
        throw .unsupported(
            path: path, reason: "initializer '\(name)' stores its \(dtype.rawValue) values in a typed field this reader does not take")
    }
}
