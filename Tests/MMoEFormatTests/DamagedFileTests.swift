import Foundation
import MMoECore
import MMoEFormat
import MMoETestSupport
import Testing

/// A valid file image and helpers that damage it at known places (resealing the header
/// checksum where the point is to get past it).
struct FileImage {
    var bytes: [UInt8]

    init() throws {
        let spec = SampleSpecs.mmoe
        bytes = try ModelFileWriter.encode(spec: spec, tensors: try randomTensors(for: spec, seed: 8))
    }

    func u32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
    func u64(_ at: Int) -> Int { (0..<8).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
    mutating func setU32(_ at: Int, _ value: UInt32) { for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }
    mutating func setU64(_ at: Int, _ value: UInt64) { for i in 0..<8 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) } }

    var tableOffset: Int { u64(40) }
    var headerEnd: Int { u64(40) &+ u64(48) }

    /// Byte positions of entry `index`'s fields.
    func entry(_ index: Int) -> (start: Int, dtype: Int, rank: Int, dims: Int, offset: Int, length: Int, end: Int) {
        var at = tableOffset
        for i in 0...index {
            let nameLength = Int(bytes[at]) | Int(bytes[at + 1]) << 8
            let dtype = at + 2 + nameLength
            let rank = Int(bytes[dtype + 1])
            let dims = dtype + 2
            let offset = dims + 8 * rank
            let end = offset + 20
            if i == index { return (at, dtype, dtype + 1, dims, offset, offset + 8, end) }
            at = end
        }
        return (0, 0, 0, 0, 0, 0, 0)
    }

    /// Recomputes the header checksum so damage behind it is reached.
    mutating func reseal() {
        var crc = CRC32C()
        bytes[0..<56].withUnsafeBytes { crc.update($0) }
        let end = max(60, min(headerEnd < 0 ? bytes.count : headerEnd, bytes.count))
        bytes[60..<end].withUnsafeBytes { crc.update($0) }
        setU32(56, crc.value)
    }

    func open() throws(FormatError) -> ModelFile {
        try ModelFile(storage: ByteStorage(copying: bytes), path: "damaged.mmoe", verifyChecksums: true)
    }
}

