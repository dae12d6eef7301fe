import Foundation
import MMoECore
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

@Suite("ONNX exports")
struct OnnxTests {
    static let dynamo = ["deepctr_torch_mmoe", "deepctr_torch_ple", "deepctr_torch_esmm", "deepctr_torch_sharedbottom"]

    @Test("a dynamo-exported DeepCTR-Torch model (BN folded, external data) reproduces PyTorch", arguments: dynamo)
    func parity(fixture: String) throws {
        let folder = fixturesPath + "/torch/" + fixture
        let result = try ModelImporter.load(path: folder + "/model.dynamo.onnx", conversionSpecPath: folder + "/conversion.json")
        #expect(result.source == .onnx)
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        for (name, want) in try PredictionFiles.readExpected(folder + "/outputs.npz") {
            let got = try #require(prediction[name])
            for i in want.indices { #expect(abs(got[i] - want[i]) <= 1e-5 + 1e-4 * abs(want[i]), "\(fixture) \(name)[\(i)]") }
        }
    }

    @Test("hostile and damaged ONNX files are refused")
    func hostile() throws {
        let folder = fixturesPath + "/hostile/"
        let spec = fixturesPath + "/torch/deepctr_torch_mmoe/conversion.json"
        func reason(_ file: String) -> String? {
            do {
                _ = try ModelImporter.load(path: folder + file, format: .onnx, conversionSpecPath: spec)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(reason("onnx_external_parent.onnx")?.contains("leaves the model's folder") == true)
        #expect(reason("onnx_external_absolute.onnx")?.contains("leaves the model's folder") == true)
        let foreign = reason("onnx_foreign_operator.onnx")
        #expect(foreign?.contains("smuggled_lstm") == true && foreign?.contains("LSTM") == true)
        #expect(reason("onnx_truncated.onnx") != nil)
    }

    @Test("a legacy export whose bias-less weights lost their names is refused, naming the missing tensor")
    func legacyNames() {
        let folder = fixturesPath + "/torch/deepctr_torch_mmoe"
        #expect {
            _ = try ModelImporter.load(path: folder + "/model.legacy.onnx", conversionSpecPath: folder + "/conversion.json")
        } throws: { error in
            guard case ImportError.mismatch(_, let reason) = error else { return false }
            return reason.contains("gate_dnn_final_layer.0.weight")
        }
    }
}
