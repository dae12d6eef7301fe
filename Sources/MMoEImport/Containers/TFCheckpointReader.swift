import MMoECore
import MMoEFormat

/// A bounds-checked protobuf wire-format reader (varints, length-delimited fields, fixed32).
struct ProtoReader {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    let end: Int
    let path: String

    init(_ bytes: UnsafeRawBufferPointer, path: String, range: Range<Int>? = nil) {
        self.bytes = bytes
        position = range?.lowerBound ?? 0
        end = range?.upperBound ?? bytes.count
        self.path = path
    }

    var atEnd: Bool { position >= end }

    func fail(_ reason: String) -> ImportError { .malformed(path: path, offset: position, reason: reason) }

    mutating func varint() throws(ImportError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < end else { throw fail("varint runs past the end") }
            let byte = bytes[position]
            position += 1
            guard shift < 64 else { throw fail("varint longer than 10 bytes") }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
    }

    mutating func int(_ what: String) throws(ImportError) -> Int {
        let value = try varint()
        guard value <= UInt64(Int.max) else { throw fail("\(what) \(value) is out of range") }
        return Int(value)
    }

    mutating func fixed32() throws(ImportError) -> UInt32 {
        guard end - position >= 4 else { throw fail("fixed32 runs past the end") }
        defer { position += 4 }
        return (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[position + $1]) << (8 * UInt32($1)) }
    }

    /// The next field: number, wire type, and for length-delimited fields their byte range.
    mutating func field() throws(ImportError) -> (number: Int, wire: Int, range: Range<Int>?) {
        let key = try varint()
        let wire = Int(key & 7)
        guard key >> 3 <= UInt64(Int32.max) else { throw fail("field number out of range") }
        let number = Int(key >> 3)
        switch wire {
        case 2:
            let length = try int("length")
            guard length <= end - position else { throw fail("field \(number) of \(length) bytes runs past the end") }
            defer { position += length }
            return (number, wire, position..<(position + length))
        case 0, 1, 5:
            return (number, wire, nil)
        default:
            throw fail("unsupported wire type \(wire) for field \(number)")
        }
    }

    /// Skips the value of a field whose header was read.
    mutating func skip(wire: Int) throws(ImportError) {
        switch wire {
        case 0: _ = try varint()
        case 1:
            guard end - position >= 8 else { throw fail("fixed64 runs past the end") }
            position += 8
        case 5: _ = try fixed32()
        default: break
        }
    }

    func string(_ range: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) }
}

/// Reads TensorFlow 2 object-based checkpoints (`<prefix>.index` + `<prefix>.data-00000-of-00001`,
/// e.g. `model.save_weights('ckpt/model')` with tf-keras): the index's table format (footer,
/// index block, data blocks, masked CRC-32C per block), BundleEntryProto entries, per-tensor
/// CRC-32C, and the object graph that gives every variable its Keras name
/// (`expert_0/kernel0`). Optimizer slots are skipped; sharded and sliced bundles are refused.
public enum TFCheckpointReader {
    static let magic: UInt64 = 0xDB47_7524_8B80_FB57

    static func masked(_ crc: UInt32) -> UInt32 { ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8 }

    struct Entry {
        var dtype = 0
        var shape: [Int] = []
        var shard = 0
        var offset = 0
        var size = 0
        var crc: UInt32 = 0
        var sliced = false
    }

