import MMoECore
import MMoERuntime

/// One entry of a `.mmoe` tensor table.
public struct TensorEntry: Sendable, Equatable {
    /// Canonical tensor name.
    public let name: String
    /// Element type.
    public let dtype: DType
    /// Shape.
    public let shape: [Int]
    /// Absolute byte offset of the data in the file.
    public let offset: Int
    /// Data length in bytes.
    public let length: Int
    /// CRC-32C of the data.
    public let checksum: UInt32
}

/// An opened `.mmoe` file: the spec, the tensor table and zero-copy tensor views into the
/// mapping. Opening reads only the header; tensor bytes are touched when used.
public struct ModelFile: Sendable {
    /// The file's path.
    public let path: String
    /// Format version (major, minor).
    public let version: (major: Int, minor: Int)
    /// The model description.
    public let spec: ModelSpec
    /// The tensor table in file order.
    public let entries: [TensorEntry]
    /// The tensors, viewing the mapped file.
    public let tensors: TensorStore
    /// The layout `spec` and `tensors` were validated against when the file was opened.
    let layout: ModelLayout
    /// The whole mapped file.
    public let storage: ByteStorage

    /// Maps and validates `path`: header checksum, table bounds, alignment, no gaps,
    /// overlaps or trailing bytes, spec against tensors. Per-tensor checksums are checked
    /// only when `verifyChecksums` is set (that reads every byte).
    public init(path: String, verifyChecksums: Bool = false) throws(FormatError) {
        let storage = try FileIO.map(path: path)
        try self.init(storage: storage, path: path, verifyChecksums: verifyChecksums)
    }

