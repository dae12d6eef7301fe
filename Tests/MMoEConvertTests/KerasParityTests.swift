import Foundation
import MMoECore
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

/// DeepCTR (TensorFlow) models saved as legacy Keras 2 HDF5 weights must reproduce the
/// framework's predict() outputs within |swift − framework| ≤ 1e-5 + 1e-4·|framework|.
@Suite("Parity with DeepCTR (TensorFlow)")
struct KerasParityTests {
    /// Every committed file variant: Keras 2 weights, Keras 2 full models, TF2 checkpoints,
    /// Keras 3 weights, and a .keras archive.
    static let fixtures: [String] = {
        var all: [String] = []
        let manager = FileManager.default
        for name in ((try? manager.contentsOfDirectory(atPath: fixturesPath + "/keras")) ?? []).sorted() where !name.hasPrefix(".") {
            for file in ["model.h5", "model_full.h5", "tf_checkpoint/model.index", "tf_checkpoint_train/ckpt-1.index"]
            where manager.fileExists(atPath: "\(fixturesPath)/keras/\(name)/\(file)") {
                all.append("keras/\(name)/\(file)")
            }
        }
        for name in ((try? manager.contentsOfDirectory(atPath: fixturesPath + "/keras3")) ?? []).sorted() where !name.hasPrefix(".") {
            for file in ["model.weights.h5", "model.keras"] where manager.fileExists(atPath: "\(fixturesPath)/keras3/\(name)/\(file)") {
                all.append("keras3/\(name)/\(file)")
            }
        }
        return all
    }()

    @Test("every DeepCTR model family is present")
    func present() {
        let models = ["deepctr_mmoe", "deepctr_mmoe_bn_prelu", "deepctr_mmoe_dice", "deepctr_ple", "deepctr_esmm", "deepctr_sharedbottom"]
        for model in models {
            for file in ["model.h5", "model_full.h5", "tf_checkpoint/model.index"] {
                #expect(KerasParityTests.fixtures.contains("keras/\(model)/\(file)"), "\(model) \(file)")
            }
        }
        // Keras 3.15 saves DeepCTR's list-held batch norms, PReLU and Dice nested under their owner.
        for model in [
            "deepctr_mmoe", "deepctr_ple", "deepctr_esmm", "deepctr_sharedbottom", "keras_mmoe_census", "deepctr_mmoe_bn_prelu",
            "deepctr_mmoe_dice",
            "deepctr_ple_bn",
        ] {
            #expect(KerasParityTests.fixtures.contains("keras3/\(model)/model.weights.h5"), "Keras 3 \(model)")
        }
        for model in ["deepctr_mmoe_dice", "deepctr_ple_bn"] { #expect(KerasParityTests.fixtures.contains("keras3/\(model)/model.keras")) }
        // TF checkpoints written with the optimizer's state (Keras 2 and Keras 3).
        #expect(KerasParityTests.fixtures.contains("keras/deepctr_esmm/tf_checkpoint_train/ckpt-1.index"))
        #expect(KerasParityTests.fixtures.contains("keras/keras_mmoe_census/model.h5"))
        // keras-mmoe fed by Embedding layers (a sparse id, a masked mean-pooled sequence, a dense value).
        #expect(KerasParityTests.fixtures.contains("keras/keras_mmoe_embeddings/model.h5"))
        #expect(KerasParityTests.fixtures.contains("keras3/keras_mmoe_embeddings/model.weights.h5"))
        #expect(KerasParityTests.fixtures.contains("keras3/deepctr_mmoe/model.keras"))
    }

    @Test("every Keras and TensorFlow file variant reproduces the framework's outputs", arguments: fixtures)
    func parity(fixture: String) throws {
        let file = fixturesPath + "/" + fixture
        var folder = (file as NSString).deletingLastPathComponent
        if folder.hasSuffix("/tf_checkpoint") || folder.hasSuffix("/tf_checkpoint_train") {
            folder = (folder as NSString).deletingLastPathComponent
        }
        #expect(try SourceFormat.detect(path: file) == (fixture.hasSuffix(".index") ? .tfCheckpoint : .keras))
        let result = try ModelImporter.load(path: file, conversionSpecPath: folder + "/conversion.json")
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        let expected = try PredictionFiles.readExpectedArrays(folder + "/outputs.npz")
        // Every framework output, shape for shape; the only extras are class outputs derived from them.
        let classOutputs = Set(model.spec.resolvedOutputs.filter { $0.task != nil }.map(\.name))
        #expect(Set(prediction.outputNames) == Set(expected.keys).union(classOutputs))
        for (name, array) in expected {
            let want = array.values
            let got = try #require(prediction[name])
            #expect(prediction.shape(of: name) == array.shape, "\(fixture) \(name)")
            #expect(got.count == want.count)
            for i in 0..<min(got.count, want.count) {
                #expect(
                    abs(got[i] - want[i]) <= 1e-5 + 1e-4 * abs(want[i]), "\(fixture) \(name)[\(i)]: swift \(got[i]) vs DeepCTR \(want[i])")
            }
        }
    }

