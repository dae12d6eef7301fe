import Foundation
import MMoECore
import MMoEFormat

/// Reads `.safetensors` files with the reference implementation's checks: header length
/// bounded (100 MB), JSON object header, known dtypes, offsets inside the data, sizes equal to
/// shape × dtype, no overlaps, no gaps, no trailing bytes. Tensors are views into the mapping.
public enum SafetensorsReader {
    /// Largest header accepted.
    public static let maxHeaderBytes = 100_000_000
    /// Most tensors a header may list.
    public static let maxTensors = 200_000

    /// Occurrences of `needle` in `haystack` (a plain scan; the header is at most 100 MB).
    static func count(of needle: [UInt8], in haystack: UnsafeRawBufferPointer) -> Int {
        guard let first = needle.first, haystack.count >= needle.count else { return 0 }
        var found = 0
        var i = 0
        let last = haystack.count - needle.count
        while i <= last {
            if haystack[i] == first {
                var j = 1
                while j < needle.count, haystack[i + j] == needle[j] { j += 1 }
                if j == needle.count {
                    found += 1
                    i += needle.count
                    continue
                }
            }
            i += 1
        }
        return found
    }

    /// Reads a file.
    public static func read(path: String) throws(ImportError) -> SourceCheckpoint {
        let storage: ByteStorage
        do throws(FormatError) { storage = try FileIO.map(path: path) } catch { throw .io(error) }
        return try read(storage: storage, path: path)
    }

    /// Reads an image already in memory.
    public static func read(storage: ByteStorage, path: String) throws(ImportError) -> SourceCheckpoint {
        let bytes = storage.bytes
        func fail(_ offset: Int?, _ reason: String) -> ImportError { .malformed(path: path, offset: offset, reason: reason) }
        guard bytes.count >= 8 else { throw fail(0, "too small for a safetensors header length") }
        let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[$1]) << (8 * UInt64($1)) }
        guard length <= UInt64(maxHeaderBytes) else {
            throw .limitExceeded(path: path, what: "safetensors header length \(length)", limit: maxHeaderBytes)
        }
        let headerLength = Int(length)
        guard headerLength <= bytes.count - 8 else { throw fail(0, "header of \(headerLength) bytes runs past the end of the file") }
        let headerBytes = Data(UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)]))
        guard headerBytes.first == UInt8(ascii: "{") else { throw fail(8, "header does not start with '{'") }
        // Foundation's JSON objects take kilobytes per entry: count the entries first (every
        // tensor has a "data_offsets" key), bound them, and check the memory they will need.
        let entries = headerBytes.withUnsafeBytes { count(of: Array("\"data_offsets\"".utf8), in: $0) }
        guard entries <= maxTensors else {
            throw .limitExceeded(path: path, what: "safetensors header listing \(entries) tensors", limit: maxTensors)
        }
        if let reason = MemoryBudget.refusal(headerLength * 8 + entries * 4096, for: "parsing a safetensors header of \(entries) tensors") {
            throw .memory(path: path, reason: reason)
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw fail(8, "header is not valid JSON")
        }
        guard let header = object as? [String: Any] else { throw fail(8, "header is not a JSON object") }
        let dataStart = 8 + headerLength
        let dataLength = bytes.count - dataStart
        var tensors: [(begin: Int, tensor: SourceTensor, end: Int)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any], let dtypeName = entry["dtype"] as? String,
                let shapeValues = entry["shape"] as? [Any], let offsets = entry["data_offsets"] as? [Any], offsets.count == 2
            else { throw fail(8, "tensor '\(name)' needs dtype, shape and data_offsets") }
            guard let dtype = SourceDType(rawValue: dtypeName) else {
                throw .unsupported(path: path, reason: "tensor '\(name)' has dtype \(dtypeName), which is not supported")
            }
            var shape: [Int] = []
            for dimension in shapeValues {
                guard let number = dimension as? NSNumber, let d = Int(exactly: number.doubleValue), d >= 0 else {
                    throw fail(8, "tensor '\(name)' has an invalid shape")
                }
                shape.append(d)
            }
            guard let begin = (offsets[0] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }),
                let end = (offsets[1] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }), begin >= 0, end >= begin, end <= dataLength
            else { throw fail(8, "tensor '\(name)' has data_offsets outside the \(dataLength) data bytes") }
            guard let count = Tensor.checkedElementCount(shape), count.multipliedReportingOverflow(by: dtype.size).overflow == false,
                count * dtype.size == end - begin
            else {
                throw fail(
                    dataStart + begin, "tensor '\(name)' has \(end - begin) bytes, shape \(shape) of \(dtypeName) needs a different size")
            }
            tensors.append(
                (begin, SourceTensor(name: name, dtype: dtype, shape: shape, storage: storage, byteOffset: dataStart + begin), end))
        }
        tensors.sort { $0.begin < $1.begin || ($0.begin == $1.begin && $0.end < $1.end) }
        var cursor = 0
        for item in tensors {
            guard item.begin == cursor else {
                throw fail(
                    dataStart + item.begin,
                    item.begin < cursor
                        ? "tensor '\(item.tensor.name)' overlaps the previous tensor" : "gap before tensor '\(item.tensor.name)'")
            }
            cursor = item.end
        }
        guard cursor == dataLength else { throw fail(dataStart + cursor, "\(dataLength - cursor) bytes after the last tensor") }
        return SourceCheckpoint(tensors: tensors.map(\.tensor), path: path)
    }
}
