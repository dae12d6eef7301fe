import Foundation
import MMoECore
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

/// The committed PyTorch fixtures: every model, from .pt and from .safetensors, must give the
/// framework's own outputs within |swift − framework| ≤ 1e-5 + 1e-4·|framework|.
@Suite("Parity with PyTorch frameworks")
struct TorchParityTests {
    static let fixtures: [String] = {
        let folder = fixturesPath + "/torch"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }()

    static let cases: [(String, String)] = fixtures.flatMap { [($0, "model.pt"), ($0, "model.safetensors")] }

    @Test("all framework families are present")
    func present() {
        let names = Set(TorchParityTests.fixtures)
        for expected in [
            "rechub_mmoe", "rechub_ple", "rechub_esmm", "rechub_sharedbottom", "deepctr_torch_mmoe", "deepctr_torch_mmoe_bn_prelu",
            "deepctr_torch_ple", "deepctr_torch_esmm", "deepctr_torch_sharedbottom", "plain_mmoe", "plain_stacked_mmoe",
            "rechub_mmoe_prelu", "deepctr_torch_mmoe_prelu", "deepctr_torch_sharedbottom_prelu", "rechub_aitm", "plain_keras_layout_mmoe",
            "plain_bn_mmoe",
        ] {
            #expect(names.contains(expected), "fixture \(expected)")
        }
    }

