import Foundation
import MMoECore
import MMoEFormat
import MMoERuntime
import MMoETestSupport
import Testing

@Suite("Native .mmoe format")
struct ModelFileTests {
    static let cases: [(String, DType)] = SampleSpecs.all.flatMap { sample in
        [DType.f32, .f16, .bf16, .i8].map { (sample.name, $0) }
    }

    @Test("round trip of every architecture and embedding dtype", arguments: cases)
    func roundTrip(sample: String, dtype: DType) throws {
        let spec = try #require(SampleSpecs.all.first { $0.name == sample }?.spec)
        var tensors = try randomTensors(for: spec, seed: 21, embeddingDType: dtype)
        if dtype != .i8 {
            // Non-embedding weights in the same dtype too (f32 stays f32).
            for name in tensors.names where !name.hasPrefix("embeddings.") {
                tensors.set(try #require(tensors[name]).converted(to: dtype), named: name)
            }
        }
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let path = folder.file("model.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: tensors, to: path)
        let file = try ModelFile(path: path, verifyChecksums: true)
        #expect(file.spec == spec)
        #expect(Set(file.tensors.names) == Set(tensors.names))
        for name in tensors.names {
            let original = try #require(tensors[name])
            let loaded = try #require(file.tensors[name])
            #expect(loaded.dtype == original.dtype && loaded.shape == original.shape, "\(name)")
            #expect(loaded.bytesArray() == original.bytesArray(), "\(name)")
            // Zero copy: the tensor views the mapping, 64-byte aligned.
            #expect(loaded.storage === file.storage)
            #expect(loaded.byteOffset % 64 == 0)
        }
        let batch = randomBatch(for: spec, rows: 13, seed: 2)
        let expected = try Model(spec: spec, tensors: tensors).predict(batch, options: PredictOptions(includeGates: true))
        #expect(try file.model().predict(batch, options: PredictOptions(includeGates: true)) == expected)
        // Deterministic bytes: writing again, or encoding in memory, gives the same file.
        let again = folder.file("again.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: file.tensors, to: again)
        let first = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(try Data(contentsOf: URL(fileURLWithPath: again)) == first)
        #expect(Data(try ModelFileWriter.encode(spec: spec, tensors: tensors)) == first)
    }

    @Test("large tables are page aligned; no temporary files are left behind")
    func pageAlignment() throws {
        var spec = SampleSpecs.esmm
        spec.tables[1].vocabSize = 60_000  // 60000 x 5 x 4 bytes > 1 MiB
        let tensors = try randomTensors(for: spec, seed: 3)
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let path = folder.file("big.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: tensors, to: path)
        try ModelFileWriter.write(spec: spec, tensors: tensors, to: path)  // replace an existing file
        let file = try ModelFile(path: path)
        let entry = try #require(file.entries.first { $0.name == "embeddings.item.weight" })
        #expect(entry.offset % 4096 == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["big.mmoe"])
    }

    @Test("a flipped data byte is caught by verifyChecksums, not by a plain open")
    func dataChecksum() throws {
        let spec = SampleSpecs.mmoe
        var bytes = try ModelFileWriter.encode(spec: spec, tensors: try randomTensors(for: spec, seed: 4))
        let clean = try ModelFile(storage: ByteStorage(copying: bytes), path: "m.mmoe")
        let entry = try #require(clean.entries.first { $0.name == "towers.0.layers.0.weight" })
        bytes[entry.offset + 3] ^= 0x40
        let damaged = try ModelFile(storage: ByteStorage(copying: bytes), path: "m.mmoe")
        #expect {
            try damaged.verifyChecksums()
        } throws: { error in
            guard case FormatError.tensorChecksumMismatch(let path, let tensor, _, _) = error else { return false }
            return path == "m.mmoe" && tensor == "towers.0.layers.0.weight"
        }
    }

    @Test("a model that fails validation is not written, and nothing replaces the target")
    func refusesInvalid() throws {
        let spec = SampleSpecs.mmoe
        var tensors = try randomTensors(for: spec, seed: 4)
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let path = folder.file("m.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: tensors, to: path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        tensors.remove(named: "heads.1.bias")
        #expect(throws: FormatError.invalidModel(path: path, .missingTensor(name: "heads.1.bias", expectedShape: [1]))) {
            try ModelFileWriter.write(spec: spec, tensors: tensors, to: path)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        #expect(throws: FormatError.self) {
            try ModelFileWriter.write(spec: spec, tensors: try randomTensors(for: spec, seed: 1), to: folder.file("no/such/dir.mmoe"))
        }
        #expect(throws: FormatError.self) { _ = try ModelFile(path: folder.file("missing.mmoe")) }
        #expect(throws: FormatError.self) { _ = try ModelFile(path: folder.path) }
    }
}

@Suite("Checksums")
struct ChecksumTests {
    @Test("the hardware CRC-32C equals the portable one")
    func sameValues() {
        var random = TestRandom(seed: 5)
        for length in [0, 1, 7, 8, 9, 63, 64, 1000, 65_537] {
            let bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let fast = bytes.withUnsafeBytes { FastCRC32C.checksum($0) }
            #expect(fast == CRC32C.checksum(bytes), "length \(length)")
        }
        #expect(Array("123456789".utf8).withUnsafeBytes { FastCRC32C.checksum($0) } == 0xE306_9283)
    }
}
