/// Bounds-checked little-endian reads from untrusted bytes. Every read checks the range
/// first and reports the offset; nothing is loaded with the host's layout.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset: Int
    let limit: Int

    init(bytes: UnsafeRawBufferPointer, path: String, offset: Int = 0, limit: Int? = nil) {
        self.bytes = bytes
        self.path = path
        self.offset = offset
        self.limit = min(limit ?? bytes.count, bytes.count)
    }

    var remaining: Int { limit - offset }

    func need(_ count: Int, _ what: String) throws(FormatError) {
        guard count >= 0, count <= remaining else {
            throw .truncated(path: path, what: what, offset: offset, needed: count, available: max(remaining, 0))
        }
    }

    mutating func integer<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ what: String) throws(FormatError) -> T {
        try need(MemoryLayout<T>.size, what)
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
        offset += MemoryLayout<T>.size
        return value
    }

    /// A u64 that must fit in a non-negative Int.
    mutating func length(_ what: String) throws(FormatError) -> Int {
        let start = offset
        let value = try integer(UInt64.self, what)
        guard value <= UInt64(Int.max) else {
            throw .invalidTable(path: path, offset: start, reason: "\(what) \(value) is out of range")
        }
        return Int(value)
    }

    mutating func slice(_ count: Int, _ what: String) throws(FormatError) -> UnsafeRawBufferPointer {
        try need(count, what)
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }
}

/// Little-endian appends for the writer.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func integer<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * i))) }
    }

    mutating func append(_ other: [UInt8]) { bytes.append(contentsOf: other) }
}
