import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

@Suite("Robustness", .serialized)
struct RobustnessTests {
    static let regressions: [(String, String)] = ParserHarness.targets.flatMap { target -> [(String, String)] in
        let folder = fixturesPath + "/fuzz-regressions/" + target
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        return files.map { (target, $0) }
    }

    @Test("past fuzzer findings replay without crashing", arguments: regressions)
    func replay(target: String, file: String) throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let bytes = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/fuzz-regressions/\(target)/\(file)"))
        let accepted = bytes.withUnsafeBytes {
            ParserHarness.run(target, $0, scratch: folder.file("input"), weights: fixturesPath + "/torch/plain_mmoe/model.safetensors")
        }
        // Every committed finding is a malformed input: it must be refused.
        #expect(!accepted, "\(target)/\(file) was accepted")
    }

    @Test("the harness accepts valid inputs of every target")
    func harnessAcceptsValidInputs() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let weights = fixturesPath + "/torch/plain_mmoe/model.safetensors"
        let valid: [(String, String)] = [
            ("mmoe", "/damaged/valid.mmoe"), ("hdf5", "/damaged/valid.h5"), ("torch", "/torch/rechub_mmoe/model.pt"),
            ("safetensors", "/torch/plain_mmoe/model.safetensors"), ("npz", "/torch/plain_mmoe/inputs.npz"),
            ("conversion-spec", "/torch/plain_mmoe/conversion.json"),
        ]
        for (target, path) in valid {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + path))
            #expect(bytes.withUnsafeBytes { ParserHarness.run(target, $0, scratch: folder.file(target), weights: weights) }, "\(target)")
        }
        let csv = Data("d,s,q\n1 2,3,1 2 3\n0.5 -1,9,4\n".utf8)
        #expect(csv.withUnsafeBytes { ParserHarness.run("csv", $0, scratch: folder.file("csv"), weights: weights) })
    }

    @Test("concurrent loads of .mmoe and HDF5 files give identical models")
    func concurrentLoads() async throws {
        let mmoe = fixturesPath + "/damaged/valid.mmoe"
        let h5 = fixturesPath + "/damaged/valid.h5"
        let reference = try Model.open(path: mmoe)
        let batch = randomBatch(for: reference.spec, rows: 16, seed: 4)
        let expected = try reference.predict(batch)
        let results = try await withThrowingTaskGroup(of: Prediction.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    if worker % 2 == 0 { return try Model.open(path: mmoe, verifyChecksums: true).predict(batch) }
                    let (spec, tensors) = try HDF5Codec.read(path: h5)
                    return try Model(spec: spec, tensors: tensors).predict(batch)
                }
            }
            var all: [Prediction] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 8)
        for result in results { #expect(result == expected) }
    }

    @Test("a writer killed at random points leaves the old model or the new one, never a torn file")
    func killedWriter() throws {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("mmoe-convert").path
        try #require(FileManager.default.isExecutableFile(atPath: binary))
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        // Two different models, ~6 MiB each so that writes take a while.
        var spec = SampleSpecs.mmoe
        spec.tables[1].vocabSize = 300_000
        let a = folder.file("a.mmoe")
        let b = folder.file("b.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: try randomTensors(for: spec, seed: 1), to: a)
        try ModelFileWriter.write(spec: spec, tensors: try randomTensors(for: spec, seed: 2), to: b)
        let contents = [try Data(contentsOf: URL(fileURLWithPath: a)), try Data(contentsOf: URL(fileURLWithPath: b))]
        let target = folder.file("target.mmoe")
        try contents[0].write(to: URL(fileURLWithPath: target))
        var random = TestRandom(seed: 99)
        var killed = 0
        for round in 0..<12 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = ["convert", round % 2 == 0 ? b : a, "-o", target]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(UInt32(random.int(60_000)))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                killed += 1
            }
            process.waitUntilExit()
            let now = try Data(contentsOf: URL(fileURLWithPath: target))
            #expect(now == contents[0] || now == contents[1], "round \(round): torn target")
            _ = try ModelFile(path: target, verifyChecksums: true)
        }
        #expect(killed > 0, "no writer was killed: the test did not test anything")
    }
}