    /// Parses a file image already in memory (same checks as opening a file).
    public init(storage: ByteStorage, path: String, verifyChecksums: Bool = false) throws(FormatError) {
        self.path = path
        self.storage = storage
        let bytes = storage.bytes
        var reader = ByteReader(bytes: bytes, path: path)
        try reader.need(ModelFileLayout.magic.count, "magic")
        guard Array(try reader.slice(8, "magic")) == ModelFileLayout.magic else { throw .notAModelFile(path: path) }
        try reader.need(ModelFileLayout.preambleSize - 8, "preamble")
        let major = try reader.integer(UInt16.self, "major version")
        let minor = try reader.integer(UInt16.self, "minor version")
        guard major == ModelFileLayout.major else { throw .unsupportedVersion(path: path, major: Int(major), minor: Int(minor)) }
        let required = try reader.integer(UInt32.self, "required flags")
        guard required & ~ModelFileLayout.knownRequiredFlags == 0 else { throw .unknownRequiredFlags(path: path, flags: required) }
        _ = try reader.integer(UInt32.self, "optional flags")
        let tensorCount = Int(try reader.integer(UInt32.self, "tensor count"))
        let specOffset = try reader.length("spec offset")
        let specLength = try reader.length("spec length")
        let tableOffset = try reader.length("table offset")
        let tableLength = try reader.length("table length")
        let storedChecksum = try reader.integer(UInt32.self, "header checksum")
        let reserved = try reader.integer(UInt32.self, "reserved")
        guard reserved == 0 else { throw .invalidTable(path: path, offset: 60, reason: "reserved field is not zero") }
        guard specOffset == ModelFileLayout.preambleSize else {
            throw .invalidTable(path: path, offset: 24, reason: "spec offset must be \(ModelFileLayout.preambleSize), got \(specOffset)")
        }
        guard specLength <= ModelFileLayout.maxSpecBytes else {
            throw .invalidTable(
                path: path, offset: 32, reason: "spec length \(specLength) exceeds the \(ModelFileLayout.maxSpecBytes)-byte limit")
        }
        guard tableOffset == specOffset + specLength else {
            throw .invalidTable(path: path, offset: 40, reason: "the tensor table must follow the spec directly")
        }
        guard tensorCount <= ModelFileLayout.maxTensors else {
            throw .invalidTable(path: path, offset: 20, reason: "tensor count \(tensorCount) exceeds the limit")
        }
        // Every table entry takes at least 2 + 2 + 8 + 8 + 4 bytes: bound the count by the bytes.
        guard tensorCount <= tableLength / 24 || tensorCount == 0 else {
            throw .invalidTable(path: path, offset: 20, reason: "\(tensorCount) tensors cannot fit in a \(tableLength)-byte table")
        }
        let (headerEnd, overflow) = tableOffset.addingReportingOverflow(tableLength)
        guard !overflow, headerEnd <= bytes.count else {
            throw .truncated(path: path, what: "header", offset: 0, needed: overflow ? Int.max : headerEnd, available: bytes.count)
        }
        var crc = CRC32C()
        crc.update(UnsafeRawBufferPointer(rebasing: bytes[0..<56]))
        crc.update(UnsafeRawBufferPointer(rebasing: bytes[60..<headerEnd]))
        guard crc.value == storedChecksum else {
            throw .headerChecksumMismatch(path: path, stored: storedChecksum, computed: crc.value)
        }
        let specBytes = UnsafeRawBufferPointer(rebasing: bytes[specOffset..<tableOffset])
        let spec: ModelSpec
        let layout: ModelLayout
        do throws(ModelError) {
            (spec, layout) = try ModelSpec.decodeWithLayout(json: Array(specBytes))
        } catch {
            throw .invalidModel(path: path, error)
        }

        var table = ByteReader(bytes: bytes, path: path, offset: tableOffset, limit: headerEnd)
        var entries: [TensorEntry] = []
        entries.reserveCapacity(tensorCount)
        var store = TensorStore()
        guard var expectedOffset = ModelFileLayout.alignUp(headerEnd, ModelFileLayout.alignment) else {
            throw .invalidTable(path: path, offset: tableOffset, reason: "header end overflows")
        }
        var previousEnd = headerEnd
        var names = Set<String>()
        for index in 0..<tensorCount {
            let entryOffset = table.offset
            let nameLength = Int(try table.integer(UInt16.self, "tensor \(index) name length"))
            guard nameLength >= 1 else { throw .invalidTable(path: path, offset: entryOffset, reason: "tensor \(index) has an empty name") }
            guard let name = String(validating: Array(try table.slice(nameLength, "tensor \(index) name")), as: UTF8.self) else {
                throw .invalidTable(path: path, offset: entryOffset, reason: "tensor \(index) name is not UTF-8")
            }
            guard names.insert(name).inserted else {
                throw .invalidTable(path: path, offset: entryOffset, reason: "duplicate tensor '\(name)'")
            }
            let code = try table.integer(UInt8.self, "tensor '\(name)' dtype")
            guard let dtype = DType(code: code) else {
                throw .invalidTable(path: path, offset: entryOffset, reason: "tensor '\(name)' has unknown dtype code \(code)")
            }
            let rank = Int(try table.integer(UInt8.self, "tensor '\(name)' rank"))
            guard rank <= ModelFileLayout.maxRank else {
                throw .invalidTable(
                    path: path, offset: entryOffset, reason: "tensor '\(name)' has rank \(rank) > \(ModelFileLayout.maxRank)")
            }
            var shape: [Int] = []
            for _ in 0..<rank { shape.append(try table.length("tensor '\(name)' dimension")) }
            let offset = try table.length("tensor '\(name)' offset")
            let length = try table.length("tensor '\(name)' length")
            let checksum = try table.integer(UInt32.self, "tensor '\(name)' checksum")
            guard let count = Tensor.checkedElementCount(shape), count.multipliedReportingOverflow(by: dtype.byteWidth).overflow == false,
                count * dtype.byteWidth == length
            else {
                throw .invalidTable(
                    path: path, offset: entryOffset, reason: "tensor '\(name)' length \(length) does not match shape \(shape) of \(dtype)")
            }
            guard let aligned = ModelFileLayout.alignUp(previousEnd, ModelFileLayout.alignment(forLength: length)) else {
                throw .invalidTable(path: path, offset: entryOffset, reason: "tensor '\(name)' offset overflows")
            }
            expectedOffset = aligned
            guard offset == expectedOffset else {
                throw .invalidTable(
                    path: path, offset: entryOffset,
                    reason: "tensor '\(name)' data must start at \(expectedOffset) (aligned, no gap or overlap), found \(offset)")
            }
            let (end, endOverflow) = offset.addingReportingOverflow(length)
            guard !endOverflow, end <= bytes.count else {
                throw .truncated(
                    path: path, what: "tensor '\(name)' data", offset: offset, needed: length, available: max(bytes.count - offset, 0))
            }
            if bytes[previousEnd..<offset].contains(where: { $0 != 0 }) {
                throw .invalidTable(path: path, offset: previousEnd, reason: "padding before tensor '\(name)' is not zero")
            }
            previousEnd = end
            let entry = TensorEntry(name: name, dtype: dtype, shape: shape, offset: offset, length: length, checksum: checksum)
            entries.append(entry)
            do throws(ModelError) {
                try store.insert(try Tensor(dtype: dtype, shape: shape, storage: storage, byteOffset: offset), named: name)
            } catch {
                throw .invalidModel(path: path, error)
            }
        }
        guard table.remaining == 0 else {
            throw .invalidTable(
                path: path, offset: table.offset, reason: "\(table.remaining) bytes left in the tensor table after \(tensorCount) entries")
        }
        guard previousEnd == bytes.count else {
            throw .trailingBytes(path: path, offset: previousEnd, count: bytes.count - previousEnd)
        }
        do throws(ModelError) {
            try spec.validate(tensors: store, layout: layout)
        } catch {
            throw .invalidModel(path: path, error)
        }
        self.layout = layout
        self.version = (Int(major), Int(minor))
        self.spec = spec
        self.entries = entries
        self.tensors = store
        if verifyChecksums { try self.verifyChecksums() }
    }

    /// Recomputes every tensor's CRC-32C; throws at the first mismatch.
    public func verifyChecksums() throws(FormatError) {
        for entry in entries {
            let computed = FastCRC32C.checksum(
                UnsafeRawBufferPointer(rebasing: storage.bytes[entry.offset..<(entry.offset + entry.length)]))
            guard computed == entry.checksum else {
                throw .tensorChecksumMismatch(path: path, tensor: entry.name, stored: entry.checksum, computed: computed)
            }
        }
    }

