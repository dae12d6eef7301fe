import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoERuntime
import MMoETestSupport
import Testing

@Suite("HDF5 layout", .serialized)
struct HDF5CodecTests {
    static let cases: [(String, DType)] = SampleSpecs.all.flatMap { sample in
        [DType.f32, .f16, .bf16, .i8].map { (sample.name, $0) }
    }

    @Test("native -> HDF5 -> native is bit-exact", arguments: cases)
    func roundTrip(sample: String, dtype: DType) throws {
        let spec = try #require(SampleSpecs.all.first { $0.name == sample }?.spec)
        var tensors = try randomTensors(for: spec, seed: 77, embeddingDType: dtype)
        if dtype != .i8 {
            for name in tensors.names where !name.hasPrefix("embeddings.") {
                tensors.set(try #require(tensors[name]).converted(to: dtype), named: name)
            }
        }
        // A NaN payload must survive too (bit-exact, not value-equal).
        if dtype == .f32, let bias = tensors["towers.0.layers.0.bias"] {
            var bytes = bias.bytesArray()
            bytes[0...3] = [0x01, 0x00, 0xC0, 0x7F]
            tensors.set(try Tensor(dtype: .f32, shape: bias.shape, bytes: bytes), named: "towers.0.layers.0.bias")
        }
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let first = folder.file("a.mmoe")
        let h5 = folder.file("a.h5")
        let second = folder.file("b.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: tensors, to: first)
        let native = try ModelFile(path: first)
        try HDF5Codec.write(spec: native.spec, tensors: native.tensors, to: h5)
        let (readSpec, readTensors) = try HDF5Codec.read(path: h5)
        #expect(readSpec == spec)
        for name in tensors.names {
            #expect(readTensors[name]?.bytesArray() == tensors[name]?.bytesArray(), "\(name)")
            #expect(readTensors[name]?.dtype == tensors[name]?.dtype, "\(name)")
        }
        try ModelFileWriter.write(spec: readSpec, tensors: readTensors, to: second)
        #expect(try Data(contentsOf: URL(fileURLWithPath: second)) == Data(contentsOf: URL(fileURLWithPath: first)))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == ["a.h5", "a.mmoe", "b.mmoe"])
    }

    @Test("natural dataset names and attributes")
    func layout() throws {
        let spec = SampleSpecs.ple
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let path = folder.file("ple.h5")
        try HDF5Codec.write(spec: spec, tensors: try randomTensors(for: spec, seed: 1), to: path)
        let file = try HDF5File(path: path)
        #expect(try file.stringAttribute("/", "mmoe_format") == "mmoe-hdf5")
        #expect(file.exists("/tensors/levels/0/shared_experts/1/layers/1/weight"))
        #expect(try file.info("/tensors/embeddings/item/weight").shape == [17, 5])
        #expect(try file.stringAttribute("/tensors/levels/0/shared_gate/layers/0/weight", "name") == "levels.0.shared_gate.layers.0.weight")
        #expect(try ModelSpec.decode(json: Array(try file.stringDataset("/spec").utf8)) == spec)
    }

    @Test("files that are not models get typed errors")
    func notModels() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let text = folder.file("text.h5")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        #expect(throws: HDF5Error.self) { _ = try HDF5Codec.read(path: text) }
        #expect(throws: HDF5Error.self) { _ = try HDF5Codec.read(path: folder.file("missing.h5")) }
        // Truncated copies of a valid file.
        let spec = SampleSpecs.mmoe
        let valid = folder.file("valid.h5")
        try HDF5Codec.write(spec: spec, tensors: try randomTensors(for: spec, seed: 2), to: valid)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: valid))
        for fraction in [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99] {
            let cut = folder.file("cut.h5")
            try bytes.prefix(Int(Double(bytes.count) * fraction)).write(to: URL(fileURLWithPath: cut))
            #expect(throws: HDF5Error.self, "cut at \(fraction)") { _ = try HDF5Codec.read(path: cut) }
        }
    }

    @Test("the committed corpus of damaged HDF5 files", arguments: corpus())
    func committedCorpus(file: String) throws {
        let path = fixturesPath + "/damaged/hdf5/" + file
        #expect(throws: HDF5Error.self) { _ = try HDF5Codec.read(path: path) }
    }

    static func corpus() -> [String] {
        let folder = fixturesPath + "/damaged/hdf5"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".h5") }.sorted()
    }

    @Test("the committed HDF5 corpus is present and its source model is valid")
    func corpusPresent() throws {
        #expect(HDF5CodecTests.corpus().count >= 10)
        let (spec, tensors) = try HDF5Codec.read(path: fixturesPath + "/damaged/valid.h5")
        _ = try Model(spec: spec, tensors: tensors)
    }
}