    /// Reads `path` (the `.index` file, or the prefix).
    public static func read(path: String) throws(ImportError) -> SourceCheckpoint {
        let indexPath = path.hasSuffix(".index") ? path : path + ".index"
        let prefix = String(indexPath.dropLast(".index".count))
        let index: ByteStorage
        let data: ByteStorage
        do throws(FormatError) {
            index = try FileIO.map(path: indexPath)
            // The data shard must be a regular file beside the index (no symbolic link, no FIFO).
            let slash = prefix.lastIndex(of: "/")
            let folder = slash.map { String(prefix[..<$0]) } ?? ""
            let base = slash.map { String(prefix[prefix.index(after: $0)...]) } ?? prefix
            data = try FileIO.mapBeneath(
                folder: folder.isEmpty && prefix.hasPrefix("/") ? "/" : folder, relative: base + ".data-00000-of-00001")
        } catch {
            throw .io(error)
        }
        let entries = try table(index.bytes, path: indexPath)
        if let header = entries[""] {
            var reader = ProtoReader(index.bytes, path: indexPath, range: header)
            while !reader.atEnd {
                let field = try reader.field()
                if field.number == 1, field.wire == 0 {
                    let shards = try reader.int("num_shards")
                    guard shards == 1 else { throw .unsupported(path: indexPath, reason: "a checkpoint sharded into \(shards) files") }
                } else if field.number == 2, field.wire == 0 {
                    guard try reader.varint() == 0 else { throw .unsupported(path: indexPath, reason: "a big-endian checkpoint") }
                } else {
                    try reader.skip(wire: field.wire)
                }
            }
        }
        func entry(_ key: String) throws(ImportError) -> Entry? {
            guard let range = entries[key] else { return nil }
            var result = Entry()
            var reader = ProtoReader(index.bytes, path: indexPath, range: range)
            while !reader.atEnd {
                let field = try reader.field()
                switch (field.number, field.wire) {
                case (1, 0): result.dtype = try reader.int("dtype")
                case (2, 2):
                    var shape = ProtoReader(index.bytes, path: indexPath, range: field.range)
                    while !shape.atEnd {
                        let dim = try shape.field()
                        guard dim.number == 2, let dimRange = dim.range else { try shape.skip(wire: dim.wire); continue }
                        var dimReader = ProtoReader(index.bytes, path: indexPath, range: dimRange)
                        while !dimReader.atEnd {
                            let sizeField = try dimReader.field()
                            if sizeField.number == 1, sizeField.wire == 0 {
                                result.shape.append(try dimReader.int("dimension"))
                            } else {
                                try dimReader.skip(wire: sizeField.wire)
                            }
                        }
                        guard result.shape.count <= 32 else { throw reader.fail("tensor '\(key)' has too many dimensions") }
                    }
                case (3, 0): result.shard = try reader.int("shard")
                case (4, 0): result.offset = try reader.int("offset")
                case (5, 0): result.size = try reader.int("size")
                case (6, 5): result.crc = try reader.fixed32()
                case (7, 2): result.sliced = true
                default: try reader.skip(wire: field.wire)
                }
            }
            guard result.offset <= data.bytes.count, result.size <= data.bytes.count - result.offset else {
                throw .malformed(
                    path: prefix + ".data-00000-of-00001", offset: result.offset,
                    reason: "tensor '\(key)' (\(result.size) bytes) lies outside the data file")
            }
            return result
        }

        // The object graph: checkpoint key -> Keras variable name.
        guard let graphEntry = try entry("_CHECKPOINTABLE_OBJECT_GRAPH"), graphEntry.dtype == 7 else {
            throw .malformed(
                path: indexPath, offset: nil,
                reason: "no object graph: not a TF2 object-based checkpoint (TF1 name-based checkpoints are not read)")
        }
        var graph = ProtoReader(
            data.bytes, path: prefix + ".data-00000-of-00001", range: graphEntry.offset..<(graphEntry.offset + graphEntry.size))
        let length = try graph.int("object graph length")
        _ = try graph.fixed32()
        guard length <= graph.end - graph.position else { throw graph.fail("object graph of \(length) bytes runs past its tensor") }
        let graphRange = graph.position..<(graph.position + length)
        var names: [(key: String, name: String)] = []
        var trainingState = 0
        var writtenByKeras3 = false
        var nodes = ProtoReader(data.bytes, path: graph.path, range: graphRange)
        while !nodes.atEnd {
            let node = try nodes.field()
            guard node.number == 1, let nodeRange = node.range else { try nodes.skip(wire: node.wire); continue }
            var object = ProtoReader(data.bytes, path: graph.path, range: nodeRange)
            while !object.atEnd {
                let field = try object.field()
                guard field.number == 2, let attributeRange = field.range else { try object.skip(wire: field.wire); continue }
                var attribute = ProtoReader(data.bytes, path: graph.path, range: attributeRange)
                var fullName = ""
                var key = ""
                while !attribute.atEnd {
                    let part = try attribute.field()
                    if part.number == 2, let r = part.range {
                        fullName = attribute.string(r)
                    } else if part.number == 3, let r = part.range {
                        key = attribute.string(r)
                    } else {
                        try attribute.skip(wire: part.wire)
                    }
                }
                guard key.hasSuffix("/.ATTRIBUTES/VARIABLE_VALUE"), !fullName.isEmpty else { continue }
                if isTrainingState(key) {
                    trainingState += 1
                    continue
                }
                if key.contains("/_operations/") { writtenByKeras3 = true }
                names.append((key, fullName))
            }
            guard names.count <= ZipArchive.maxEntries else {
                throw .limitExceeded(path: graph.path, what: "variables", limit: ZipArchive.maxEntries)
            }
        }

        var tensors: [SourceTensor] = []
        for (key, name) in names {
            guard let item = try entry(key) else {
                throw .malformed(
                    path: indexPath, offset: nil, reason: "the object graph names '\(key)' (\(name)) but the index has no such tensor")
            }
            guard !item.sliced, item.shard == 0 else {
                throw .unsupported(path: indexPath, reason: "tensor '\(name)' is sliced or in another shard")
            }
            let dtype: SourceDType
            switch item.dtype {
            case 1: dtype = .f32
            case 2: dtype = .f64
            case 19: dtype = .f16
            case 14: dtype = .bf16
            case 3: dtype = .i32
            case 9: dtype = .i64
            default: throw .unsupported(path: indexPath, reason: "tensor '\(name)' has TensorFlow dtype \(item.dtype)")
            }
            guard let count = Tensor.checkedElementCount(item.shape), count.multipliedReportingOverflow(by: dtype.size).overflow == false,
                count * dtype.size == item.size
            else {
                throw .malformed(
                    path: indexPath, offset: nil,
                    reason: "tensor '\(name)' holds \(item.size) bytes, shape \(item.shape) needs a different size")
            }
            let bytes = UnsafeRawBufferPointer(rebasing: data.bytes[item.offset..<(item.offset + item.size)])
            guard masked(FastCRC32C.checksum(bytes)) == item.crc else {
                throw .malformed(
                    path: prefix + ".data-00000-of-00001", offset: item.offset, reason: "tensor '\(name)' fails its CRC-32C check")
            }
            tensors.append(SourceTensor(name: name, dtype: dtype, shape: item.shape, storage: data, byteOffset: item.offset))
        }
        guard !tensors.isEmpty else {
            throw .mismatch(
                path: indexPath,
                reason:
                    "the checkpoint holds no model weights, only training state (\(trainingState) optimizer variables and counters)"
                    + (writtenByKeras3 || trainingState > 0
                        ? "; Keras 3 does not write a model's weights into a tf.train.Checkpoint: convert the .weights.h5 or .keras file"
                        : "")
            )
        }
        var checkpoint = SourceCheckpoint(
            tensors: tensors.sorted { KerasH5Reader.layerOrder($0.name) < KerasH5Reader.layerOrder($1.name) }, path: indexPath,
            format: writtenByKeras3 ? "tf-checkpoint-keras3" : "tf-checkpoint")
        checkpoint.trainingState = trainingState
        return checkpoint
    }

