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

    /// Keys under which training checkpoints keep the model's weights, in order of preference
    /// (the tutorial form `model_state_dict`, Lightning's `state_dict`, `{"model": ...}`).
    static let weightKeys = ["state_dict", "model_state_dict", "model", "model_state", "module", "net", "network", "weights"]
    /// Keys of averaged copies (EMA, SWA): used only when no other weights are present.
    static let averagedKeys = ["ema", "model_ema", "ema_model", "ema_state_dict", "state_dict_ema", "swa_model", "averaged_model"]

    static func holdsTensors(_ dict: PickleDict) -> Bool {
        dict.keys.contains { if case .tensor = dict.values[$0] { true } else { false } }
    }

    /// The state_dict of a checkpoint: the top level when it holds tensors, else the weights a
    /// training checkpoint nests (optimizer state, schedulers, counters and callbacks skipped
    /// with one note; an EMA/SWA copy is used only when it is the only weights present).
    static func trainingCheckpointWeights(_ dict: PickleDict, notes: inout [ImportNote], path: String) throws(ImportError) -> PickleDict {
        if holdsTensors(dict) { return dict }
        func nested(_ key: String) -> PickleDict? {
            guard case .dict(let inner)? = dict.values[key], holdsTensors(inner) else { return nil }
            return inner
        }
        let averaged = averagedKeys.filter { nested($0) != nil }
        guard let key = weightKeys.first(where: { nested($0) != nil }) ?? averaged.first, let weights = nested(key) else {
            let found = dict.keys.prefix(12).map { "'\(String($0.prefix(64)))'" }.joined(separator: ", ")
            throw .unsupported(
                path: path,
                reason:
                    "no tensors at the top level nor under \((weightKeys + averagedKeys).joined(separator: "/")) (keys: "
                    + "\(found)); save model.state_dict()"
            )
        }
        let skipped = dict.keys.filter { $0 != key }
        notes.append(ImportNote(.inferred, "a training checkpoint: using the weights under '\(key)'"))
        if !skipped.isEmpty {
            notes.append(
                ImportNote(
                    .ignored,
                    "training state: \(skipped.prefix(12).map { String($0.prefix(64)) }.joined(separator: ", "))"
                        + (skipped.count > 12 ? ", ..." : "")
                ))
        }
        if let other = averaged.first(where: { $0 != key }) {
            notes.append(
                ImportNote(
                    .ignored,
                    "the averaged (EMA/SWA) weights under '\(other)' are not used; to convert them, torch.save that state_dict on its own"))
        }
        return weights
    }

    /// Lightning checkpoints prefix every key with the LightningModule's attribute
    /// (`model.experts.0...`): that common first component is removed.
    static func lightningPrefix(root: PickleValue, weights: PickleDict) -> String? {
        guard case .dict(let top) = root, top.values["pytorch-lightning_version"] != nil || top.values["optimizer_states"] != nil,
            let first = weights.keys.first, let dot = first.firstIndex(of: ".")
        else { return nil }
        let prefix = String(first[...dot])
        return weights.keys.allSatisfy { $0.hasPrefix(prefix) } ? prefix : nil
    }

    static func read(zip: ZipArchive) throws(ImportError) -> (checkpoint: SourceCheckpoint, notes: [ImportNote]) {
        let path = zip.path
        let pickles = zip.entries.filter { $0.name.hasSuffix("/data.pkl") || $0.name == "data.pkl" }
        guard let pickle = pickles.first else {
            throw .malformed(path: path, offset: nil, reason: "no data.pkl member: not a torch.save archive")
        }
        // torch refuses an archive with two record prefixes; which one is "the" model would be a guess.
        guard pickles.count == 1 else {
            throw .malformed(
                path: path, offset: nil,
                reason:
                    "\(pickles.count) data.pkl members ("
                    + pickles.prefix(3).map { "'\(String($0.name.prefix(64)))'" }.joined(separator: ", ")
                    + "): a torch.save archive has one"
            )
        }
        let prefix = String(pickle.name.dropLast("data.pkl".count))
        if let order = zip.entry(prefix + "byteorder") {
            let text = String(decoding: try zip.data(order, limit: 64), as: UTF8.self)
            guard text == "little" else {
                throw .unsupported(path: path, reason: "saved with byte order '\(text)'; only little-endian checkpoints are read")
            }
        }
        var reader = TorchPickleReader(bytes: try zip.data(pickle, limit: maxPickleBytes), path: path + ":" + pickle.name)
        defer { reader.tearDown() }
        let root = try reader.run()
        var notes: [ImportNote] = []
        guard case .dict(var dict) = root else {
            throw .unsupported(
                path: path, reason: "the archive does not hold a dict of tensors; save model.state_dict(), not the model object")
        }
        dict = try trainingCheckpointWeights(dict, notes: &notes, path: path)
        var renamed: [String: String] = [:]
        if let prefix = lightningPrefix(root: root, weights: dict) {
            for key in dict.keys { renamed[key] = String(key.dropFirst(prefix.count)) }
            notes.append(ImportNote(.ignored, "removed the LightningModule attribute prefix '\(prefix)' from \(dict.keys.count) keys"))
        }
        var tensors: [SourceTensor] = []
        var storages: [String: ByteStorage] = [:]
        var checked = Set<String>()
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
                throw .malformed(
                    path: path, offset: entry.dataOffset,
                    reason: "storage '\(member)' holds \(entry.size) bytes, its record says \(ref.storage.count) x \(itemSize)")
            }
            guard let count = Tensor.checkedElementCount(ref.shape) else {
                throw .malformed(path: path, offset: nil, reason: "tensor '\(name)' has an invalid size \(ref.shape)")
            }
            // Highest element index touched, checked against the storage.
            var extent = ref.offset
            if count > 0 {
                for (size, stride) in Swift.zip(ref.shape, ref.strides) {
                    let (product, overflow) = (size - 1).multipliedReportingOverflow(by: stride)
                    guard !overflow, extent <= Int.max - product else {
                        throw .malformed(path: path, offset: nil, reason: "tensor '\(name)' strides overflow")
                    }
                    extent += product
                }
                guard extent < ref.storage.count else {
                    throw .malformed(
                        path: path, offset: entry.dataOffset,
                        reason:
                            "tensor '\(name)' (offset \(ref.offset), size \(ref.shape), stride \(ref.strides)) reads past its "
                            + "storage of \(ref.storage.count) elements"
                    )
                }
            }
            let contiguous = isContiguous(shape: ref.shape, strides: ref.strides)
            if entry.method == 0, contiguous {
                // Used in place: its CRC-32 is checked once here, as `data` checks copied members.
                if !checked.contains(member) {
                    try zip.checkStored(entry)
                    checked.insert(member)
                }
                tensors.append(
                    SourceTensor(
                        name: renamed[name] ?? name, dtype: ref.storage.dtype, shape: ref.shape, storage: zip.storage,
                        byteOffset: entry.dataOffset + ref.offset * itemSize))
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
                tensors.append(
                    SourceTensor(
                        name: renamed[name] ?? name, dtype: ref.storage.dtype, shape: ref.shape, storage: bytes,
                        byteOffset: ref.offset * itemSize))
            } else {
                // A strided view is copied: many views of one storage must not exhaust memory.
                if let reason = MemoryBudget.refusal(count * itemSize, for: "copying the strided tensor '\(String(name.prefix(64)))'") {
                    throw .memory(path: path, reason: reason)
                }
                tensors.append(
                    gather(name: name, dtype: ref.storage.dtype, shape: ref.shape, strides: ref.strides, offset: ref.offset, from: bytes))
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
    static func gather(name: String, dtype: SourceDType, shape: [Int], strides: [Int], offset: Int, from storage: ByteStorage)
        -> SourceTensor
    {
        let output = copyStrided(storage.bytes, shape: shape, strides: strides, offset: offset, itemSize: dtype.size)
        return SourceTensor(name: name, dtype: dtype, shape: shape, storage: ByteStorage(copying: output), byteOffset: 0)
    }
}
