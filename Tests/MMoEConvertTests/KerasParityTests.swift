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
        let folder = fixturesPath + "/keras"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }()

    @Test("every DeepCTR model family is present")
    func present() {
        for expected in ["deepctr_mmoe", "deepctr_mmoe_bn_prelu", "deepctr_mmoe_dice", "deepctr_ple", "deepctr_esmm", "deepctr_sharedbottom"] {
            #expect(KerasParityTests.fixtures.contains(expected), "fixture \(expected)")
        }
    }

    @Test("converted Keras .h5 reproduces DeepCTR's outputs", arguments: fixtures)
    func parity(fixture: String) throws {
        let folder = fixturesPath + "/keras/" + fixture
        #expect(try SourceFormat.detect(path: folder + "/model.h5") == .keras)
        let result = try ModelImporter.load(path: folder + "/model.h5", conversionSpecPath: folder + "/conversion.json")
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
}
