import CHDF5
import MMoECore
import MMoEFormat

/// Writes and reads models in the swift-mmoe HDF5 layout (see `Docs/HDF5.md`):
/// `/spec` (JSON string), `/tensors/<name with '.' as '/'>` datasets with `name` and `dtype`
/// attributes, root attributes `mmoe_format` and `mmoe_version`.
public enum HDF5Codec {
    /// Value of the root attribute `mmoe_format`.
    public static let formatName = "mmoe-hdf5"
    /// Value of the root attribute `mmoe_version`.
    public static let version = "1"
    /// A tensor's logical size may exceed its stored size by at most this factor (plus 1 MiB):
    /// the bound on what a compressed dataset can make us allocate.
    public static let maxExpansion = 64

    /// The dataset path of a canonical tensor name.
    public static func datasetPath(_ name: String) -> String { "/tensors/" + name.replacingOccurrences(of: ".", with: "/") }

    /// The memory (and file) type used for a dtype. Caller keeps the handle alive while used.
    static func memoryType(_ dtype: DType, path: String) throws(HDF5Error) -> HDF5Handle {
        switch dtype {
        case .f32: return HDF5Handle(try HDF5Library.check(H5Tcopy(mmoe_h5t_ieee_f32le()), path: path, "copy type"), closer: H5Tclose)
        case .f16: return HDF5Handle(try HDF5Library.check(mmoe_h5t_create_f16(), path: path, "create float16 type"), closer: H5Tclose)
        case .bf16: return HDF5Handle(try HDF5Library.check(H5Tcopy(mmoe_h5t_std_u16le()), path: path, "copy type"), closer: H5Tclose)
        case .i8: return HDF5Handle(try HDF5Library.check(H5Tcopy(mmoe_h5t_std_i8le()), path: path, "copy type"), closer: H5Tclose)
        }
    }

    // MARK: Writing

    /// Writes the model atomically (temporary file in the target folder, then rename).
    public static func write(spec: ModelSpec, tensors: TensorStore, to path: String) throws(HDF5Error) {
        do throws(ModelError) {
            try spec.validate(tensors: tensors)
        } catch {
            throw .invalidModel(path: path, error)
        }
        let temporary = FileIO.temporaryPath(for: path)
        do throws(HDF5Error) {
            try writeFile(spec: spec, tensors: tensors, to: temporary)
        } catch {
            FileIO.discard(temporary)
            throw error
        }
        do throws(FormatError) {
            try FileIO.commit(temporary: temporary, to: path)
        } catch {
            throw .io(error)
        }
    }

    static func writeFile(spec: ModelSpec, tensors: TensorStore, to path: String) throws(HDF5Error) {
        try HDF5Library.locked { () throws(HDF5Error) in
            let file = HDF5Handle.file(
                try HDF5Library.check(H5Fcreate(path, mmoe_h5f_acc_trunc(), mmoe_h5p_default(), mmoe_h5p_default()), path: path, "create"))
            try setStringAttribute(file.id, "mmoe_format", formatName, path: path)
            try setStringAttribute(file.id, "mmoe_version", version, path: path)
            try writeString(file.id, "spec", String(decoding: spec.encodedJSON(pretty: true), as: UTF8.self), path: path)
            let links = HDF5Handle.plist(try HDF5Library.check(H5Pcreate(mmoe_h5p_link_create()), path: path, "create property list"))
            try HDF5Library.check(H5Pset_create_intermediate_group(links.id, 1), path: path, "set intermediate groups")
            for name in tensors.sortedNames {
                guard let tensor = tensors[name] else { continue }
                let dataset = datasetPath(name)
                let type = try memoryType(tensor.dtype, path: path)
                let dims = tensor.shape.map { hsize_t($0) }
                let space = HDF5Handle.space(
                    try HDF5Library.check(
                        dims.isEmpty ? H5Screate(H5S_SCALAR) : H5Screate_simple(Int32(dims.count), dims, nil), path: path,
                        "create dataspace", dataset))
                let d = HDF5Handle.dataset(
                    try HDF5Library.check(
                        H5Dcreate2(file.id, dataset, type.id, space.id, links.id, mmoe_h5p_default(), mmoe_h5p_default()), path: path,
                        "create dataset",
                        dataset))
                if tensor.elementCount > 0 {
                    let status = H5Dwrite(d.id, type.id, mmoe_h5s_all(), mmoe_h5s_all(), mmoe_h5p_default(), tensor.rawBytes.baseAddress)
                    try HDF5Library.check(status, path: path, "write", dataset)
                }
                try setStringAttribute(d.id, "name", name, path: path)
                try setStringAttribute(d.id, "dtype", tensor.dtype.rawValue, path: path)
            }
            try HDF5Library.check(H5Fflush(file.id, H5F_SCOPE_GLOBAL), path: path, "flush")
        }
    }

    static func stringType(path: String) throws(HDF5Error) -> HDF5Handle {
        let type = HDF5Handle.type(try HDF5Library.check(H5Tcopy(mmoe_h5t_c_s1()), path: path, "copy type"))
        try HDF5Library.check(H5Tset_size(type.id, mmoe_h5t_variable()), path: path, "set string size")
        try HDF5Library.check(H5Tset_cset(type.id, H5T_CSET_UTF8), path: path, "set string charset")
        return type
    }

