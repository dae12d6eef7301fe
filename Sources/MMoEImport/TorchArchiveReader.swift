import MMoECore

/// Reads `torch.save` zip archives of state_dicts: `data.pkl` through `TorchPickleReader`
/// (nothing executed), storages from `data/<key>` members (zero-copy views when stored and
/// contiguous), every offset, size and stride checked against the storage's bytes.
public enum TorchArchiveReader {
    /// Largest `data.pkl` accepted.
    public static let maxPickleBytes = 256 << 20

    /// Reads a file.
    public static func read(path: String) throws(ImportError) -> (checkpoint: SourceCheckpoint, notes: [ImportNote]) {
        try read(zip: try ZipArchive(path: path))
    }

    /// Reads an archive image already in memory.
    public static func read(storage: ByteStorage, path: String) throws(ImportError) -> (checkpoint: SourceCheckpoint, notes: [ImportNote]) {
        try read(zip: try ZipArchive(storage: storage, path: path))
    }

    static func read(zip: ZipArchive) throws(ImportError) -> (checkpoint: SourceCheckpoint, notes: [ImportNote]) {
        let path = zip.path
        guard let pickle = zip.entries.first(where: { $0.name.hasSuffix("/data.pkl") || $0.name == "data.pkl" }) else {
            throw .malformed(path: path, offset: nil, reason: "no data.pkl member: not a torch.save archive")
        }
        let prefix = String(pickle.name.dropLast("data.pkl".count))
        if let order = zip.entry(prefix + "byteorder") {
            let text = String(decoding: try zip.data(order, limit: 64), as: UTF8.self)
            guard text == "little" else { throw .unsupported(path: path, reason: "saved with byte order '\(text)'; only little-endian checkpoints are read") }
        }
        var reader = TorchPickleReader(bytes: try zip.data(pickle, limit: maxPickleBytes), path: path + ":" + pickle.name)
        defer { reader.tearDown() }
        let root = try reader.run()
        var notes: [ImportNote] = []
        guard case .dict(var dict) = root else {
            throw .unsupported(path: path, reason: "the archive does not hold a dict of tensors; save model.state_dict(), not the model object")
        }
        // Trainer checkpoints nest the state_dict.
        let hasTensors = dict.keys.contains { if case .tensor = dict.values[$0] { true } else { false } }
        if !hasTensors {
            let candidates = ["state_dict", "model_state_dict", "model", "module", "net"]
            guard let key = candidates.first(where: { if case .dict = dict.values[$0] { true } else { false } }),
                case .dict(let inner)? = dict.values[key]
            else { throw .unsupported(path: path, reason: "no tensors at the top level or under state_dict/model_state_dict/model") }
            notes.append(ImportNote(.inferred, "using the state_dict under key '\(key)'; other keys (\(dict.keys.filter { $0 != key }.joined(separator: ", "))) ignored"))
            dict = inner
        }
        var tensors: [SourceTensor] = []
        var storages: [String: ByteStorage] = [:]
        for name in dict.keys {
            guard case .tensor(let ref)? = dict.values[name] else {
                notes.append(ImportNote(.ignored, "'\(name)' is not a tensor"))
                continue
            }
            let member = prefix + "data/" + ref.storage.key
            guard let entry = zip.entry(member) else {
                throw .malformed(path: path, offset: nil, reason: "tensor '\(name)' refers to missing storage member '\(member)'")
            }
            let itemSize = ref.storage.dtype.size
            guard entry.size == ref.storage.count * itemSize else {
                throw .malformed(path: path, offset: entry.dataOffset, reason: "storage '\(member)' holds \(entry.size) bytes, its record says \(ref.storage.count) x \(itemSize)")
            }
            guard let count = Tensor.checkedElementCount(ref.shape) else { throw .malformed(path: path, offset: nil, reason: "tensor '\(name)' has an invalid size \(ref.shape)") }
            // Highest element index touched, checked against the storage.
            var extent = ref.offset
            if count > 0 {
                for (size, stride) in Swift.zip(ref.shape, ref.strides) {
                    let (product, overflow) = (size - 1).multipliedReportingOverflow(by: stride)
                    guard !overflow, extent <= Int.max - product else { throw .malformed(path: path, offset: nil, reason: "tensor '\(name)' strides overflow") }
                    extent += product
                }
                guard extent < ref.storage.count else {
                    throw .malformed(path: path, offset: entry.dataOffset, reason: "tensor '\(name)' (offset \(ref.offset), size \(ref.shape), stride \(ref.strides)) reads past its storage of \(ref.storage.count) elements")
                }
            }
            let contiguous = isContiguous(shape: ref.shape, strides: ref.strides)
            if entry.method == 0, contiguous {
                tensors.append(SourceTensor(name: name, dtype: ref.storage.dtype, shape: ref.shape, storage: zip.storage, byteOffset: entry.dataOffset + ref.offset * itemSize))
                continue
            }
            let bytes: ByteStorage
            if let cached = storages[member] {
                bytes = cached
            } else {
                bytes = ByteStorage(copying: try zip.data(entry, limit: entry.size))
                storages[member] = bytes
            }
            if contiguous {
                tensors.append(SourceTensor(name: name, dtype: ref.storage.dtype, shape: ref.shape, storage: bytes, byteOffset: ref.offset * itemSize))
            } else {
                tensors.append(gather(name: name, dtype: ref.storage.dtype, shape: ref.shape, strides: ref.strides, offset: ref.offset, from: bytes))
            }
        }
        return (SourceCheckpoint(tensors: tensors, path: path), notes)
    }

    static func isContiguous(shape: [Int], strides: [Int]) -> Bool {
        var expected = 1
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            if shape[axis] != 1, strides[axis] != expected { return false }
            expected *= shape[axis]
        }
        return true
    }

    /// Copies a strided view into row-major order (indices already checked in range).
    static func gather(name: String, dtype: SourceDType, shape: [Int], strides: [Int], offset: Int, from storage: ByteStorage) -> SourceTensor {
        let output = copyStrided(storage.bytes, shape: shape, strides: strides, offset: offset, itemSize: dtype.size)
        return SourceTensor(name: name, dtype: dtype, shape: shape, storage: ByteStorage(copying: output), byteOffset: 0)
    }
}
