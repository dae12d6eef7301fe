import Foundation
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

/// The conversion spec is read strictly: a key nothing reads is refused with its JSON path
/// and the nearest key read there; training-only constructor arguments are accepted with a note.
@Suite("Strict conversion specs")
struct ConversionSpecTests {
    /// Writes `fixture`'s conversion.json after `edit` to a temporary file.
    static func editedSpec(_ fixture: String, _ edit: (inout [String: Any]) -> Void) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/" + fixture + "/conversion.json"))
        var json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        edit(&json)
        let path = NSTemporaryDirectory() + "mmoe-spec-\(UUID().uuidString).json"
        try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func convert(_ fixture: String, spec: String) throws -> ImportResult {
        try ModelImporter.load(path: fixturesPath + "/" + fixture + "/model.pt", conversionSpecPath: spec)
    }

    static func message(_ body: () throws -> Void) -> String? {
        do { try body() } catch { return "\(error)" }
        return nil
    }

    @Test("a misspelt feature key is refused with its path and a did-you-mean")
    func misspeltFeatureKey() throws {
        let spec = try Self.editedSpec("torch/rechub_esmm") { json in
            var features = json["features"] as? [[String: Any]] ?? []
            let index = features.firstIndex { $0["pooling"] != nil } ?? 0
            features[index]["poolng"] = features[index].removeValue(forKey: "pooling")
            json["features"] = features
        }
        defer { try? FileManager.default.removeItem(atPath: spec) }
        let error = try #require(Self.message { _ = try Self.convert("torch/rechub_esmm", spec: spec) })
        #expect(error.contains("unknown key 'features["), "\(error)")
        #expect(error.contains("].poolng'"), "\(error)")
        #expect(error.contains("did you mean 'pooling'?"), "\(error)")
    }

    @Test("a misspelt constructor argument is refused; a misspelt root key too")
    func misspeltArgument() throws {
        let spec = try Self.editedSpec("torch/deepctr_torch_mmoe") { json in
            var args = json["args"] as? [String: Any] ?? [:]
            args["num_expert"] = args.removeValue(forKey: "num_experts")
            json["args"] = args
        }
        defer { try? FileManager.default.removeItem(atPath: spec) }
        let error = try #require(Self.message { _ = try Self.convert("torch/deepctr_torch_mmoe", spec: spec) })
        #expect(error.contains("unknown key 'args.num_expert'") && error.contains("did you mean 'num_experts'?"), "\(error)")

        let root = try Self.editedSpec("torch/rechub_mmoe") { json in json["featuers"] = [] as [Any] }
        defer { try? FileManager.default.removeItem(atPath: root) }
        let rootError = try #require(Self.message { _ = try Self.convert("torch/rechub_mmoe", spec: root) })
        #expect(rootError.contains("unknown key 'featuers'") && rootError.contains("did you mean 'features'?"), "\(rootError)")
    }

    @Test("training-only arguments are accepted and noted; counts that contradict the checkpoint are refused")
    func trainingOnlyArguments() throws {
        let spec = try Self.editedSpec("torch/deepctr_torch_ple") { json in
            var args = json["args"] as? [String: Any] ?? [:]
            args["dnn_dropout"] = 0.2
            args["l2_reg_dnn"] = 1e-5
            args["seed"] = 1024
            json["args"] = args
        }
        defer { try? FileManager.default.removeItem(atPath: spec) }
        let result = try Self.convert("torch/deepctr_torch_ple", spec: spec)
        let note = try #require(result.notes.first { $0.message.contains("training-only settings") })
        #expect(note.message.contains("args.dnn_dropout") && note.message.contains("args.seed") && !note.message.contains("task_names"))

        let levels = try Self.editedSpec("torch/deepctr_torch_ple") { json in
            var args = json["args"] as? [String: Any] ?? [:]
            args["num_levels"] = 3
            json["args"] = args
        }
        defer { try? FileManager.default.removeItem(atPath: levels) }
        let error = try #require(Self.message { _ = try Self.convert("torch/deepctr_torch_ple", spec: levels) })
        #expect(error.contains("num_levels is 3 in the conversion spec but the checkpoint has 2"), "\(error)")

        let bn = try Self.editedSpec("torch/deepctr_torch_mmoe") { json in
            var args = json["args"] as? [String: Any] ?? [:]
            args["dnn_use_bn"] = true
            json["args"] = args
        }
        defer { try? FileManager.default.removeItem(atPath: bn) }
        let bnError = try #require(Self.message { _ = try Self.convert("torch/deepctr_torch_mmoe", spec: bn) })
        #expect(bnError.contains("says dnn_use_bn but the checkpoint has no"), "\(bnError)")
    }
}

