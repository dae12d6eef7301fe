import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

/// The python of the virtual environment with onnxruntime, onnx and numpy (scripts/onnx-venv.sh
/// makes it on first use; scripts/test.sh makes it before the tests).
let onnxPython: Result<String, PNGImage.Failure> = {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = [fixturesPath + "/../scripts/onnx-venv.sh"]
    let out = Pipe()
    process.standardOutput = out
    do { try process.run() } catch { return .failure(PNGImage.Failure(description: "cannot run scripts/onnx-venv.sh: \(error)")) }
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
    guard process.terminationStatus == 0, FileManager.default.isExecutableFile(atPath: path) else {
        return .failure(
            PNGImage.Failure(
                description: "scripts/onnx-venv.sh could not make the ONNX Runtime environment (pip install onnxruntime onnx numpy)"))
    }
    return .success(path)
}()

/// One export to check in ONNX Runtime.
struct OnnxCase: Encodable {
    let model: String
    let inputs: String
    let expected: [String]
}

/// Runs scripts/onnx_check.py on `cases`; returns one report per case, by model path.
func runOnnxRuntime(_ cases: [OnnxCase], in folder: TemporaryFolder) throws -> [String: [String: Any]] {
    let python = try onnxPython.get()
    let manifest = folder.file("manifest.json")
    try JSONEncoder().encode(cases).write(to: URL(fileURLWithPath: manifest))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: python)
    process.arguments = [fixturesPath + "/../scripts/onnx_check.py", "--manifest", manifest]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    var reports: [String: [String: Any]] = [:]
    for line in text.split(separator: "\n") {
        guard let report = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let model = report["model"] as? String
        else { continue }
        reports[model] = report
    }
    return reports
}

/// Writes `export` (and its side file) into `folder` as `name`.
func write(_ export: OnnxExport, named name: String, in folder: TemporaryFolder, dataName: String = "model.onnx.data") throws -> String {
    let path = folder.file(name)
    try Data(export.model).write(to: URL(fileURLWithPath: path))
    if let data = export.externalData { try Data(data).write(to: URL(fileURLWithPath: folder.file(dataName))) }
    return path
}

/// A prediction as an .npz of our outputs.
func writeOurs(_ prediction: Prediction, to path: String) throws {
    try PredictionFiles.writeOutputs(prediction, to: path)
}

/// Writes a batch as the .npz `predict` reads.
func writeBatch(_ batch: [String: FeatureArray], to path: String) throws {
    var arrays: [String: NumpyArray] = [:]
    for (name, array) in batch {
        switch array.values {
        case .float32(let values): arrays[name] = .float32(values, shape: array.shape)
        case .int64(let ids): arrays[name] = NumpyArray(descr: "<i8", shape: array.shape, data: ids.withUnsafeBytes { Array($0) })
        case .strings(let values): arrays[name] = .strings(values, shape: array.shape)
        }
    }
    try NumpyArchive.write(arrays, to: path)
}

@Suite("ONNX export")
struct OnnxExportTests {
    /// Every framework fixture: (folder, weights file).
    static let fixtures: [(String, String)] = {
        var result: [(String, String)] = []
        for group in ["torch", "keras", "keras3"] {
            let root = fixturesPath + "/" + group
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted() {
                let folder = root + "/" + name
                guard FileManager.default.fileExists(atPath: folder + "/conversion.json") else { continue }
                for file in ["model.pt", "model.safetensors", "model.h5", "model.weights.h5"]
                where FileManager.default.fileExists(atPath: folder + "/" + file) {
                    result.append((group + "/" + name, file))
                    break
                }
            }
        }
        return result
    }()