    /// Optimizer variables (Adam slots, iteration, learning rate; under `optimizer/`, a model's
    /// own `optimizer/`, or `.OPTIMIZER_SLOT`) and the checkpoint's `save_counter`: training
    /// state, never model weights.
    static func isTrainingState(_ key: String) -> Bool {
        let components = key.split(separator: "/")
        return components.first == "save_counter" || components.contains("optimizer") || components.contains(".OPTIMIZER_SLOT")
    }

    /// Every key of the table with the byte range of its value in `bytes`.
    static func table(_ bytes: UnsafeRawBufferPointer, path: String) throws(ImportError) -> [String: Range<Int>] {
        guard bytes.count >= 48 else { throw .malformed(path: path, offset: 0, reason: "too small for a table footer") }
        let footer = bytes.count - 48
        let stored = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[bytes.count - 8 + $1]) << (8 * UInt64($1)) }
        guard stored == magic else {
            throw .malformed(path: path, offset: bytes.count - 8, reason: "bad table magic: not a TensorFlow checkpoint index")
        }
        var reader = ProtoReader(bytes, path: path, range: footer..<(bytes.count - 8))
        _ = try reader.int("metaindex offset")
        _ = try reader.int("metaindex size")
        let indexOffset = try reader.int("index offset")
        let indexSize = try reader.int("index size")
        let indexBlock = try block(bytes, offset: indexOffset, size: indexSize, path: path)
        var result: [String: Range<Int>] = [:]
        for (_, handle) in try entries(bytes, block: indexBlock, path: path) {
            var h = ProtoReader(bytes, path: path, range: handle)
            let offset = try h.int("block offset")
            let size = try h.int("block size")
            let dataBlock = try block(bytes, offset: offset, size: size, path: path)
            for (key, value) in try entries(bytes, block: dataBlock, path: path) {
                result[key] = value
                guard result.count <= ZipArchive.maxEntries else {
                    throw .limitExceeded(path: path, what: "index entries", limit: ZipArchive.maxEntries)
                }
            }
        }
        return result
    }

    /// A block's contents range, after checking bounds, compression and its masked CRC.
    static func block(_ bytes: UnsafeRawBufferPointer, offset: Int, size: Int, path: String) throws(ImportError) -> Range<Int> {
        guard offset >= 0, size >= 4, offset <= bytes.count, size <= bytes.count - offset - 5 else {
            throw .malformed(path: path, offset: offset, reason: "block of \(size) bytes and its trailer lie outside the index")
        }
        let type = bytes[offset + size]
        guard type == 0 else { throw .unsupported(path: path, reason: "compressed index blocks (type \(type)) are not read") }
        var crc = CRC32C()
        crc.update(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + size + 1)]))
        let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + size + 1 + $1]) << (8 * UInt32($1)) }
        guard masked(crc.value) == stored else { throw .malformed(path: path, offset: offset, reason: "block checksum mismatch") }
        return offset..<(offset + size)
    }

    /// The key/value entries of a block (prefix-compressed keys, restart array at the end).
    static func entries(_ bytes: UnsafeRawBufferPointer, block: Range<Int>, path: String) throws(ImportError) -> [(String, Range<Int>)] {
        let restarts = Int((0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[block.upperBound - 4 + $1]) << (8 * UInt32($1)) })
        guard restarts <= (block.count - 4) / 4 else {
            throw .malformed(path: path, offset: block.lowerBound, reason: "block restart count \(restarts) does not fit")
        }
        let limit = block.upperBound - 4 - 4 * restarts
        var reader = ProtoReader(bytes, path: path, range: block.lowerBound..<limit)
        var key: [UInt8] = []
        var result: [(String, Range<Int>)] = []
        while !reader.atEnd {
            let shared = try reader.int("shared")
            let unshared = try reader.int("unshared")
            let valueLength = try reader.int("value length")
            guard shared <= key.count, unshared <= limit - reader.position, valueLength <= limit - reader.position - unshared else {
                throw reader.fail("block entry runs past the block")
            }
            key = Array(key[0..<shared]) + Array(UnsafeRawBufferPointer(rebasing: bytes[reader.position..<(reader.position + unshared)]))
            reader.position += unshared
            result.append((String(decoding: key, as: UTF8.self), reader.position..<(reader.position + valueLength)))
            reader.position += valueLength
        }
        return result
    }
}