    @Test(
        "keras-mmoe softmax heads give every class probability [N, C] and the positive class of a 2-class head",
        arguments: ["keras", "keras3"])
    func softmaxHeads(folderName: String) throws {
        let folder = fixturesPath + "/\(folderName)/keras_mmoe_census"
        let file = folder + (folderName == "keras3" ? "/model.weights.h5" : "/model.h5")
        let result = try ModelImporter.load(path: file, conversionSpecPath: folder + "/conversion.json")
        #expect(result.spec.tasks.map(\.head) == [.softmax, .softmax])
        #expect(result.spec.resolvedOutputs.map(\.name) == ["income", "marital", "income_positive"])
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        let expected = try PredictionFiles.readExpectedArrays(folder + "/outputs.npz")
        let income = try #require(expected["income"])
        #expect(income.shape == [prediction.batchSize, 2])
        #expect(try #require(expected["marital"]).shape == [prediction.batchSize, 3])
        #expect(prediction.shape(of: "marital") == [prediction.batchSize, 3])
        #expect(prediction.shape(of: "income_positive") == [prediction.batchSize])
        let positive = try #require(prediction["income_positive"])
        for r in 0..<prediction.batchSize {
            #expect(abs(positive[r] - income.values[r * 2 + 1]) <= 1e-5 + 1e-4 * abs(income.values[r * 2 + 1]), "income_positive[\(r)]")
        }
        // Rows of class probabilities sum to 1.
        let marital = try #require(prediction["marital"])
        for r in 0..<prediction.batchSize { #expect(abs(marital[r * 3] + marital[r * 3 + 1] + marital[r * 3 + 2] - 1) < 1e-5) }
    }

    /// Full-model `.h5` and `.keras` files describe the model: they convert without a spec.
    static let selfDescribing: [String] = fixtures.filter { $0.hasSuffix("model_full.h5") || $0.hasSuffix(".keras") }

    @Test("a DeepCTR full-model .h5 or .keras converts with no conversion spec, from its model config", arguments: selfDescribing)
    func zeroConfig(fixture: String) throws {
        let file = fixturesPath + "/" + fixture
        let folder = (file as NSString).deletingLastPathComponent
        let result = try ModelImporter.load(path: file)
        #expect(result.notes.contains { $0.message.contains("from the Keras model config (read as data; nothing in it is evaluated)") })
        // The same model as with the fixture's hand-written spec: features, outputs, heads.
        let stated = try ModelImporter.load(path: file, conversionSpecPath: folder + "/conversion.json").spec
        #expect(result.spec.features.map(\.name) == stated.features.map(\.name))
        #expect(result.spec.features.map(\.kind) == stated.features.map(\.kind))
        #expect(result.spec.features.map(\.pooling) == stated.features.map(\.pooling))
        #expect(result.spec.resolvedOutputs.map(\.name) == stated.resolvedOutputs.map(\.name))
        #expect(result.spec.tasks.map(\.head) == stated.tasks.map(\.head))
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        try expectParity(prediction, try PredictionFiles.readExpected(folder + "/outputs.npz"), fixture)
    }

    @Test("Keras-specific conventions are applied")
    func conventions() throws {
        let folder = fixturesPath + "/keras/deepctr_mmoe_dice"
        let result = try ModelImporter.load(path: folder + "/model.h5", conversionSpecPath: folder + "/conversion.json")
        let layers = result.spec.architecture.experts?.first?.layers ?? []
        #expect(layers.contains(.dice(variant: .deepctr, eps: 1e-9)))
        let bn = try ModelImporter.load(
            path: fixturesPath + "/keras/deepctr_mmoe_bn_prelu/model.h5",
            conversionSpecPath: fixturesPath + "/keras/deepctr_mmoe_bn_prelu/conversion.json")
        #expect(bn.spec.architecture.experts?.first?.layers.contains(.batchNorm(eps: 1e-3, affine: true)) == true)
        #expect(bn.spec.architecture.experts?.first?.layers.contains(.prelu(channels: 16)) == true)
        // The shared table is stored by the sequence feature that names it last.
        #expect(result.spec.tables.map(\.name).contains("sparse_seq_emb_hist"))
    }

    @Test("a Keras 3 file without batch-norm weights is refused when the spec says dnn_use_bn, naming the layer")
    func keras3MissingWeights() throws {
        let folder = fixturesPath + "/keras3/deepctr_mmoe"
        let temporary = try TemporaryFolder()
        defer { temporary.remove() }
        let spec = try conversionSpec(folder + "/conversion.json", settingArgs: ["dnn_use_bn": true], in: temporary)
        #expect {
            _ = try ModelImporter.load(path: folder + "/model.weights.h5", conversionSpecPath: spec)
        } throws: { error in
            guard case ImportError.mismatch(_, let reason) = error else { return false }
            return reason.contains("expert_0") && reason.contains("dnn_use_bn") && reason.contains("no BatchNormalization weights")
        }
    }