    @Test("every framework fixture exported: ONNX Runtime gives the framework's outputs and ours; the export converts back")
    func fixtureParity() throws {
        #expect(Self.fixtures.count >= 30)
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var cases: [OnnxCase] = []
        for (index, (fixture, file)) in Self.fixtures.enumerated() {
            let source = fixturesPath + "/" + fixture
            let result = try ModelImporter.load(path: source + "/" + file, conversionSpecPath: source + "/conversion.json")
            let model = try Model(spec: result.spec, tensors: result.tensors)
            let batch = try PredictionFiles.readInputs(source + "/inputs.npz", spec: model.spec)
            let ours = try model.predict(batch)
            try writeOurs(ours, to: folder.file("ours\(index).npz"))
            // Opset 17 for all; 13 (no LayerNormalization, ReduceMax axes as attribute) and 21 for some.
            let opsets = index % 5 == 0 ? [13, 17, 21] : [17]
            for opset in opsets {
                let export = try OnnxExporter.export(spec: result.spec, tensors: result.tensors, options: OnnxExportOptions(opset: opset))
                let path = try write(export, named: "m\(index)-\(opset).onnx", in: folder)
                cases.append(
                    OnnxCase(
                        model: path, inputs: source + "/inputs.npz", expected: [source + "/outputs.npz", folder.file("ours\(index).npz")]))
                // Round trip: the file converts back without a spec and predicts what the source model predicts.
                let back = try ModelImporter.load(path: path)
                #expect(back.spec.resolvedOutputs.map(\.name) == result.spec.resolvedOutputs.map(\.name))
                let again = try Model(spec: back.spec, tensors: back.tensors).predict(batch)
                for name in ours.outputNames {
                    let (a, b) = (ours[name] ?? [], again[name] ?? [])
                    #expect(a.count == b.count)
                    for i in 0..<min(a.count, b.count) {
                        #expect(abs(a[i] - b[i]) <= 1e-5 + 1e-4 * abs(a[i]), "\(fixture) \(name)[\(i)] round trip")
                    }
                }
            }
        }
        let reports = try runOnnxRuntime(cases, in: folder)
        #expect(reports.count == cases.count, "ONNX Runtime reported \(reports.count) of \(cases.count) exports")
        var worst = 0.0
        for item in cases {
            let report = reports[item.model]
            #expect(report?["ok"] as? Bool == true, "\(item.inputs): \(report ?? [:])")
            for case let output as [String: Any] in (report?["outputs"] as? [String: Any] ?? [:]).values {
                worst = max(worst, output["max_scaled_err"] as? Double ?? .infinity)
            }
        }
        print(
            "ONNX export parity: \(cases.count) exports of \(Self.fixtures.count) fixtures, worst |ONNX Runtime - reference| / "
                + "max(1, |reference|) = \(worst)"
        )
        #expect(worst < 1e-5)
    }

