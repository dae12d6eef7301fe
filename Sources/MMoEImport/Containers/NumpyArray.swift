import MMoECore
import MMoEFormat
import MMoERuntime

/// An array read from a `.npy` file or `.npz` member: NumPy dtype string, shape, C-order bytes.
public struct NumpyArray: Sendable, Equatable {
    /// NumPy's type string, e.g. `<f4`, `<i8`, `|b1`.
    public let descr: String
    /// Shape.
    public let shape: [Int]
    /// Element bytes in C order, little-endian.
    public let data: [UInt8]

    /// Bytes per element for the supported dtypes.
    static let itemSizes: [String: Int] = [
        "<f2": 2, "<f4": 4, "<f8": 8, "|i1": 1, "<i2": 2, "<i4": 4, "<i8": 8, "|u1": 1, "<u2": 2, "<u4": 4, "<u8": 8, "|b1": 1,
    ]

    /// An array from parts (checked).
    public init(descr: String, shape: [Int], data: [UInt8]) {
        self.descr = descr
        self.shape = shape
        self.data = data
    }

    /// A float32 array.
    public static func float32(_ values: [Float], shape: [Int]) -> NumpyArray {
        NumpyArray(descr: "<f4", shape: shape, data: values.withUnsafeBytes { Array($0) })
    }

    /// A fixed-width unicode array (`<U<n>`, UTF-32 little-endian, NUL padded), as NumPy stores
    /// `np.array(["a", "bc"])` and a LabelEncoder's `classes_`.
    public static func strings(_ values: [String], shape: [Int]) -> NumpyArray {
        let width = max(1, values.map(\.unicodeScalars.count).max() ?? 1)
        var data = [UInt8]()
        data.reserveCapacity(values.count * width * 4)
        for value in values {
            let scalars = Array(value.unicodeScalars)
            for i in 0..<width {
                let code = i < scalars.count ? scalars[i].value : 0
                withUnsafeBytes(of: code.littleEndian) { data += $0 }
            }
        }
        return NumpyArray(descr: "<U\(width)", shape: shape, data: data)
    }

    /// The characters of a `<U<n>` array, one string per element (nil for other dtypes).
    public func strings() -> [String]? {
        guard descr.hasPrefix("<U"), let width = Int(descr.dropFirst(2)), width > 0 else { return nil }
        var result: [String] = []
        result.reserveCapacity(count)
        for i in 0..<count {
            var scalars = String.UnicodeScalarView()
            for j in 0..<width {
                let at = (i * width + j) * 4
                let code = UInt32(data[at]) | UInt32(data[at + 1]) << 8 | UInt32(data[at + 2]) << 16 | UInt32(data[at + 3]) << 24
                if code == 0 { break }
                scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
            }
            result.append(String(scalars))
        }
        return result
    }

    /// Whether the dtype is a float type.
    public var isFloat: Bool { descr.hasSuffix("f2") || descr.hasSuffix("f4") || descr.hasSuffix("f8") }

    /// Number of elements.
    public var count: Int { shape.reduce(1, *) }

    /// Element `i` as a Double.
    func value(_ i: Int) -> Double {
        func raw(_ size: Int) -> UInt64 { (0..<size).reduce(UInt64(0)) { $0 | UInt64(data[i * size + $1]) << (8 * $1) } }
        switch descr {
        case "<f2": return Double(HalfPrecision.float(fromHalf: UInt16(raw(2))))
        case "<f4": return Double(Float(bitPattern: UInt32(raw(4))))
        case "<f8": return Double(bitPattern: raw(8))
        case "|i1": return Double(Int8(truncatingIfNeeded: raw(1)))
        case "<i2": return Double(Int16(truncatingIfNeeded: raw(2)))
        case "<i4": return Double(Int32(truncatingIfNeeded: raw(4)))
        case "<i8": return Double(Int64(bitPattern: raw(8)))
        case "<u8": return Double(raw(8))
        default: return Double(raw(NumpyArray.itemSizes[descr] ?? 1))
        }
    }

