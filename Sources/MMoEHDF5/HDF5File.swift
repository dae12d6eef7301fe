import CHDF5
import MMoECore

/// The element type of an HDF5 dataset, as far as the codecs care.
public enum HDF5ElementKind: Sendable, Equatable {
    /// IEEE float of `size` bytes.
    case float(size: Int)
    /// Integer of `size` bytes.
    case integer(size: Int, signed: Bool)
    /// Fixed or variable-length string.
    case string
    /// Anything else (compound, enum, reference, ...).
    case other
}

/// Shape and element kind of a dataset, read from its metadata only.
public struct HDF5DatasetInfo: Sendable, Equatable {
    /// Dimensions (empty for a scalar).
    public let shape: [Int]
    /// Element kind.
    public let kind: HDF5ElementKind
    /// Bytes the data occupies in the file (compressed size for filtered datasets).
    public let storageSize: Int
}

/// A read-only HDF5 file. Every call goes through `HDF5Library` (one lock, typed errors);
/// soft and external links are refused when listing.
public final class HDF5File: @unchecked Sendable {
    /// The file's path.
    public let path: String
    let handle: HDF5Handle

    /// Largest string (attribute or dataset) read.
    public static let maxStringBytes = 64 << 20

    /// Opens `path` read-only.
    public init(path: String) throws(HDF5Error) {
        self.path = path
        handle = try HDF5Library.locked { () throws(HDF5Error) -> HDF5Handle in
            guard H5Fis_hdf5(path) > 0 else {
                _ = HDF5Library.stackText()
                throw .invalidLayout(path: path, object: "/", reason: "not an HDF5 file (or unreadable)")
            }
            let id = try HDF5Library.check(H5Fopen(path, mmoe_h5f_acc_rdonly(), mmoe_h5p_default()), path: path, "open")
            let file = HDF5Handle.file(id)
            try HDF5File.scan(id, path: path)
            return file
        }
    }

    /// Most links a file may hold (groups, datasets and links together).
    public static let maxLinks = 1_000_000
    /// Deepest link path accepted (`/a/b/c` is 3).
    public static let maxDepth = 64