    @Test("Keras 3 nested sub-layers are read under their owner, in list order")
    func keras3NestedNames() throws {
        let dice = try KerasH5Reader.read(path: fixturesPath + "/keras3/deepctr_mmoe_dice/model.weights.h5")
        let names = dice.names
        #expect(names.contains("expert_0/batch_normalization/gamma"))
        #expect(names.contains("expert_0/batch_normalization_1/moving_variance"))
        #expect(names.contains("expert_0/dice_1/dice_alpha"))
        #expect(names.contains("expert_0/dice/batch_normalization/moving_mean"))
        let first = try #require(names.firstIndex(of: "expert_0/batch_normalization/gamma"))
        let second = try #require(names.firstIndex(of: "expert_0/batch_normalization_1/gamma"))
        #expect(first < second)
        // The .keras archive holds the same tensors.
        let archive = try KerasH5Reader.read(path: fixturesPath + "/keras3/deepctr_mmoe_dice/model.keras")
        #expect(archive.names == names)
    }

    @Test("TF checkpoints: training state is skipped with one note; Keras 3's are refused")
    func trainingState() throws {
        let folder = fixturesPath + "/keras/deepctr_esmm"
        let result = try ModelImporter.load(
            path: folder + "/tf_checkpoint_train/ckpt-1.index", conversionSpecPath: folder + "/conversion.json")
        let note = try #require(result.notes.first { $0.message.hasPrefix("training state:") })
        #expect(note.kind == .ignored && note.message.contains("optimizer variables"))
        // Keras 3 leaves a tf.train.Checkpoint(model=, optimizer=) without the model's weights.
        let keras3 = fixturesPath + "/keras3/deepctr_esmm"
        #expect {
            _ = try ModelImporter.load(path: keras3 + "/tf_checkpoint_train/ckpt-1.index", conversionSpecPath: keras3 + "/conversion.json")
        } throws: { error in
            guard case ImportError.mismatch(_, let reason) = error else { return false }
            return reason.contains("no model weights, only training state") && reason.contains(".weights.h5")
        }
        // tf.train.Checkpoint(model=) under Keras 3 lacks the DNN weights DeepCTR keeps in lists.
        let prelu = fixturesPath + "/keras3/deepctr_mmoe_bn_prelu"
        #expect {
            _ = try ModelImporter.load(path: prelu + "/tf_checkpoint/model.index", conversionSpecPath: prelu + "/conversion.json")
        } throws: { error in
            guard case ImportError.unsupported(_, let reason) = error else { return false }
            return reason.contains("written by Keras 3") && reason.contains("Python lists")
        }
    }
}