    /// The values as Float (any numeric dtype).
    public func floats() -> [Float] {
        if descr == "<f4" {
            return data.withUnsafeBytes { raw in
                (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        }
        return (0..<count).map { Float(value($0)) }
    }

    /// The values as Int64 ids; float arrays are accepted when every value is integral
    /// (DeepCTR-Torch carries ids as floats). Returns the index of the first bad value otherwise.
    public func ids() -> Result<[Int64], IDConversionFailure> {
        if descr == "<i8" {
            return .success(
                data.withUnsafeBytes { raw in
                    (0..<count).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
                })
        }
        var result: [Int64] = []
        result.reserveCapacity(count)
        for i in 0..<count {
            let v = value(i)
            guard v.rounded() == v, abs(v) < 9.0e18 else { return .failure(IDConversionFailure(index: i, value: v)) }
            result.append(Int64(v))
        }
        return .success(result)
    }

    /// Why values could not be used as ids.
    public struct IDConversionFailure: Error, Sendable {
        /// Flat index of the value.
        public let index: Int
        /// The value.
        public let value: Double
    }
}

/// Reads and writes NumPy `.npy` bytes.
public enum NumpyFormat {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]

    /// Parses one `.npy` image (header dictionary literal, C or Fortran order).
    public static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws(ImportError) -> NumpyArray {
        func fail(_ offset: Int?, _ reason: String) -> ImportError { .malformed(path: path, offset: offset, reason: reason) }
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else { throw fail(0, "not a .npy array (bad magic)") }
        let major = bytes[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw fail(8, "truncated header length") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw fail(6, ".npy version \(major) is not supported")
        }
        guard headerLength <= 1 << 20, headerStart + headerLength <= bytes.count else {
            throw fail(8, "header of \(headerLength) bytes runs past the end")
        }
        let header = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[headerStart..<(headerStart + headerLength)]), as: UTF8.self)
        var parser = HeaderParser(text: header, path: path)
        let fields = try parser.dictionary()
        guard case .string(let descr)? = fields["descr"] else {
            throw fail(headerStart, "header has no string 'descr' (structured dtypes are not supported)")
        }
        guard case .bool(let fortran)? = fields["fortran_order"] else { throw fail(headerStart, "header has no 'fortran_order'") }
        guard case .tuple(let shape)? = fields["shape"] else { throw fail(headerStart, "header has no 'shape' tuple") }
        let normalized = descr == "=f4" ? "<f4" : descr == "=i8" ? "<i8" : descr
        let unicodeWidth = normalized.hasPrefix("<U") ? Int(normalized.dropFirst(2)) : nil
        if let width = unicodeWidth, !(1...(1 << 20)).contains(width) {
            throw .unsupported(path: path, reason: "array dtype '\(descr)': strings of 1 to 1048576 characters are supported")
        }
        guard let itemSize = unicodeWidth.map({ $0 * 4 }) ?? NumpyArray.itemSizes[normalized] else {
            throw .unsupported(path: path, reason: "array dtype '\(descr)' is not supported (use little-endian float or integer)")
        }
        guard shape.count <= 32, let count = Tensor.checkedElementCount(shape),
            count.multipliedReportingOverflow(by: itemSize).overflow == false
        else {
            throw fail(headerStart, "shape \(shape) is invalid")
        }
        let dataStart = headerStart + headerLength
        let length = count * itemSize
        guard bytes.count - dataStart == length else {
            throw fail(dataStart, "array data is \(bytes.count - dataStart) bytes, shape \(shape) of \(descr) needs \(length)")
        }
        var data = Array(UnsafeRawBufferPointer(rebasing: bytes[dataStart..<bytes.count]))
        if fortran, shape.count > 1 { data = reorderFortran(data, shape: shape, itemSize: itemSize) }
        return NumpyArray(descr: normalized, shape: shape, data: data)
    }

    /// Fortran (column-major) bytes to C order.
    static func reorderFortran(_ data: [UInt8], shape: [Int], itemSize: Int) -> [UInt8] {
        var strides: [Int] = []
        var stride = 1
        for dimension in shape {
            strides.append(stride)
            stride *= dimension
        }
        return data.withUnsafeBytes { copyStrided($0, shape: shape, strides: strides, offset: 0, itemSize: itemSize) }
    }

    /// The `.npy` v1.0 image of an array (header padded to 64 bytes).
    public static func encode(_ array: NumpyArray) -> [UInt8] {
        let shapeText = array.shape.count == 1 ? "(\(array.shape[0]),)" : "(" + array.shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(array.descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        let total = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - total % 64) % 64) + "\n"
        let length = header.utf8.count
        return magic + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(header.utf8) + array.data
    }
}

/// The tiny subset of Python literal syntax in `.npy` headers: a dict of string keys to
/// strings, booleans and tuples of integers.
struct HeaderParser {
    enum Value: Equatable {
        case string(String)
        case bool(Bool)
        case tuple([Int])
    }

    let characters: [Character]
    let path: String
    var position = 0

    init(text: String, path: String) {
        characters = Array(text)
        self.path = path
    }

    func fail(_ reason: String) -> ImportError { .malformed(path: path, offset: nil, reason: ".npy header: \(reason)") }

    mutating func skipSpace() { while position < characters.count, characters[position].isWhitespace { position += 1 } }

    mutating func expect(_ c: Character) throws(ImportError) {
        skipSpace()
        guard position < characters.count, characters[position] == c else { throw fail("expected '\(c)' at character \(position)") }
        position += 1
    }

    mutating func string() throws(ImportError) -> String {
        skipSpace()
        guard position < characters.count, characters[position] == "'" || characters[position] == "\"" else {
            throw fail("expected a string at \(position)")
        }
        let quote = characters[position]
        position += 1
        let start = position
        while position < characters.count, characters[position] != quote { position += 1 }
        guard position < characters.count else { throw fail("unterminated string") }
        defer { position += 1 }
        return String(characters[start..<position])
    }