    /// Refuses, before anything is read, every object that would make libhdf5 open another
    /// file (external or user-defined links, external raw storage, virtual datasets) and files
    /// nested deeper or holding more links than the limits.
    static func scan(_ file: hid_t, path: String) throws(HDF5Error) {
        var object = [CChar](repeating: 0, count: 512)
        let status = object.withUnsafeMutableBufferPointer { mmoe_h5_scan_file(file, maxLinks, Int32(maxDepth), $0.baseAddress, $0.count) }
        let name = String(decoding: object.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let reason: String
        switch Int(status) {
        case MMOE_H5_SCAN_OK: return
        case MMOE_H5_SCAN_EXTERNAL_LINK: reason = "an external link (to another file) is refused"
        case MMOE_H5_SCAN_USER_LINK: reason = "a user-defined link is refused"
        case MMOE_H5_SCAN_EXTERNAL_STORAGE: reason = "a dataset whose data lives in other files (external storage) is refused"
        case MMOE_H5_SCAN_VIRTUAL: reason = "a virtual dataset (mapping other files) is refused"
        case MMOE_H5_SCAN_TOO_DEEP: reason = "nested deeper than \(maxDepth) levels"
        case MMOE_H5_SCAN_TOO_MANY: reason = "the file holds more than \(maxLinks) links"
        default:
            throw .library(path: path, operation: "scan", object: name.isEmpty ? "/" : name, stack: HDF5Library.stackText())
        }
        _ = HDF5Library.stackText()
        throw .unsafeObject(path: path, object: name.isEmpty ? "/" : name, reason: reason)
    }

    /// Whether an object exists at `object` (every component is checked, no error if absent).
    public func exists(_ object: String) -> Bool {
        HDF5Library.locked {
            var prefix = ""
            for component in object.split(separator: "/") {
                prefix += "/" + component
                guard mmoe_h5_exists(handle.id, prefix) != 0 else {
                    _ = HDF5Library.stackText()
                    return false
                }
            }
            return true
        }
    }

    /// Full paths of every dataset below `group`, in name order.
    public func datasets(under group: String) throws(HDF5Error) -> [String] {
        try HDF5Library.locked { () throws(HDF5Error) -> [String] in
            let g = HDF5Handle.group(try HDF5Library.check(H5Gopen2(handle.id, group, mmoe_h5p_default()), path: path, "open group", group))
            var needed = 0
            var count = 0
            var status = mmoe_h5_list_datasets(g.id, nil, 0, &needed, &count)
            if status == -2 { throw .unsafeLink(path: path, group: group) }
            if status < 0 { throw .library(path: path, operation: "list", object: group, stack: HDF5Library.stackText()) }
            var buffer = [CChar](repeating: 0, count: max(needed, 1))
            status = buffer.withUnsafeMutableBufferPointer { mmoe_h5_list_datasets(g.id, $0.baseAddress, $0.count, &needed, &count) }
            if status == -2 { throw .unsafeLink(path: path, group: group) }
            if status < 0 { throw .library(path: path, operation: "list", object: group, stack: HDF5Library.stackText()) }
            let prefix = group.hasSuffix("/") ? group : group + "/"
            return buffer.prefix(needed).split(separator: 0).map {
                prefix + String(decoding: $0.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
        }
    }

    static func kind(of type: hid_t) -> HDF5ElementKind {
        let size = Int(H5Tget_size(type))
        switch H5Tget_class(type) {
        case H5T_FLOAT: return .float(size: size)
        case H5T_INTEGER: return .integer(size: size, signed: H5Tget_sign(type) == H5T_SGN_2)
        case H5T_STRING: return .string
        default: return .other
        }
    }

    /// Shape and element kind of a dataset.
    public func info(_ dataset: String) throws(HDF5Error) -> HDF5DatasetInfo {
        try HDF5Library.locked { () throws(HDF5Error) -> HDF5DatasetInfo in
            let d = HDF5Handle.dataset(
                try HDF5Library.check(H5Dopen2(handle.id, dataset, mmoe_h5p_default()), path: path, "open dataset", dataset))
            let space = HDF5Handle.space(try HDF5Library.check(H5Dget_space(d.id), path: path, "get dataspace", dataset))
            let rank = Int(try HDF5Library.check(H5Sget_simple_extent_ndims(space.id), path: path, "get rank", dataset))
            guard rank <= 32 else { throw .invalidLayout(path: path, object: dataset, reason: "rank \(rank) is too high") }
            var dims = [hsize_t](repeating: 0, count: max(rank, 1))
            try HDF5Library.check(H5Sget_simple_extent_dims(space.id, &dims, nil), path: path, "get dims", dataset)
            let type = HDF5Handle.type(try HDF5Library.check(H5Dget_type(d.id), path: path, "get type", dataset))
            var shape: [Int] = []
            for dim in dims.prefix(rank) {
                guard dim <= hsize_t(Int.max) else {
                    throw .invalidLayout(path: path, object: dataset, reason: "dimension \(dim) is too large")
                }
                shape.append(Int(dim))
            }
            // A damaged file can declare any storage size: refused above Int.max rather than trapping.
            guard let storage = Int(exactly: H5Dget_storage_size(d.id)) else {
                throw .invalidLayout(path: path, object: dataset, reason: "the declared storage size does not fit a 64-bit signed integer")
            }
            return HDF5DatasetInfo(shape: shape, kind: HDF5File.kind(of: type.id), storageSize: storage)
        }
    }

    /// The raw elements of a numeric dataset converted by HDF5 to the memory type `dtype`
    /// (bf16 reads as 16-bit unsigned). Refuses more than `maxBytes`.
    public func read(_ dataset: String, as dtype: DType, maxBytes: Int) throws(HDF5Error) -> [UInt8] {
        let info = try info(dataset)
        guard let count = Tensor.checkedElementCount(info.shape), count <= maxBytes / dtype.byteWidth else {
            throw .invalidLayout(path: path, object: dataset, reason: "dataset of shape \(info.shape) exceeds the \(maxBytes)-byte limit")
        }
        return try HDF5Library.locked { () throws(HDF5Error) -> [UInt8] in
            let d = HDF5Handle.dataset(
                try HDF5Library.check(H5Dopen2(handle.id, dataset, mmoe_h5p_default()), path: path, "open dataset", dataset))
            let memoryType = try HDF5Codec.memoryType(dtype, path: path)
            var bytes = [UInt8](repeating: 0, count: count * dtype.byteWidth)
            if count > 0 {
                let status = bytes.withUnsafeMutableBytes {
                    H5Dread(d.id, memoryType.id, mmoe_h5s_all(), mmoe_h5s_all(), mmoe_h5p_default(), $0.baseAddress)
                }
                try HDF5Library.check(status, path: path, "read", dataset)
            }
            return bytes
        }
    }

    /// An attribute with its type and dataspace, or nil when absent. Call under the library lock.
    private func openAttribute(_ object: String, _ name: String) throws(HDF5Error) -> (HDF5Handle, HDF5Handle, HDF5Handle)? {
        let exists = H5Aexists_by_name(handle.id, object, name, mmoe_h5p_default())
        guard exists > 0 else {
            if exists < 0 {
                throw .library(path: path, operation: "look up attribute \(name)", object: object, stack: HDF5Library.stackText())
            }
            return nil
        }
        let a = HDF5Handle.attribute(
            try HDF5Library.check(
                H5Aopen_by_name(handle.id, object, name, mmoe_h5p_default(), mmoe_h5p_default()), path: path, "open attribute \(name)",
                object))
        let type = HDF5Handle.type(try HDF5Library.check(H5Aget_type(a.id), path: path, "get attribute type", object))
        let space = HDF5Handle.space(try HDF5Library.check(H5Aget_space(a.id), path: path, "get attribute space", object))
        return (a, type, space)
    }

    /// A string attribute of an object (nil when absent); fixed or variable length, scalar.
    public func stringAttribute(_ object: String, _ name: String) throws(HDF5Error) -> String? {
        try HDF5Library.locked { () throws(HDF5Error) -> String? in
            guard let (a, type, space) = try openAttribute(object, name) else { return nil }
            guard H5Sget_simple_extent_npoints(space.id) == 1 else {
                throw .invalidLayout(path: path, object: object, reason: "attribute '\(name)' is not a single value")
            }
            guard HDF5File.kind(of: type.id) == .string else {
                throw .invalidLayout(path: path, object: object, reason: "attribute '\(name)' is not a string")
            }
            return try readString(type: type.id, space: space.id, object: "\(object)@\(name)") { memoryType, buffer in
                H5Aread(a.id, memoryType, buffer)
            }
        }
    }

    /// A one-dimensional string array attribute (fixed or variable length), nil when absent.
    /// Keras stores `layer_names` and `weight_names` this way.
    public func stringArrayAttribute(_ object: String, _ name: String) throws(HDF5Error) -> [String]? {
        try HDF5Library.locked { () throws(HDF5Error) -> [String]? in
            guard let (a, type, space) = try openAttribute(object, name) else { return nil }
            let count = Int(H5Sget_simple_extent_npoints(space.id))
            // Keras writes an empty float64 array for layers without weights.
            if count == 0 { return [] }
            guard HDF5File.kind(of: type.id) == .string else {
                throw .invalidLayout(path: path, object: object, reason: "attribute '\(name)' is not a string array")
            }
            guard count >= 0, count <= 1 << 20 else {
                throw .invalidLayout(path: path, object: object, reason: "attribute '\(name)' holds \(count) strings")
            }
            if count == 0 { return [] }
            if H5Tis_variable_str(type.id) > 0 {
                let memoryType = HDF5Handle.type(try HDF5Library.check(H5Tcopy(mmoe_h5t_c_s1()), path: path, "copy type"))
                try HDF5Library.check(H5Tset_size(memoryType.id, mmoe_h5t_variable()), path: path, "set type size")
                try HDF5Library.check(H5Tset_cset(memoryType.id, H5Tget_cset(type.id)), path: path, "set charset")
                var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
                // Reclaim whatever HDF5 allocated, also when the read fails half-way.
                defer {
                    pointers.withUnsafeMutableBytes { _ = H5Dvlen_reclaim(memoryType.id, space.id, mmoe_h5p_default(), $0.baseAddress) }
                }
                try HDF5Library.check(
                    pointers.withUnsafeMutableBytes { H5Aread(a.id, memoryType.id, $0.baseAddress) }, path: path, "read attribute \(name)",
                    object)
                return pointers.map { pointer in
                    guard let pointer else { return "" }
                    return String(decoding: UnsafeRawBufferPointer(start: pointer, count: strnlen(pointer, 1 << 16)), as: UTF8.self)
                }
            }
            let size = Int(H5Tget_size(type.id))
            guard size > 0, size <= 1 << 16, count.multipliedReportingOverflow(by: size).partialValue <= HDF5File.maxStringBytes else {
                throw .invalidLayout(path: path, object: object, reason: "attribute '\(name)' strings of \(size) bytes are out of range")
            }
            let memoryType = HDF5Handle.type(try HDF5Library.check(H5Tcopy(type.id), path: path, "copy type"))
            var buffer = [UInt8](repeating: 0, count: count * size)
            try HDF5Library.check(
                buffer.withUnsafeMutableBytes { H5Aread(a.id, memoryType.id, $0.baseAddress) }, path: path, "read attribute \(name)", object
            )
            return (0..<count).map { i in
                let slice = buffer[(i * size)..<((i + 1) * size)]
                let end = slice.firstIndex(of: 0) ?? slice.endIndex
                return String(decoding: slice[slice.startIndex..<end], as: UTF8.self)
            }
        }
    }

    /// A scalar string dataset.
    public func stringDataset(_ dataset: String) throws(HDF5Error) -> String {
        try HDF5Library.locked { () throws(HDF5Error) -> String in
            let d = HDF5Handle.dataset(
                try HDF5Library.check(H5Dopen2(handle.id, dataset, mmoe_h5p_default()), path: path, "open dataset", dataset))
            let type = HDF5Handle.type(try HDF5Library.check(H5Dget_type(d.id), path: path, "get type", dataset))
            let space = HDF5Handle.space(try HDF5Library.check(H5Dget_space(d.id), path: path, "get dataspace", dataset))
            guard H5Sget_simple_extent_npoints(space.id) == 1, HDF5File.kind(of: type.id) == .string else {
                throw .invalidLayout(path: path, object: dataset, reason: "expected a single string")
            }
            return try readString(type: type.id, space: space.id, object: dataset) { memoryType, buffer in
                H5Dread(d.id, memoryType, mmoe_h5s_all(), mmoe_h5s_all(), mmoe_h5p_default(), buffer)
            }
        }
    }

    /// Reads one string value of either storage kind; bounded, invalid UTF-8 repaired.
    private func readString(type: hid_t, space: hid_t, object: String, _ read: (hid_t, UnsafeMutableRawPointer?) -> herr_t)
        throws(HDF5Error) -> String
    {
        if H5Tis_variable_str(type) > 0 {
            let memoryType = HDF5Handle.type(try HDF5Library.check(H5Tcopy(mmoe_h5t_c_s1()), path: path, "copy type"))
            try HDF5Library.check(H5Tset_size(memoryType.id, mmoe_h5t_variable()), path: path, "set type size")
            try HDF5Library.check(H5Tset_cset(memoryType.id, H5Tget_cset(type)), path: path, "set charset")
            var pointer: UnsafeMutablePointer<CChar>? = nil
            // Reclaim whatever HDF5 allocated, also when the read fails half-way.
            defer { withUnsafeMutablePointer(to: &pointer) { _ = H5Dvlen_reclaim(memoryType.id, space, mmoe_h5p_default(), $0) } }
            try HDF5Library.check(
                withUnsafeMutablePointer(to: &pointer) { read(memoryType.id, UnsafeMutableRawPointer($0)) }, path: path, "read string",
                object)
            guard let pointer else { return "" }
            let length = strnlen(pointer, HDF5File.maxStringBytes + 1)
            guard length <= HDF5File.maxStringBytes else {
                throw .invalidLayout(path: path, object: object, reason: "string longer than \(HDF5File.maxStringBytes) bytes")
            }
            return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
        }
        let size = Int(H5Tget_size(type))
        guard size > 0, size <= HDF5File.maxStringBytes else {
            throw .invalidLayout(path: path, object: object, reason: "string of \(size) bytes is out of range")
        }
        let memoryType = HDF5Handle.type(try HDF5Library.check(H5Tcopy(type), path: path, "copy type"))
        var buffer = [UInt8](repeating: 0, count: size + 1)
        try HDF5Library.check(buffer.withUnsafeMutableBytes { read(memoryType.id, $0.baseAddress) }, path: path, "read string", object)
        let end = buffer.prefix(size).firstIndex(of: 0) ?? size
        return String(decoding: buffer[0..<end], as: UTF8.self)
    }
}