/// Native mappings reshape stacked parameters in any layout; a rule whose pieces do not have
/// the shape the spec needs is refused, naming the rule.
@Suite("Native mapping rules")
struct NativeMappingTests {
    static let folder = fixturesPath + "/torch/plain_keras_layout_mmoe"

    /// The fixture's spec with rule `index` of the mapping changed by `edit`.
    static func editedRule(_ index: Int, _ edit: @escaping (inout [String: Any]) -> Void) throws -> String {
        try ConversionSpecTests.editedSpec("torch/plain_keras_layout_mmoe") { json in
            var mapping = json["mapping"] as? [[String: Any]] ?? []
            edit(&mapping[index])
            json["mapping"] = mapping
        }
    }

    @Test("squeeze, permute, split on any axis, then transpose: the Keras layer layout converts with parity")
    func kerasLayout() throws {
        let result = try ModelImporter.load(path: Self.folder + "/model.safetensors", conversionSpecPath: Self.folder + "/conversion.json")
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(Self.folder + "/inputs.npz", spec: model.spec))
        try expectParity(prediction, try PredictionFiles.readExpected(Self.folder + "/outputs.npz"), "keras layout")
    }

    @Test("a split along the wrong axis that changes the pieces' shape is refused, naming the rule")
    func wrongAxis() throws {
        // expert_kernel [9, 4, 4] split along axis 0: nine [4, 4] pieces, transposed [4, 4]; the spec needs [4, 9].
        let spec = try Self.editedRule(2) { $0["split_axis"] = 0 }
        defer { try? FileManager.default.removeItem(atPath: spec) }
        let error = try #require(
            ConversionSpecTests.message { _ = try ModelImporter.load(path: Self.folder + "/model.pt", conversionSpecPath: spec) })
        #expect(
            error.contains(
                "mapping[2] ('^expert_kernel$') on 'expert_kernel' [9, 4, 4] gives 'experts.0.layers.0.weight' of shape [4, 4], "
                    + "the spec needs [4, 9]"
            ), "\(error)")
    }

    @Test("bad squeeze and permute values are refused, naming the rule")
    func badSteps() throws {
        let squeeze = try Self.editedRule(5) { $0["squeeze"] = [1] }
        defer { try? FileManager.default.removeItem(atPath: squeeze) }
        let squeezeError = try #require(
            ConversionSpecTests.message { _ = try ModelImporter.load(path: Self.folder + "/model.pt", conversionSpecPath: squeeze) })
        #expect(squeezeError.contains("mapping[5]") && squeezeError.contains("not of size 1"), "\(squeezeError)")
        let permute = try Self.editedRule(4) { $0["permute"] = [0, 0, 1] }
        defer { try? FileManager.default.removeItem(atPath: permute) }
        let permuteError = try #require(
            ConversionSpecTests.message { _ = try ModelImporter.load(path: Self.folder + "/model.pt", conversionSpecPath: permute) })
        #expect(permuteError.contains("mapping[4]") && permuteError.contains("is not an order of the 3 axes"), "\(permuteError)")
    }

    @Test("batch norms an exporter folded into the linears convert under a native spec")
    func foldedUnderNativeSpec() throws {
        let folder = fixturesPath + "/torch/plain_bn_mmoe"
        let result = try ModelImporter.load(path: folder + "/model.dynamo.onnx", conversionSpecPath: folder + "/conversion.json")
        #expect(result.notes.contains { $0.message.contains("6 batch norms of the spec are not in the graph") })
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        try expectParity(prediction, try PredictionFiles.readExpected(folder + "/outputs.npz"), "folded")
    }
}