    mutating func value() throws(ImportError) -> Value {
        skipSpace()
        guard position < characters.count else { throw fail("unexpected end") }
        switch characters[position] {
        case "'", "\"": return .string(try string())
        case "T", "F":
            let word = characters[position...].prefix { $0.isLetter }
            position += word.count
            guard word.elementsEqual("True") || word.elementsEqual("False") else { throw fail("unexpected word") }
            return .bool(word.elementsEqual("True"))
        case "(":
            position += 1
            var items: [Int] = []
            while true {
                skipSpace()
                guard position < characters.count else { throw fail("unterminated tuple") }
                if characters[position] == ")" { position += 1; break }
                let digits = characters[position...].prefix { $0.isNumber }
                guard !digits.isEmpty, digits.count <= 18, let number = Int(String(digits)) else {
                    throw fail("bad dimension at \(position)")
                }
                items.append(number)
                position += digits.count
                skipSpace()
                if position < characters.count, characters[position] == "," { position += 1 }
                guard items.count <= 32 else { throw fail("too many dimensions") }
            }
            return .tuple(items)
        default:
            throw fail("unsupported value at \(position)")
        }
    }

    mutating func dictionary() throws(ImportError) -> [String: Value] {
        try expect("{")
        var result: [String: Value] = [:]
        while true {
            skipSpace()
            guard position < characters.count else { throw fail("unterminated dictionary") }
            if characters[position] == "}" { break }
            let key = try string()
            try expect(":")
            result[key] = try value()
            skipSpace()
            if position < characters.count, characters[position] == "," { position += 1 }
            guard result.count <= 16 else { throw fail("too many keys") }
        }
        return result
    }
}

/// `.npz` archives: one `.npy` member per array name.
public enum NumpyArchive {
    /// Largest expanded member accepted.
    public static let maxMemberBytes = 2 << 30

    /// Reads every array of an `.npz` file, by name (without `.npy`).
    public static func read(path: String) throws(ImportError) -> [String: NumpyArray] {
        let zip = try ZipArchive(path: path)
        var arrays: [String: NumpyArray] = [:]
        for entry in zip.entries where entry.name.hasSuffix(".npy") {
            let bytes = try zip.data(entry, limit: maxMemberBytes)
            let name = String(entry.name.dropLast(4))
            var parsed: Result<NumpyArray, ImportError> = .failure(.malformed(path: path, offset: nil, reason: "empty"))
            bytes.withUnsafeBytes { raw in
                do throws(ImportError) { parsed = .success(try NumpyFormat.parse(raw, path: "\(path):\(entry.name)")) } catch {
                    parsed = .failure(error)
                }
            }
            arrays[name] = try parsed.get()
        }
        return arrays
    }

    /// Writes arrays as an uncompressed `.npz`, atomically, members in name order.
    public static func write(_ arrays: [String: NumpyArray], to path: String) throws(ImportError) {
        var writer = ZipWriter()
        for name in arrays.keys.sorted() {
            guard let array = arrays[name] else { continue }
            writer.add(name: name + ".npy", data: NumpyFormat.encode(array))
        }
        try writer.write(to: path)
    }
}

/// Writes stored (uncompressed) ZIP archives, as NumPy's `savez` does.
struct ZipWriter {
    var body: [UInt8] = []
    var directory: [UInt8] = []
    var count = 0

    mutating func add(name: String, data: [UInt8]) {
        let crc = data.withUnsafeBytes { ZipArchive.crc32($0) }
        let nameBytes = Array(name.utf8)
        var local = ByteWriterZip()
        local.u32(0x0403_4B50); local.u16(20); local.u16(0); local.u16(0); local.u16(0); local.u16(0x21)
        local.u32(crc); local.u32(UInt32(data.count)); local.u32(UInt32(data.count))
        local.u16(UInt16(nameBytes.count)); local.u16(0)
        let offset = body.count
        body += local.bytes + nameBytes + data
        var central = ByteWriterZip()
        central.u32(0x0201_4B50); central.u16(20); central.u16(20); central.u16(0); central.u16(0); central.u16(0); central.u16(0x21)
        central.u32(crc); central.u32(UInt32(data.count)); central.u32(UInt32(data.count))
        central.u16(UInt16(nameBytes.count)); central.u16(0); central.u16(0); central.u16(0); central.u16(0); central.u32(0)
        central.u32(UInt32(offset))
        directory += central.bytes + nameBytes
        count += 1
    }

    func write(to path: String) throws(ImportError) {
        guard body.count + directory.count < Int(UInt32.max), count < 0xFFFF else {
            throw .limitExceeded(path: path, what: "archive size", limit: Int(UInt32.max))
        }
        var end = ByteWriterZip()
        end.u32(0x0605_4B50); end.u16(0); end.u16(0); end.u16(UInt16(count)); end.u16(UInt16(count))
        end.u32(UInt32(directory.count)); end.u32(UInt32(body.count)); end.u16(0)
        let image = body + directory + end.bytes
        do throws(FormatError) {
            try FileIO.writeAtomically(path: path) { (sink: inout FileSink) throws(FormatError) in try sink.write(image) }
        } catch {
            throw .io(error)
        }
    }
}

struct ByteWriterZip {
    var bytes: [UInt8] = []
    mutating func u16(_ v: UInt16) { bytes += [UInt8(v & 0xFF), UInt8(v >> 8)] }
    mutating func u32(_ v: UInt32) { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) } }
}
