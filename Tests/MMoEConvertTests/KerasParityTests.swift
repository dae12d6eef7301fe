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
    static let fixtures: [String] = {
        var all: [String] = []
        for (folder, file) in [("keras", "model.h5"), ("keras3", "model.weights.h5")] {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: fixturesPath + "/" + folder)) ?? []).filter { !$0.hasPrefix(".") }
            all += names.sorted().map { "\(folder)/\($0)/\(file)" }
        }
        return all + ["keras3/deepctr_mmoe/model.keras"]
    }()

    @Test("every DeepCTR model family is present")
    func present() {
        for expected in ["deepctr_mmoe", "deepctr_mmoe_bn_prelu", "deepctr_mmoe_dice", "deepctr_ple", "deepctr_esmm", "deepctr_sharedbottom", "keras_mmoe_census"] {
            #expect(KerasParityTests.fixtures.contains("keras/\(expected)/model.h5"), "Keras 2 fixture \(expected)")
        }
        for expected in ["deepctr_mmoe", "deepctr_ple", "deepctr_esmm", "keras_mmoe_census"] {
            #expect(KerasParityTests.fixtures.contains("keras3/\(expected)/model.weights.h5"), "Keras 3 fixture \(expected)")
        }
    }

    @Test("converted Keras 2 .h5 and Keras 3 .weights.h5 reproduce DeepCTR's outputs", arguments: fixtures)
    func parity(fixture: String) throws {
        let file = fixturesPath + "/" + fixture
        let folder = (file as NSString).deletingLastPathComponent
        #expect(try SourceFormat.detect(path: file) == .keras)
        let result = try ModelImporter.load(path: file, conversionSpecPath: folder + "/conversion.json")
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        let expected = try PredictionFiles.readExpected(folder + "/outputs.npz")
        #expect(Set(prediction.outputNames) == Set(expected.keys))
        for (name, want) in expected {
            let got = try #require(prediction[name])
            #expect(got.count == want.count)
            for i in 0..<min(got.count, want.count) {
                #expect(abs(got[i] - want[i]) <= 1e-5 + 1e-4 * abs(want[i]), "\(fixture) \(name)[\(i)]: swift \(got[i]) vs DeepCTR \(want[i])")
            }
        }
    }

    @Test("Keras-specific conventions are applied")
    func conventions() throws {
        let folder = fixturesPath + "/keras/deepctr_mmoe_dice"
        let result = try ModelImporter.load(path: folder + "/model.h5", conversionSpecPath: folder + "/conversion.json")
        let layers = result.spec.architecture.experts?.first?.layers ?? []
        #expect(layers.contains(.dice(variant: .deepctr, eps: 1e-9)))
        let bn = try ModelImporter.load(path: fixturesPath + "/keras/deepctr_mmoe_bn_prelu/model.h5", conversionSpecPath: fixturesPath + "/keras/deepctr_mmoe_bn_prelu/conversion.json")
        #expect(bn.spec.architecture.experts?.first?.layers.contains(.batchNorm(eps: 1e-3, affine: true)) == true)
        #expect(bn.spec.architecture.experts?.first?.layers.contains(.prelu(channels: 16)) == true)
        // The shared table is stored by the sequence feature that names it last.
        #expect(result.spec.tables.map(\.name).contains("sparse_seq_emb_hist"))
    }

    @Test("a Keras 3 file cannot hold DeepCTR's list-held layers: refused with a precise message")
    func keras3MissingWeights() throws {
        let folder = fixturesPath + "/keras3/deepctr_mmoe"
        var conversion = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/conversion.json"))) as? [String: Any] ?? [:]
        var args = conversion["args"] as? [String: Any] ?? [:]
        args["dnn_use_bn"] = true
        conversion["args"] = args
        let temporary = try TemporaryFolder()
        defer { temporary.remove() }
        let spec = temporary.file("bn.json")
        try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: spec))
        #expect {
            _ = try ModelImporter.load(path: folder + "/model.weights.h5", conversionSpecPath: spec)
        } throws: { error in
            guard case ImportError.unsupported(_, let reason) = error else { return false }
            return reason.contains("Python lists") && reason.contains("TF_USE_LEGACY_KERAS")
        }
    }
}