@Suite("TensorFlow checkpoints")
struct TFCheckpointTests {
    func damaged(_ change: (inout [UInt8]) -> Void) throws -> String {
        let source = fixturesPath + "/keras/deepctr_ple/tf_checkpoint/"
        let folder = try TemporaryFolder()
        var index = try Array(Data(contentsOf: URL(fileURLWithPath: source + "model.index")))
        change(&index)
        try Data(index).write(to: URL(fileURLWithPath: folder.file("model.index")))
        try FileManager.default.copyItem(atPath: source + "model.data-00000-of-00001", toPath: folder.file("model.data-00000-of-00001"))
        return folder.file("model.index")
    }

    @Test("damaged index files: bad block checksum, truncated footer, bad magic")
    func damagedIndex() throws {
        let flipped = try damaged { $0[10] ^= 0x40 }
        #expect { _ = try TFCheckpointReader.read(path: flipped) } throws: { error in
            if case ImportError.malformed(_, _, let reason) = error { return reason.contains("checksum") }
            return false
        }
        let truncated = try damaged { $0.removeLast(20) }
        #expect(throws: ImportError.self) { _ = try TFCheckpointReader.read(path: truncated) }
        let magic = try damaged { $0[$0.count - 1] ^= 0xFF }
        #expect(throws: ImportError.self) { _ = try TFCheckpointReader.read(path: magic) }
        for cut in stride(from: 0, to: 8249, by: 97) {
            let cutFile = try damaged { $0 = Array($0.prefix(cut)) }
            #expect(throws: ImportError.self, "cut \(cut)") { _ = try TFCheckpointReader.read(path: cutFile) }
        }
    }

    @Test("a checkpoint lacking weights the spec needs is refused, naming them")
    func missingWeights() throws {
        // The PLE fixture has no batch norms; a spec that says dnn_use_bn must not silently drop them.
        let folder = fixturesPath + "/keras/deepctr_ple"
        let temporary = try TemporaryFolder()
        defer { temporary.remove() }
        let spec = try conversionSpec(folder + "/conversion.json", settingArgs: ["dnn_use_bn": true], in: temporary)
        #expect {
            _ = try ModelImporter.load(path: folder + "/tf_checkpoint/model.index", conversionSpecPath: spec)
        } throws: { error in
            guard case ImportError.mismatch(_, let reason) = error else { return false }
            return reason.contains("BatchNormalization") && reason.contains("level_0_task_ctr_expert_specific_0")
        }
    }
}

@Suite("Damaged Keras files")
struct DamagedKerasTests {
    static let files: [String] = ((try? FileManager.default.contentsOfDirectory(atPath: fixturesPath + "/damaged/keras")) ?? []).filter {
        $0.hasSuffix(".h5")
    }.sorted()
    let conversion = fixturesPath + "/keras/deepctr_mmoe/conversion.json"

    @Test("each damaged Keras file is a typed error", arguments: files)
    func damaged(file: String) {
        #expect(throws: ImportError.self) {
            _ = try ModelImporter.load(path: fixturesPath + "/damaged/keras/" + file, format: .keras, conversionSpecPath: conversion)
        }
    }

    @Test("the damaged corpus is there")
    func present() { #expect(DamagedKerasTests.files.count >= 7) }

    @Test("fixed-length names that fill their size (no terminator) read correctly")
    func fixedStrings() throws {
        let result = try ModelImporter.load(path: fixturesPath + "/damaged/keras_fixed_strings.h5", conversionSpecPath: conversion)
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let folder = fixturesPath + "/keras/deepctr_mmoe"
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        for (name, want) in try PredictionFiles.readExpected(folder + "/outputs.npz") {
            let got = try #require(prediction[name])
            for i in want.indices { #expect(abs(got[i] - want[i]) <= 1e-5 + 1e-4 * abs(want[i])) }
        }
    }
}

/// A copy of a conversion spec with some `args` replaced, written into `folder`.
func conversionSpec(_ path: String, settingArgs changes: [String: Any], in folder: TemporaryFolder) throws -> String {
    var conversion = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] ?? [:]
    var args = conversion["args"] as? [String: Any] ?? [:]
    for (key, value) in changes { args[key] = value }
    conversion["args"] = args
    let target = folder.file("conversion-\(UUID().uuidString).json")
    try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: target))
    return target
}
