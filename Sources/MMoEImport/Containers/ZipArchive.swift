import CZlib
import MMoECore
import MMoEFormat

/// A read-only ZIP archive (torch.save files, `.npz`, `.keras`), memory-mapped.
///
/// The central directory is parsed with every count and offset checked against the file;
/// members are stored (returned as zero-copy views) or deflated (expanded under a cap).
/// ZIP64 sizes and offsets are understood; encryption and other methods are refused.
public struct ZipArchive: Sendable {
    /// One member.
    public struct Entry: Sendable, Equatable {
        /// Name inside the archive.
        public let name: String
        /// 0 = stored, 8 = deflated.
        public let method: UInt16
        /// Bytes in the archive.
        public let compressedSize: Int
        /// Bytes after expansion.
        public let size: Int
        /// CRC-32 (zlib's) of the expanded bytes.
        public let crc32: UInt32
        /// Offset of the member's data in the archive.
        public let dataOffset: Int
    }

    /// The archive's path.
    public let path: String
    /// The mapped archive.
    public let storage: ByteStorage
    /// Members in directory order.
    public let entries: [Entry]

    /// The most a deflate stream can expand (bytes out per byte in).
    public static let maxDeflateRatio = 1032

    /// Most members accepted.
    public static let maxEntries = 1 << 20

    /// Opens and indexes `path`.
    public init(path: String) throws(ImportError) {
        let storage: ByteStorage
        do throws(FormatError) { storage = try FileIO.map(path: path) } catch { throw .io(error) }
        try self.init(storage: storage, path: path)
    }