    @Test("converted model reproduces the framework's outputs", arguments: cases)
    func parity(fixture: String, file: String) throws {
        let folder = fixturesPath + "/torch/" + fixture
        let result = try ModelImporter.load(path: folder + "/" + file, conversionSpecPath: folder + "/conversion.json")
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let inputs = try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec)
        let expected = try PredictionFiles.readExpected(folder + "/outputs.npz")
        let prediction = try model.predict(inputs)
        #expect(Set(prediction.outputNames) == Set(expected.keys), "output names")
        #expect(prediction.outputNames == result.spec.resolvedOutputs.map(\.name))
        var worst = 0.0  // relative to max(1, |framework|)
        for name in prediction.outputNames {
            let got = try #require(prediction[name])
            let want = try #require(expected[name])
            #expect(got.count == want.count)
            for i in 0..<min(got.count, want.count) {
                let error = abs(Double(got[i]) - Double(want[i]))
                worst = max(worst, error / max(1, abs(Double(want[i]))))
                #expect(error <= 1e-5 + 1e-4 * abs(Double(want[i])), "\(fixture) \(name)[\(i)]: swift \(got[i]) vs framework \(want[i])")
            }
        }
        #expect(worst < 1e-3)
    }

    @Test(
        "training checkpoints convert to the model's weights: tutorial form, with an EMA copy, and a real Lightning checkpoint",
        arguments: ["train_checkpoint.pt", "ema_checkpoint.pt", "lightning.ckpt"])
    func trainingCheckpoint(file: String) throws {
        let folder = fixturesPath + "/torch/rechub_mmoe_prelu"
        let result = try ModelImporter.load(path: folder + "/" + file, conversionSpecPath: folder + "/conversion.json")
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        try expectParity(prediction, try PredictionFiles.readExpected(folder + "/outputs.npz"), file)
        let messages = result.notes.map(\.message)
        #expect(messages.contains { $0.hasPrefix("a training checkpoint: using the weights under") })
        switch file {
        case "train_checkpoint.pt":
            #expect(messages.contains { $0.hasPrefix("training state:") && $0.contains("optimizer_state_dict") })
        case "ema_checkpoint.pt":
            #expect(messages.contains { $0.contains("averaged (EMA/SWA) weights under 'ema' are not used") })
        default:
            #expect(messages.contains { $0.contains("optimizer_states") && $0.contains("callbacks") })
            #expect(messages.contains { $0.contains("LightningModule attribute prefix 'net.'") })
        }
    }

    @Test("output order follows the framework")
    func outputOrder() throws {
        let rechub = try ModelImporter.load(
            path: fixturesPath + "/torch/rechub_esmm/model.pt", conversionSpecPath: fixturesPath + "/torch/rechub_esmm/conversion.json")
        #expect(rechub.spec.resolvedOutputs.map(\.name) == ["cvr", "ctr", "ctcvr"])
        let deepctr = try ModelImporter.load(
            path: fixturesPath + "/torch/deepctr_torch_esmm/model.pt",
            conversionSpecPath: fixturesPath + "/torch/deepctr_torch_esmm/conversion.json")
        #expect(deepctr.spec.resolvedOutputs.map(\.name) == ["ctr", "ctcvr"])
    }

    @Test("trainer leftovers are ignored with notes; the DeepCTR-Torch PLE quirk is reported")
    func notes() throws {
        let folder = fixturesPath + "/torch/deepctr_torch_ple"
        let result = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: folder + "/conversion.json")
        #expect(result.notes.contains { $0.kind == .ignored && $0.message.contains("unused shared experts") })
        #expect(result.notes.contains { $0.kind == .ignored && $0.message.contains("last level's shared gate") })
        let bn = try ModelImporter.load(
            path: fixturesPath + "/torch/rechub_mmoe/model.pt", conversionSpecPath: fixturesPath + "/torch/rechub_mmoe/conversion.json")
        #expect(bn.notes.contains { $0.kind == .ignored && $0.message.contains("num_batches_tracked") })
    }

    @Test("a state_dict with module. prefixes and loss weights converts, with notes")
    func trainerCheckpoint() throws {
        // Rewrite the safetensors fixture with DataParallel names and an uncertainty-weighting key.
        let folder = fixturesPath + "/torch/rechub_sharedbottom"
        let checkpoint = try SafetensorsReader.read(path: folder + "/model.safetensors")
        var header: [String: Any] = [:]
        var data: [UInt8] = []
        for tensor in checkpoint.tensors {
            let bytes = Array(tensor.storage.bytes[tensor.byteOffset..<(tensor.byteOffset + tensor.count * tensor.dtype.size)])
            header["module." + tensor.name] = [
                "dtype": tensor.dtype.rawValue, "shape": tensor.shape, "data_offsets": [data.count, data.count + bytes.count],
            ]
            data += bytes
        }
        header["loss weight.0"] = ["dtype": "F32", "shape": [1], "data_offsets": [data.count, data.count + 4]]
        data += [0, 0, 128, 63]
        let json = try JSONSerialization.data(withJSONObject: header)
        var file = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Array($0) }
        file += Array(json) + data
        let temporary = try TemporaryFolder()
        defer { temporary.remove() }
        let path = temporary.file("trainer.safetensors")
        try Data(file).write(to: URL(fileURLWithPath: path))
        let result = try ModelImporter.load(path: path, conversionSpecPath: folder + "/conversion.json")
        #expect(result.notes.contains { $0.message.contains("'module.' prefix") })
        #expect(result.notes.contains { $0.message.contains("loss weight.0") })
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let expected = try PredictionFiles.readExpected(folder + "/outputs.npz")
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        for (name, want) in expected {
            let got = try #require(prediction[name])
            for i in want.indices { #expect(abs(got[i] - want[i]) <= 1e-5 + 1e-4 * abs(want[i])) }
        }
    }

    @Test("a conversion spec that disagrees with the checkpoint is refused precisely")
    func mismatches() throws {
        let folder = fixturesPath + "/torch/rechub_mmoe"
        let temporary = try TemporaryFolder()
        defer { temporary.remove() }
        var conversion =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/conversion.json"))) as? [String: Any]
            ?? [:]
        var args = conversion["args"] as? [String: Any] ?? [:]
        args["n_expert"] = 5
        conversion["args"] = args
        let specPath = temporary.file("wrong.json")
        try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: specPath))
        #expect(throws: ImportError.mismatch(path: folder + "/model.pt", reason: "n_expert is 5 but the checkpoint has 3 experts")) {
            _ = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: specPath)
        }
        var features = (conversion["features"] as? [[String: Any]]) ?? []
        features[0]["vocab_size"] = 31
        args["n_expert"] = 3
        conversion["args"] = args
        conversion["features"] = features
        try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: specPath))
        #expect(
            throws: ImportError.mismatch(
                path: folder + "/model.pt",
                reason: "feature 'user id': vocab_size 31 but table 'embedding.embed_dict.user id.weight' has 30 rows")
        ) {
            _ = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: specPath)
        }
        features[0]["vocab_size"] = 30
        conversion["features"] = features
        args["expert_params"] = ["dims": [16, 9], "activation": "relu"]
        conversion["args"] = args
        try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: specPath))
        #expect(
            throws: ImportError.mismatch(
                path: folder + "/model.pt", reason: "experts.0: the conversion spec says hidden dims [16, 9], the checkpoint has [16, 8]")
        ) {
            _ = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: specPath)
        }
        // A plain model cannot be inferred without a spec.
        #expect(throws: ImportError.self) { _ = try ModelImporter.load(path: fixturesPath + "/torch/plain_mmoe/model.pt") }
    }

    @Test("without a conversion spec, framework checkpoints convert with every assumption noted")
    func inferred() throws {
        let rechub = try ModelImporter.load(path: fixturesPath + "/torch/rechub_mmoe/model.pt")
        #expect(rechub.spec.architecture.type == .mmoe)
        #expect(rechub.spec.architecture.experts?.count == 3)
        #expect(rechub.spec.tasks.map(\.name) == ["task0", "task1"])
        #expect(rechub.notes.contains { $0.kind == .inferred && $0.message.contains("framework torch-rechub, model MMOE") })
        #expect(rechub.notes.contains { $0.kind == .assumed && $0.message.contains("dense features") })
        let deepctr = try ModelImporter.load(path: fixturesPath + "/torch/deepctr_torch_ple/model.safetensors")
        #expect(deepctr.spec.architecture.type == .ple)
        #expect(deepctr.spec.architecture.levels?.count == 2)
        _ = try Model(spec: deepctr.spec, tensors: deepctr.tensors)
    }
}