    @Test("every building block, head and table dtype, at opsets 13, 17, 20 and 21, in ONNX Runtime against our runtime")
    func blocks() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var cases: [OnnxCase] = []
        var samples = SampleSpecs.all.map { ($0.name, $0.spec, DType.f32) }
        samples += [("mmoe_f16", SampleSpecs.mmoe, .f16), ("mmoe_bf16", SampleSpecs.mmoe, .bf16), ("mmoe_i8", SampleSpecs.mmoe, .i8)]
        samples += [("mmoe_i8_offsets", SampleSpecs.mmoe, .i8)]
        for (index, (name, spec, dtype)) in samples.enumerated() {
            var tensors = try randomTensors(for: spec, seed: UInt64(index + 1), embeddingDType: name == "mmoe_i8_offsets" ? .f32 : dtype)
            if name == "mmoe_i8_offsets" { tensors = try ModelTransforms.quantizeEmbeddings(spec: spec, tensors: tensors) }
            let batch = randomBatch(for: spec, rows: 9, seed: 5)
            try writeBatch(batch, to: folder.file("in\(index).npz"))
            try writeOurs(try Model(spec: spec, tensors: tensors).predict(batch), to: folder.file("ours\(index).npz"))
            for opset in [13, 17, 20, 21] {
                let export = try OnnxExporter.export(spec: spec, tensors: tensors, options: OnnxExportOptions(opset: opset))
                let path = try write(export, named: "\(name)-\(opset).onnx", in: folder)
                cases.append(OnnxCase(model: path, inputs: folder.file("in\(index).npz"), expected: [folder.file("ours\(index).npz")]))
            }
            if dtype == .i8 {
                // int8 tables stay int8 in the file (codes and per-row scales) and read back as int8.
                let path = try write(try OnnxExporter.export(spec: spec, tensors: tensors), named: "i8.onnx", in: folder)
                let back = try ModelImporter.load(path: path)
                for table in spec.tables { #expect(back.tensors[TensorNames.embedding(table.name)]?.dtype == .i8) }
            }
        }
        let reports = try runOnnxRuntime(cases, in: folder)
        for item in cases { #expect(reports[item.model]?["ok"] as? Bool == true, "\(item.model): \(reports[item.model] ?? [:])") }
    }

    @Test("export then import round trips over 300 random valid specs; 30 of them also in ONNX Runtime")
    func randomRoundTrips() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var cases: [OnnxCase] = []
        var architectures = Set<String>()
        for seed in 0..<300 {
            let spec = RandomSpecs.spec(seed: UInt64(seed))
            architectures.insert(spec.architecture.type.rawValue)
            let tensors = try randomTensors(for: spec, seed: UInt64(seed), embeddingDType: [DType.f32, .f16, .i8][seed % 3])
            let opset = 13 + seed % 9
            let export = try OnnxExporter.export(spec: spec, tensors: tensors, options: OnnxExportOptions(opset: opset))
            let path = try write(export, named: "r\(seed).onnx", in: folder)
            let back = try ModelImporter.load(path: path)
            let batch = randomBatch(for: spec, rows: 5, seed: UInt64(seed))
            let ours = try Model(spec: spec, tensors: tensors).predict(batch)
            let again = try Model(spec: back.spec, tensors: back.tensors).predict(batch)
            #expect(again.outputNames == ours.outputNames)
            for name in ours.outputNames {
                let (a, b) = (ours[name] ?? [], again[name] ?? [])
                #expect(a.count == b.count, "seed \(seed) \(name)")
                for i in 0..<min(a.count, b.count) where !(a[i].isNaN && b[i].isNaN) {
                    #expect(abs(a[i] - b[i]) <= 1e-5 + 1e-4 * abs(a[i]), "seed \(seed) \(name)[\(i)]: \(a[i]) vs \(b[i])")
                }
            }
            if seed % 10 == 0 {
                try writeBatch(batch, to: folder.file("in\(seed).npz"))
                try writeOurs(ours, to: folder.file("ours\(seed).npz"))
                cases.append(OnnxCase(model: path, inputs: folder.file("in\(seed).npz"), expected: [folder.file("ours\(seed).npz")]))
            }
        }
        #expect(architectures.count == 6, "\(architectures)")
        let reports = try runOnnxRuntime(cases, in: folder)
        for item in cases { #expect(reports[item.model]?["ok"] as? Bool == true, "\(item.model): \(reports[item.model] ?? [:])") }
    }

    @Test("large models: initializers in a side file beside the model, read back by ONNX Runtime and by the importer")
    func externalData() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/torch/rechub_ple"
        let result = try ModelImporter.load(path: source + "/model.pt", conversionSpecPath: source + "/conversion.json")
        let export = try OnnxExporter.export(
            spec: result.spec, tensors: result.tensors,
            options: OnnxExportOptions(externalDataThreshold: 0, externalDataName: "ple.onnx.data"))
        let data = try #require(export.externalData)
        let inline = try OnnxExporter.export(spec: result.spec, tensors: result.tensors)
        #expect(inline.externalData == nil)
        #expect(!data.isEmpty && export.model.count < inline.model.count)
        let path = try write(export, named: "ple.onnx", in: folder, dataName: "ple.onnx.data")
        let back = try ModelImporter.load(path: path)
        let batch = try PredictionFiles.readInputs(source + "/inputs.npz", spec: result.spec)
        let want = try Model(spec: result.spec, tensors: result.tensors).predict(batch)
        let got = try Model(spec: back.spec, tensors: back.tensors).predict(batch)
        for name in want.outputNames {
            for (a, b) in zip(want[name] ?? [], got[name] ?? []) { #expect(abs(a - b) <= 1e-5 + 1e-4 * abs(a), "\(name)") }
        }
        let reports = try runOnnxRuntime(
            [OnnxCase(model: path, inputs: source + "/inputs.npz", expected: [source + "/outputs.npz"])], in: folder)
        #expect(reports[path]?["ok"] as? Bool == true, "\(reports[path] ?? [:])")
        // Without its side file the export is refused, naming the missing file.
        try FileManager.default.removeItem(atPath: folder.file("ple.onnx.data"))
        #expect(throws: ImportError.self) { _ = try ModelImporter.load(path: path) }
    }

    @Test("the CLI: convert -o model.onnx with --opset and --triton, then convert the export back and verify it")
    func commandLine() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/keras/keras_mmoe_census"
        let onnx = folder.file("census.onnx")
        let repository = folder.file("repo")
        let run = try mmoeConvert([
            "convert", source + "/model.h5", "--spec", source + "/conversion.json", "-o", onnx, "--opset", "18", "--triton", repository,
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("wrote \(onnx) (onnx, opset 18)"))
        let config = try String(contentsOfFile: repository + "/census/config.pbtxt", encoding: .utf8)
        #expect(config.contains("backend: \"onnxruntime\""))
        #expect(config.contains("name: \"x\"\n    data_type: TYPE_FP32\n    dims: [ 20 ]"))
        #expect(config.contains("name: \"marital\"\n    data_type: TYPE_FP32\n    dims: [ 3 ]"))
        #expect(config.contains("name: \"income_positive\"\n    data_type: TYPE_FP32\n    dims: [ 1 ]\n    reshape: { shape: [ ] }"))
        #expect(config.contains("dynamic_batching"))
        #expect(FileManager.default.contentsEqual(atPath: onnx, andPath: repository + "/census/1/model.onnx"))
        let back = folder.file("back.mmoe")
        #expect(try mmoeConvert(["convert", onnx, "-o", back]).status == 0)
        let verify = try mmoeConvert(["verify", back, "--inputs", source + "/inputs.npz", "--expected", source + "/outputs.npz"])
        #expect(verify.status == 0, "\(verify.stdout)")
        let bad = try mmoeConvert(["convert", source + "/model.h5", "--spec", source + "/conversion.json", "-o", onnx, "--opset", "12"])
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("--opset must be between 13 and 21"))
    }
}