@Suite("Damaged .mmoe files get typed errors")
struct DamagedFileTests {
    @Test("truncation at every header offset and through the data")
    func truncation() throws {
        let image = try FileImage()
        var points = Array(0..<image.headerEnd + 80)
        points += stride(from: image.headerEnd, to: image.bytes.count, by: 7)
        for length in points where length < image.bytes.count {
            #expect(throws: FormatError.self, "truncated to \(length)") {
                _ = try ModelFile(storage: ByteStorage(copying: Array(image.bytes[0..<length])), path: "t.mmoe")
            }
        }
    }

    @Test("every flipped header byte is caught")
    func headerFlips() throws {
        let image = try FileImage()
        for index in 0..<image.headerEnd {
            var damaged = image
            damaged.bytes[index] ^= 0x10
            #expect(throws: FormatError.self, "flip at \(index)") { _ = try damaged.open() }
        }
    }

    @Test("every flipped data byte is caught by the checksums")
    func dataFlips() throws {
        let image = try FileImage()
        for index in stride(from: image.headerEnd, to: image.bytes.count, by: 3) {
            var damaged = image
            damaged.bytes[index] ^= 0x01
            // Padding bytes fail the zero check, data bytes the checksum.
            #expect(throws: FormatError.self, "flip at \(index)") { _ = try damaged.open() }
        }
    }

    @Test("structural damage behind a valid header checksum")
    func structural() throws {
        let clean = try FileImage()
        func expectError(_ label: String, _ damage: (inout FileImage) -> Void, _ match: (FormatError) -> Bool) {
            var image = clean
            damage(&image)
            #expect(Comment(rawValue: label)) {
                _ = try image.open()
            } throws: { error in
                guard let error = error as? FormatError else { return false }
                return match(error)
            }
        }
        expectError("wrong magic", { $0.bytes[1] = 0x4E }) { if case .notAModelFile = $0 { true } else { false } }
        expectError(
            "future version",
            {
                $0.bytes[8] = 2; $0.reseal()
            }
        ) { $0 == .unsupportedVersion(path: "damaged.mmoe", major: 2, minor: 0) }
        expectError(
            "unknown required flag",
            {
                $0.setU32(12, 4); $0.reseal()
            }
        ) { $0 == .unknownRequiredFlags(path: "damaged.mmoe", flags: 4) }
        expectError(
            "huge tensor count",
            {
                $0.setU32(20, 0xFFFF_FFFF); $0.reseal()
            }
        ) { if case .invalidTable(_, 20, _) = $0 { true } else { false } }
        expectError(
            "huge spec length",
            {
                $0.setU64(32, UInt64.max); $0.reseal()
            }
        ) { if case .invalidTable = $0 { true } else { false } }
        expectError(
            "huge table length",
            {
                $0.setU64(48, UInt64(Int.max)); $0.reseal()
            }
        ) { if case .truncated = $0 { true } else { false } }
        expectError(
            "overlapping offsets",
            { image in
                let second = image.entry(1)
                image.setU64(second.offset, UInt64(image.u64(image.entry(0).offset)))
                image.reseal()
            }
        ) { if case .invalidTable(_, _, let reason) = $0 { reason.contains("no gap or overlap") } else { false } }
        expectError(
            "gap between tensors",
            { image in
                let second = image.entry(1)
                image.setU64(second.offset, UInt64(image.u64(second.offset) + 64))
                image.reseal()
            }
        ) { if case .invalidTable = $0 { true } else { false } }
        expectError(
            "length disagrees with shape",
            { image in
                let first = image.entry(0)
                image.setU64(first.length, UInt64(image.u64(first.length) + 4))
                image.reseal()
            }
        ) { if case .invalidTable(_, _, let reason) = $0 { reason.contains("does not match shape") } else { false } }
        expectError(
            "enormous dimension",
            { image in
                let first = image.entry(0)
                image.setU64(first.dims, UInt64(1) << 62)
                image.reseal()
            }
        ) { if case .invalidTable = $0 { true } else { false } }
        expectError(
            "unknown dtype",
            { image in
                image.bytes[image.entry(2).dtype] = 99
                image.reseal()
            }
        ) { if case .invalidTable(_, _, let reason) = $0 { reason.contains("unknown dtype code 99") } else { false } }
        expectError(
            "rank too high",
            { image in
                image.bytes[image.entry(0).rank] = 200
                image.reseal()
            }
        ) { if case .invalidTable = $0 { true } else { false } }
        expectError(
            "duplicate names",
            { image in
                // Make entry 1's name equal to entry 0's (same length names: heads.0.bias / heads.1.bias).
                let names = (0..<3).map { i -> [UInt8] in
                    let e = image.entry(i)
                    return Array(image.bytes[(e.start + 2)..<e.dtype])
                }
                if let pair = (0..<2).first(where: { names[$0].count == names[$0 + 1].count }) {
                    let target = image.entry(pair + 1).start + 2
                    for (k, byte) in names[pair].enumerated() { image.bytes[target + k] = byte }
                }
                image.reseal()
            }
        ) { if case .invalidTable(_, _, let reason) = $0 { reason.contains("duplicate tensor") } else { false } }
        expectError("trailing bytes", { $0.bytes += [0, 0, 0, 0] }) {
            $0 == .trailingBytes(path: "damaged.mmoe", offset: clean.bytes.count, count: 4)
        }
        expectError(
            "spec that is not JSON",
            { image in
                image.bytes[64] = UInt8(ascii: "[")
                image.reseal()
            }
        ) { if case .invalidModel(_, .malformedSpec) = $0 { true } else { false } }
        expectError(
            "shape that disagrees with the spec",
            { image in
                // Swap two dims of a 2-D weight: same length, wrong shape for the spec.
                let index =
                    (0..<20).first {
                        image.bytes[image.entry($0).rank] == 2 && image.u64(image.entry($0).dims) != image.u64(image.entry($0).dims + 8)
                    } ?? 0
                let e = image.entry(index)
                let a = image.u64(e.dims)
                let b = image.u64(e.dims + 8)
                image.setU64(e.dims, UInt64(b))
                image.setU64(e.dims + 8, UInt64(a))
                image.reseal()
            }
        ) { if case .invalidModel(_, .shapeMismatch) = $0 { true } else { false } }
    }

    @Test("the committed corpus of damaged files", arguments: corpus())
    func committedCorpus(file: String) throws {
        let path = fixturesPath + "/damaged/mmoe/" + file
        #expect(throws: FormatError.self) { _ = try ModelFile(path: path, verifyChecksums: true) }
    }

    static func corpus() -> [String] {
        let folder = fixturesPath + "/damaged/mmoe"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".mmoe") }.sorted()
    }

    @Test("the committed corpus is present and its source model is valid")
    func corpusPresent() throws {
        #expect(DamagedFileTests.corpus().count >= 20)
        _ = try ModelFile(path: fixturesPath + "/damaged/valid.mmoe", verifyChecksums: true).model()
    }
}