    /// Compiles the model for prediction (the embedding tables stay in the mapping).
    public func model() throws(FormatError) -> Model {
        do throws(ModelError) {
            return try Model(spec: spec, tensors: tensors, validatedLayout: layout)
        } catch {
            throw .invalidModel(path: path, error)
        }
    }
}

/// Writes `.mmoe` files.
public enum ModelFileWriter {
    /// The header (preamble, spec, table, padding) and the data layout for a model.
    static func plan(spec: ModelSpec, tensors: TensorStore) -> (header: [UInt8], order: [(name: String, tensor: Tensor, offset: Int)]) {
        let specJSON = spec.encodedJSON()
        let names = tensors.sortedNames
        // Table size first, so data offsets can be computed.
        var tableSize = 0
        for name in names {
            let tensor = tensors[name]
            tableSize += 2 + name.utf8.count + 2 + 8 * (tensor?.shape.count ?? 0) + 8 + 8 + 4
        }
        let headerEnd = ModelFileLayout.preambleSize + specJSON.count + tableSize
        var offset = headerEnd
        var order: [(String, Tensor, Int)] = []
        var table = ByteWriter()
        for name in names {
            guard let tensor = tensors[name] else { continue }
            offset = ModelFileLayout.alignUp(offset, ModelFileLayout.alignment(forLength: tensor.byteCount)) ?? offset
            order.append((name, tensor, offset))
            table.integer(UInt16(name.utf8.count))
            table.append(Array(name.utf8))
            table.integer(tensor.dtype.code)
            table.integer(UInt8(tensor.shape.count))
            for dimension in tensor.shape { table.integer(UInt64(dimension)) }
            table.integer(UInt64(offset))
            table.integer(UInt64(tensor.byteCount))
            table.integer(FastCRC32C.checksum(tensor.rawBytes))
            offset += tensor.byteCount
        }
        var preamble = ByteWriter()
        preamble.append(ModelFileLayout.magic)
        preamble.integer(ModelFileLayout.major)
        preamble.integer(ModelFileLayout.minor)
        preamble.integer(UInt32(0))  // required flags
        preamble.integer(UInt32(0))  // optional flags
        preamble.integer(UInt32(names.count))
        preamble.integer(UInt64(ModelFileLayout.preambleSize))
        preamble.integer(UInt64(specJSON.count))
        preamble.integer(UInt64(ModelFileLayout.preambleSize + specJSON.count))
        preamble.integer(UInt64(tableSize))
        var crc = CRC32C()
        preamble.bytes.withUnsafeBytes { crc.update($0) }
        let reserved: [UInt8] = [0, 0, 0, 0]
        reserved.withUnsafeBytes { crc.update($0) }
        specJSON.withUnsafeBytes { crc.update($0) }
        table.bytes.withUnsafeBytes { crc.update($0) }
        preamble.integer(crc.value)
        preamble.integer(UInt32(0))
        return (preamble.bytes + specJSON + table.bytes, order)
    }

    static func validateForWriting(spec: ModelSpec, tensors: TensorStore, path: String) throws(FormatError) {
        do throws(ModelError) {
            try spec.validate(tensors: tensors)
        } catch {
            throw .invalidModel(path: path, error)
        }
        for name in tensors.names where name.utf8.count > Int(UInt16.max) {
            throw .invalidModel(path: path, .invalidTensor(name: name, reason: "name longer than 65535 bytes"))
        }
    }

    /// Writes the model atomically (temporary file in the target folder, fsync, rename).
    /// The same model always gives the same bytes.
    public static func write(spec: ModelSpec, tensors: TensorStore, to path: String) throws(FormatError) {
        try validateForWriting(spec: spec, tensors: tensors, path: path)
        let (header, order) = plan(spec: spec, tensors: tensors)
        try FileIO.writeAtomically(path: path) { (sink: inout FileSink) throws(FormatError) in
            try sink.write(header)
            for item in order {
                try sink.zeros(item.offset - sink.written)
                try sink.write(item.tensor.rawBytes)
            }
        }
    }

    /// The file image in memory (for tests and small models).
    public static func encode(spec: ModelSpec, tensors: TensorStore) throws(FormatError) -> [UInt8] {
        try validateForWriting(spec: spec, tensors: tensors, path: "<memory>")
        let (header, order) = plan(spec: spec, tensors: tensors)
        var bytes = header
        for item in order {
            bytes.append(contentsOf: [UInt8](repeating: 0, count: item.offset - bytes.count))
            bytes.append(contentsOf: item.tensor.rawBytes)
        }
        return bytes
    }
}

extension Model {
    /// Opens a `.mmoe` file (memory-mapped) and compiles it.
    public static func open(path: String, verifyChecksums: Bool = false) throws(FormatError) -> Model {
        try ModelFile(path: path, verifyChecksums: verifyChecksums).model()
    }
}