@Suite("int8 embedding tables")
struct Int8TableTests {
    @Test("per-row scale and offset: every value within half a step, the runtime equals the reference, .mmoe and HDF5 keep the offsets")
    func offsets() throws {
        let spec = SampleSpecs.mmoe
        let source = try randomTensors(for: spec, seed: 21)
        // Shift one table so that its rows lean to one side, where offsets matter.
        let item = try #require(source[TensorNames.embedding("item")])
        var shifted = source
        shifted.set(try Tensor(float32: item.floats().map { $0 + 0.8 }, shape: item.shape), named: TensorNames.embedding("item"))
        let quantized = try ModelTransforms.quantizeEmbeddings(spec: spec, tensors: shifted)
        for table in spec.tables {
            let codes = try #require(quantized[TensorNames.embedding(table.name)])
            let scales = try #require(quantized[TensorNames.embeddingScale(table.name)]).floats()
            let offsets = try #require(quantized[TensorNames.embeddingOffset(table.name)]).floats()
            let original = try #require(shifted[TensorNames.embedding(table.name)]).floats()
            #expect(codes.dtype == .i8)
            for r in 0..<table.vocabSize {
                for c in 0..<table.dim {
                    let value = codes.element(r * table.dim + c) * scales[r] + offsets[r]
                    #expect(abs(value - original[r * table.dim + c]) <= scales[r] * 0.5001, "\(table.name)[\(r), \(c)]")
                }
            }
            // Asymmetric codes: the shifted table's steps are finer than symmetric ones would be.
            if table.name == "item" {
                for r in 0..<table.vocabSize {
                    let row = original[(r * table.dim)..<((r + 1) * table.dim)]
                    #expect(scales[r] < (row.map { abs($0) }.max() ?? 0) / 127)
                }
            }
        }
        let model = try Model(spec: spec, tensors: quantized)
        let batch = randomBatch(for: spec, rows: 17, seed: 4)
        let prediction = try model.predict(batch)
        let reference = ReferenceEvaluator(spec: spec, tensors: quantized).predict(batch, rows: 17)
        for name in prediction.outputNames {
            for (got, want) in zip(prediction[name] ?? [], reference.outputs[name] ?? []) {
                #expect(abs(Double(got) - want) <= 1e-5 * max(1, abs(want)))
            }
        }
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        for file in ["q.mmoe", "q.h5"] {
            let path = folder.file(file)
            if file.hasSuffix(".h5") {
                try HDF5Codec.write(spec: spec, tensors: quantized, to: path)
            } else {
                try ModelFileWriter.write(spec: spec, tensors: quantized, to: path)
            }
            let back = try ModelImporter.load(path: path)
            #expect(back.tensors[TensorNames.embeddingOffset("item")] != nil, "\(file)")
            #expect(try Model(spec: back.spec, tensors: back.tensors).predict(batch) == prediction, "\(file)")
        }
    }
}