    /// Indexes an archive image.
    public init(storage: ByteStorage, path: String) throws(ImportError) {
        self.path = path
        self.storage = storage
        let bytes = storage.bytes
        let count = bytes.count
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) | UInt64(u32(at + 4)) << 32 }
        func malformed(_ at: Int?, _ reason: String) -> ImportError { .malformed(path: path, offset: at, reason: reason) }

        // End of central directory: the last signature within the final 64 KiB + 22 bytes.
        guard count >= 22 else { throw malformed(nil, "too small to be a ZIP archive") }
        var eocd = -1
        var at = count - 22
        let lowest = max(0, count - 22 - 65_535)
        while at >= lowest {
            if bytes[at] == 0x50, bytes[at + 1] == 0x4B, bytes[at + 2] == 0x05, bytes[at + 3] == 0x06 { eocd = at; break }
            at -= 1
        }
        guard eocd >= 0 else { throw malformed(nil, "no end-of-central-directory record (not a ZIP archive, or truncated)") }
        var entryCount = u16(eocd + 10)
        var directorySize = u32(eocd + 12)
        var directoryOffset = u32(eocd + 16)
        // ZIP64 end of central directory locator, just before the EOCD.
        if eocd >= 20, u32(eocd - 20) == 0x0706_4B50 {
            let recordOffset = u64(eocd - 12)
            guard count >= 56, recordOffset <= UInt64(count - 56) else {
                throw malformed(eocd - 20, "ZIP64 locator points outside the file")
            }
            let record = Int(recordOffset)
            guard u32(record) == 0x0606_4B50 else { throw malformed(record, "bad ZIP64 end-of-central-directory signature") }
            let entries64 = u64(record + 32)
            let size64 = u64(record + 40)
            let offset64 = u64(record + 48)
            guard entries64 <= UInt64(ZipArchive.maxEntries), size64 <= UInt64(count), offset64 <= UInt64(count) else {
                throw malformed(record, "ZIP64 directory is larger than the file")
            }
            entryCount = Int(entries64)
            directorySize = Int(size64)
            directoryOffset = Int(offset64)
        }
        guard entryCount <= ZipArchive.maxEntries else {
            throw .limitExceeded(path: path, what: "member count", limit: ZipArchive.maxEntries)
        }
        guard directoryOffset <= count, directorySize <= count - directoryOffset else {
            throw malformed(eocd, "central directory (\(directorySize) bytes at \(directoryOffset)) lies outside the file")
        }
        // Each directory record takes at least 46 bytes.
        guard entryCount <= directorySize / 46 + 1 else {
            throw malformed(eocd, "\(entryCount) members cannot fit in the central directory")
        }
        var entries: [Entry] = []
        var names = Set<String>()
        var cursor = directoryOffset
        let directoryEnd = directoryOffset + directorySize
        for index in 0..<entryCount {
            guard cursor + 46 <= directoryEnd, u32(cursor) == 0x0201_4B50 else {
                throw malformed(cursor, "central directory record \(index) is missing or truncated")
            }
            let flags = u16(cursor + 8)
            let method = UInt16(u16(cursor + 10))
            let crc = UInt32(u32(cursor + 16))
            var compressed = u32(cursor + 20)
            var size = u32(cursor + 24)
            let nameLength = u16(cursor + 28)
            let extraLength = u16(cursor + 30)
            let commentLength = u16(cursor + 32)
            var localOffset = u32(cursor + 42)
            let recordEnd = cursor + 46 + nameLength + extraLength + commentLength
            guard recordEnd <= directoryEnd else { throw malformed(cursor, "central directory record \(index) runs past the directory") }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(cursor + 46)..<(cursor + 46 + nameLength)]), as: UTF8.self)
            guard flags & 1 == 0 else { throw .unsupported(path: path, reason: "member '\(name)' is encrypted") }
            // ZIP64 extended information.
            var extra = cursor + 46 + nameLength
            let extraEnd = extra + extraLength
            while extra + 4 <= extraEnd {
                let id = u16(extra)
                let length = u16(extra + 2)
                guard extra + 4 + length <= extraEnd else { throw malformed(extra, "extra field of '\(name)' runs past its record") }
                if id == 0x0001 {
                    var field = extra + 4
                    func next() throws(ImportError) -> Int {
                        guard field + 8 <= extra + 4 + length else { throw malformed(field, "ZIP64 field of '\(name)' is truncated") }
                        let value = u64(field)
                        field += 8
                        guard value <= UInt64(Int.max) else { throw malformed(field - 8, "ZIP64 value of '\(name)' is out of range") }
                        return Int(value)
                    }
                    if size == 0xFFFF_FFFF { size = try next() }
                    if compressed == 0xFFFF_FFFF { compressed = try next() }
                    if localOffset == 0xFFFF_FFFF { localOffset = try next() }
                }
                extra += 4 + length
            }
            guard names.insert(name).inserted else { throw malformed(cursor, "member '\(name)' appears twice") }
            guard localOffset <= count - 30, u32(localOffset) == 0x0403_4B50 else {
                throw malformed(localOffset, "local header of '\(name)' is missing")
            }
            let dataOffset = localOffset + 30 + u16(localOffset + 26) + u16(localOffset + 28)
            guard dataOffset <= count, compressed <= count - dataOffset else {
                throw malformed(localOffset, "data of '\(name)' (\(compressed) bytes) runs past the end of the file")
            }
            guard method == 0 || method == 8 else {
                throw .unsupported(
                    path: path, reason: "member '\(name)' uses compression method \(method) (only stored and deflate are read)")
            }
            if method == 0, compressed != size { throw malformed(cursor, "stored member '\(name)' has different sizes") }
            entries.append(Entry(name: name, method: method, compressedSize: compressed, size: size, crc32: crc, dataOffset: dataOffset))
            cursor = recordEnd
        }
        self.entries = entries
    }

    /// The member named `name`, if any.
    public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }

    /// A stored member's bytes without copying.
    public func storedBytes(_ entry: Entry) throws(ImportError) -> UnsafeRawBufferPointer {
        guard entry.method == 0 else {
            throw .unsupported(path: path, reason: "member '\(entry.name)' is compressed; a zero-copy view needs a stored member")
        }
        return UnsafeRawBufferPointer(rebasing: storage.bytes[entry.dataOffset..<(entry.dataOffset + entry.size)])
    }

    /// A member's bytes (expanded if deflated), refusing more than `limit` bytes, CRC checked.
    public func data(_ entry: Entry, limit: Int) throws(ImportError) -> [UInt8] {
        guard entry.size <= limit else { throw .limitExceeded(path: path, what: "member '\(entry.name)' size \(entry.size)", limit: limit) }
        // Deflate cannot expand more than 1032:1; a larger declared size is a lie, refused
        // before anything is allocated.
        let (bound, overflow) = entry.compressedSize.multipliedReportingOverflow(by: ZipArchive.maxDeflateRatio)
        guard entry.method == 0 || overflow || entry.size <= bound + 1024 else {
            throw .limitExceeded(
                path: path, what: "expansion of member '\(entry.name)' (\(entry.compressedSize) bytes declared to become \(entry.size))",
                limit: bound + 1024)
        }
        // Expanded once here; callers usually keep a copy of it (two buffers at the peak).
        if let reason = MemoryBudget.refusal(
            entry.size.multipliedReportingOverflow(by: 2).partialValue, for: "expanding member '\(entry.name)' (\(entry.size) bytes)")
        {
            throw .memory(path: path, reason: reason)
        }
        let source = UnsafeRawBufferPointer(rebasing: storage.bytes[entry.dataOffset..<(entry.dataOffset + entry.compressedSize)])
        let output: [UInt8]
        if entry.method == 0 {
            output = Array(source)
        } else {
            output = try ZipArchive.inflate(source, expected: entry.size, path: path, member: entry.name)
        }
        guard output.withUnsafeBytes({ ZipArchive.crc32($0) }) == entry.crc32 else {
            throw .malformed(path: path, offset: entry.dataOffset, reason: "member '\(entry.name)' fails its CRC-32 check")
        }
        return output
    }

    /// Checks a stored (uncompressed) member's CRC-32 where it lies, for readers that use its
    /// bytes in place instead of copying them through `data(_:limit:)`.
    public func checkStored(_ entry: Entry) throws(ImportError) {
        let bytes = UnsafeRawBufferPointer(rebasing: storage.bytes[entry.dataOffset..<(entry.dataOffset + entry.compressedSize)])
        guard ZipArchive.crc32(bytes) == entry.crc32 else {
            throw .malformed(path: path, offset: entry.dataOffset, reason: "member '\(entry.name)' fails its CRC-32 check")
        }
    }

    /// zlib's CRC-32 of a buffer of any size.
    public static func crc32(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt = 0
        var offset = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, 1 << 30)
            crc = CZlib.crc32(crc, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self).advanced(by: offset), UInt32(chunk))
            offset += chunk
        }
        return UInt32(truncatingIfNeeded: crc)
    }

    /// Raw-deflate expansion that stops at `expected` bytes: a member cannot expand past the
    /// size its directory record declares (which the caller has already capped).
    static func inflate(_ source: UnsafeRawBufferPointer, expected: Int, path: String, member: String) throws(ImportError) -> [UInt8] {
        var stream = z_stream()
        guard mmoe_inflate_init_raw(&stream) == Z_OK else {
            throw .malformed(path: path, offset: nil, reason: "cannot start inflating '\(member)'")
        }
        defer { inflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: expected + 1)
        var status: Int32 = Z_OK
        let produced: Int = output.withUnsafeMutableBytes { out in
            stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress?.assumingMemoryBound(to: UInt8.self))
            stream.avail_in = 0
            stream.next_out = out.baseAddress?.assumingMemoryBound(to: UInt8.self)
            stream.avail_out = 0
            var consumed = 0
            var written = 0
            while true {
                if stream.avail_in == 0, consumed < source.count {
                    let chunk = min(source.count - consumed, 1 << 30)
                    stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress?.assumingMemoryBound(to: UInt8.self)).map {
                        $0 + consumed
                    }
                    stream.avail_in = UInt32(chunk)
                    consumed += chunk
                }
                if stream.avail_out == 0 {
                    let chunk = min(out.count - written, 1 << 30)
                    if chunk == 0 { break }
                    stream.next_out = out.baseAddress?.assumingMemoryBound(to: UInt8.self).advanced(by: written)
                    stream.avail_out = UInt32(chunk)
                }
                let before = stream.avail_out
                status = CZlib.inflate(&stream, Z_NO_FLUSH)
                written += Int(before - stream.avail_out)
                if status != Z_OK { break }
                if stream.avail_in == 0, consumed >= source.count, before == stream.avail_out { break }
            }
            return written
        }
        guard status == Z_STREAM_END, produced == expected else {
            if produced > expected {
                throw .limitExceeded(path: path, what: "expansion of member '\(member)' (declared \(expected) bytes)", limit: expected)
            }
            throw .malformed(
                path: path, offset: nil,
                reason: "member '\(member)' does not inflate to its declared \(expected) bytes (zlib status \(status))")
        }
        output.removeLast()
        return output
    }
}