    static func setStringAttribute(_ object: hid_t, _ name: String, _ value: String, path: String) throws(HDF5Error) {
        let type = try stringType(path: path)
        let space = HDF5Handle.space(try HDF5Library.check(H5Screate(H5S_SCALAR), path: path, "create dataspace"))
        let attribute = HDF5Handle.attribute(
            try HDF5Library.check(
                H5Acreate2(object, name, type.id, space.id, mmoe_h5p_default(), mmoe_h5p_default()), path: path, "create attribute", name))
        let status = value.withCString { pointer -> herr_t in
            var p: UnsafePointer<CChar>? = pointer
            return H5Awrite(attribute.id, type.id, &p)
        }
        try HDF5Library.check(status, path: path, "write attribute", name)
    }

    static func writeString(_ location: hid_t, _ name: String, _ value: String, path: String) throws(HDF5Error) {
        let type = try stringType(path: path)
        let space = HDF5Handle.space(try HDF5Library.check(H5Screate(H5S_SCALAR), path: path, "create dataspace"))
        let d = HDF5Handle.dataset(
            try HDF5Library.check(
                H5Dcreate2(location, name, type.id, space.id, mmoe_h5p_default(), mmoe_h5p_default(), mmoe_h5p_default()), path: path,
                "create dataset", name))
        let status = value.withCString { pointer -> herr_t in
            var p: UnsafePointer<CChar>? = pointer
            return H5Dwrite(d.id, type.id, mmoe_h5s_all(), mmoe_h5s_all(), mmoe_h5p_default(), &p)
        }
        try HDF5Library.check(status, path: path, "write", name)
    }

    // MARK: Reading

    /// Reads a model in this layout. Shapes are checked against the spec from metadata
    /// before any tensor data is read.
    public static func read(path: String) throws(HDF5Error) -> (spec: ModelSpec, tensors: TensorStore) {
        let file = try HDF5File(path: path)
        guard try file.stringAttribute("/", "mmoe_format") == formatName else {
            throw .invalidLayout(
                path: path, object: "/", reason: "attribute mmoe_format is not \"\(formatName)\" (not a swift-mmoe HDF5 model)")
        }
        let version = try file.stringAttribute("/", "mmoe_version") ?? ""
        guard version == self.version else {
            throw .invalidLayout(
                path: path, object: "/", reason: "mmoe_version \"\(version)\" is not supported (this build reads \(self.version))")
        }
        guard file.exists("/spec") else { throw .invalidLayout(path: path, object: "/spec", reason: "missing") }
        let spec: ModelSpec
        let layout: ModelLayout
        let json = Array(try file.stringDataset("/spec").utf8)
        do throws(ModelError) {
            spec = try ModelSpec.decode(json: json)
            layout = try spec.validateStructure()
        } catch {
            throw .invalidModel(path: path, error)
        }
        // Expected shapes by name, for checking before reading.
        var expected: [String: [Int]] = [:]
        for requirement in layout.requirements { expected[requirement.name] = requirement.shape }
        for table in spec.tables {
            expected[TensorNames.embedding(table.name)] = [table.vocabSize, table.dim]
            expected[TensorNames.embeddingScale(table.name)] = [table.vocabSize]
            expected[TensorNames.embeddingOffset(table.name)] = [table.vocabSize]
        }
        var store = TensorStore()
        let datasets = file.exists("/tensors") ? try file.datasets(under: "/tensors") : []
        for dataset in datasets {
            guard let name = try file.stringAttribute(dataset, "name") else {
                throw .invalidLayout(path: path, object: dataset, reason: "tensor dataset without a 'name' attribute")
            }
            guard datasetPath(name) == dataset else {
                throw .invalidLayout(path: path, object: dataset, reason: "its name attribute '\(name)' does not match its path")
            }
            guard let dtypeName = try file.stringAttribute(dataset, "dtype"), let dtype = DType(rawValue: dtypeName) else {
                throw .invalidLayout(path: path, object: dataset, reason: "missing or unknown 'dtype' attribute")
            }
            guard let shape = expected[name] else { throw .invalidModel(path: path, .unexpectedTensor(name: name)) }
            let info = try file.info(dataset)
            guard info.shape == shape else {
                throw .invalidModel(path: path, .shapeMismatch(tensor: name, expected: shape, actual: info.shape))
            }
            let kindMatches: Bool
            switch (dtype, info.kind) {
            case (.f32, .float(4)), (.f16, .float(2)), (.bf16, .integer(2, false)), (.i8, .integer(1, true)): kindMatches = true
            default: kindMatches = false
            }
            guard kindMatches else {
                throw .invalidLayout(path: path, object: dataset, reason: "stored element type \(info.kind) does not hold dtype \(dtype)")
            }
            let logical = (Tensor.checkedElementCount(shape) ?? Int.max) / 1 * dtype.byteWidth
            let (bound, overflow) = info.storageSize.multipliedReportingOverflow(by: maxExpansion)
            guard logical <= (overflow ? Int.max : bound + (1 << 20)) else {
                throw .invalidLayout(
                    path: path, object: dataset,
                    reason: "\(logical) bytes from \(info.storageSize) stored bytes exceeds the \(maxExpansion)x expansion limit")
            }
            let bytes = try file.read(dataset, as: dtype, maxBytes: logical)
            do throws(ModelError) {
                try store.insert(try Tensor(dtype: dtype, shape: shape, bytes: bytes), named: name)
            } catch {
                throw .invalidModel(path: path, error)
            }
        }
        do throws(ModelError) {
            try spec.validate(tensors: store)
        } catch {
            throw .invalidModel(path: path, error)
        }
        return (spec, store)
    }
}
