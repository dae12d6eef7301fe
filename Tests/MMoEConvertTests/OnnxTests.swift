import Foundation
import MMoECore
import MMoEImport
import MMoERuntime
import MMoETestSupport
import Testing

/// Requires every output `ours` of `prediction` to match the framework's output `theirs`
/// within 1e-5 + 1e-4·|framework| (`names`: ours → theirs; by default the same names).
func expectParity(_ prediction: Prediction, _ expected: [String: [Float]], names: [String: String]? = nil, _ label: String) throws {
    let names = names ?? Dictionary(uniqueKeysWithValues: expected.keys.map { ($0, $0) })
    #expect(Set(prediction.outputNames) == Set(names.keys), "\(label): outputs")
    for (ours, theirs) in names {
        let got = try #require(prediction[ours])
        let want = try #require(expected[theirs])
        for i in want.indices { #expect(abs(got[i] - want[i]) <= 1e-5 + 1e-4 * abs(want[i]), "\(label) \(ours)[\(i)]") }
    }
}

/// A fixture's conversion spec as JSON (to edit it in a test).
func conversionJSON(_ folder: String) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/conversion.json"))) as? [String: Any])
}

@Suite("ONNX exports")
struct OnnxTests {
    /// Every exported model under fixtures/torch: (fixture, file). The stacked-parameter model
    /// is tested separately (its exports slice the stacked parameters into unnamed constants).
    static let exports: [(String, String)] = {
        let root = fixturesPath + "/torch"
        let fixtures = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).filter {
            !$0.hasPrefix(".") && $0 != "plain_stacked_mmoe"
        }.sorted()
        return fixtures.flatMap { fixture in
            (((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + fixture)) ?? []).filter { $0.hasSuffix(".onnx") }.sorted())
                .map { (fixture, $0) }
        }
    }()

    @Test("every framework is exported with both exporters at opsets 13, 17, 18 and 20, torch-rechub also with its helper")
    func present() {
        let byFixture = Dictionary(grouping: OnnxTests.exports, by: \.0).mapValues { Set($0.map(\.1)) }
        #expect(byFixture.count == 14)
        for (fixture, files) in byFixture {
            var expected: Set = ["model.legacy.onnx", "model.legacy13.onnx", "model.dynamo.onnx", "model.dynamo18.onnx"]
            if fixture.hasPrefix("rechub_") { expected.insert("model.rechub.onnx") }
            // PReLU fixtures: node metadata stripped, and slopes reached through Constant/Unsqueeze/Expand.
            if ["rechub_mmoe_prelu", "deepctr_torch_mmoe_prelu", "deepctr_torch_sharedbottom_prelu"].contains(fixture) {
                expected.formUnion(["model.stripped.onnx", "model.slopes.onnx"])
            }
            #expect(files == expected, "\(fixture)")
        }
    }

    @Test("an exported model reproduces PyTorch", arguments: exports)
    func parity(fixture: String, file: String) throws {
        let folder = fixturesPath + "/torch/" + fixture
        let result = try ModelImporter.load(path: folder + "/" + file, conversionSpecPath: folder + "/conversion.json")
        #expect(result.source == .onnx)
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        let expected = try PredictionFiles.readExpected(folder + "/outputs.npz")
        try expectParity(prediction, expected, "\(fixture)/\(file)")
    }

    /// torch-rechub exports: every file, converted without a conversion spec.
    static let rechubExports = exports.filter { $0.0.hasPrefix("rechub_") }

    @Test(
        "a torch-rechub export converts without a conversion spec: features, activations and heads from the graph", arguments: rechubExports
    )
    func withoutSpec(fixture: String, file: String) throws {
        let folder = fixturesPath + "/torch/" + fixture
        let result = try ModelImporter.load(path: folder + "/" + file)
        let model = try Model(spec: result.spec, tensors: result.tensors)
        // The graph names the features exactly as the conversion spec does.
        let stated = try #require(try conversionJSON(folder)["features"] as? [[String: Any]]).compactMap { $0["name"] as? String }
        #expect(Set(model.spec.features.map(\.name)) == Set(stated))
        #expect(result.notes.contains { $0.message.hasPrefix("features from the graph's inputs") })
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        let expected = try PredictionFiles.readExpected(folder + "/outputs.npz")
        // Task names are not in the graph: task0, task1 are the framework's outputs in order.
        let tasks = try conversionJSON(folder)["tasks"] as? [[String: Any]] ?? []
        var names: [String: String] = ["cvr": "cvr", "ctr": "ctr", "ctcvr": "ctcvr"]
        if fixture != "rechub_esmm" {
            names = [:]
            for (i, task) in tasks.enumerated() { names["task\(i)"] = try #require(task["name"] as? String) }
        }
        try expectParity(prediction, expected, names: names, "\(fixture)/\(file)")
    }

    /// DeepCTR-Torch exports: every file, converted without a conversion spec.
    static let deepctrExports = exports.filter { $0.0.hasPrefix("deepctr_torch_") }

    @Test(
        "a DeepCTR-Torch export converts without a conversion spec: features from the packed input's column slices",
        arguments: deepctrExports)
    func packedWithoutSpec(fixture: String, file: String) throws {
        let folder = fixturesPath + "/torch/" + fixture
        let result = try ModelImporter.load(path: folder + "/" + file)
        let model = try Model(spec: result.spec, tensors: result.tensors)
        // The fixture's features in column order, against the inferred ones: same kinds,
        // widths, lengths and poolings; the names come from the tables.
        let statedSpec = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: folder + "/conversion.json").spec
        let stated = statedSpec.features
        try #require(model.spec.features.count == stated.count)
        for (inferred, truth) in zip(model.spec.features, stated) {
            #expect(
                inferred.kind == truth.kind && inferred.width == truth.width && inferred.maxLength == truth.maxLength
                    && inferred.pooling == truth.pooling, "\(inferred.name) vs \(truth.name)")
        }
        let byName = try PredictionFiles.readInputs(folder + "/inputs.npz", spec: statedSpec)
        var inputs: [String: FeatureArray] = [:]
        for (inferred, truth) in zip(model.spec.features, stated) { inputs[inferred.name] = byName[truth.name] }
        let prediction = try model.predict(inputs)
        let expected = try PredictionFiles.readExpected(folder + "/outputs.npz")
        // Task names are not in the graph: task0 is the fixtures' first task (ctr), task1 the other.
        let second = try #require(expected.keys.first { $0 != "ctr" })
        let names = fixture == "deepctr_torch_esmm" ? ["ctr": "ctr", "ctcvr": "ctcvr"] : ["task0": "ctr", "task1": second]
        try expectParity(prediction, expected, names: names, "\(fixture)/\(file)")
    }

    @Test("a conversion spec whose task types contradict the graph's output sigmoids is refused")
    func headsAgainstGraph() throws {
        let folder = fixturesPath + "/torch/rechub_mmoe"
        var conversion = try conversionJSON(folder)
        conversion["tasks"] = [["name": "click", "type": "regression"], ["name": "watch", "type": "regression"]]
        let temporary = try TemporaryFolder()
        try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: temporary.file("swapped.json")))
        #expect {
            _ = try ModelImporter.load(path: folder + "/model.dynamo.onnx", conversionSpecPath: temporary.file("swapped.json"))
        } throws: { error in
            "\(error)".contains(
                "task 'click' is regression (no sigmoid) in the conversion spec, but the graph's output column 0 passes through a sigmoid")
        }
        // The .pt cannot show it: the same spec converts (to a different model).
        _ = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: temporary.file("swapped.json"))
    }

    @Test("the same model from .onnx and from .pt gives the same spec")
    func sameSpec() throws {
        for (fixture, file) in OnnxTests.exports {
            let folder = fixturesPath + "/torch/" + fixture
            let onnx = try ModelImporter.load(path: folder + "/" + file, conversionSpecPath: folder + "/conversion.json")
            let torch = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: folder + "/conversion.json")
            // Batch norms folded by the exporter are the only allowed difference (they shift
            // layer indices): the same tables and linear weights, the same features and tasks.
            func matrices(_ store: TensorStore) -> [[Int]] {
                store.names.compactMap { store[$0]?.shape }.filter { $0.count == 2 }.sorted { $0.lexicographicallyPrecedes($1) }
            }
            #expect(onnx.spec.features == torch.spec.features, "\(fixture)/\(file)")
            #expect(onnx.spec.tasks == torch.spec.tasks, "\(fixture)/\(file)")
            #expect(matrices(onnx.tensors) == matrices(torch.tensors), "\(fixture)/\(file)")
            #expect(onnx.tensors.count <= torch.tensors.count, "\(fixture)/\(file)")
        }
    }

    @Test("unnamed exporter constants are named after their modules, with notes")
    func recoveredNames() throws {
        let folder = fixturesPath + "/torch/deepctr_torch_mmoe_bn_prelu"
        let legacy = try OnnxReader.read(path: folder + "/model.legacy.onnx")
        #expect(legacy.0["gate_dnn_final_layer.0.weight"]?.shape == [3, 6])
        #expect(legacy.0["tower_dnn_final_layer.1.weight"]?.shape == [1, 8])
        #expect(legacy.0.names.contains { $0.hasPrefix("onnx::MatMul") } == false)
        #expect(legacy.1.contains { $0.message.contains("onnx::MatMul_342 → gate_dnn_final_layer.0.weight (transposed)") })
        let dynamo = try OnnxReader.read(path: folder + "/model.dynamo.onnx")
        #expect(dynamo.0["expert_dnn.0.activation_layers.0.weight"]?.shape == [1])
        #expect(dynamo.0["expert_dnn.0.bn.0.running_mean"] == nil)
        #expect(dynamo.1.contains { $0.message.contains("10 batch norms were folded") })
        // The transposed legacy constant holds the PyTorch weight.
        let torch = try TorchArchiveReader.read(path: folder + "/model.pt").checkpoint
        let want = try #require(torch["gate_dnn_final_layer.0.weight"])
        let got = try #require(legacy.0["gate_dnn_final_layer.0.weight"])
        #expect((0..<want.count).allSatisfy { got.value($0) == want.value($0) })
    }

    @Test("stacked parameters sliced into unnamed constants are refused by the .pt spec, and convert with a mapping on their ONNX names")
    func stacked() throws {
        let folder = fixturesPath + "/torch/plain_stacked_mmoe"
        #expect {
            _ = try ModelImporter.load(path: folder + "/model.legacy.onnx", conversionSpecPath: folder + "/conversion.json")
        } throws: { error in
            "\(error)".contains("'onnx::MatMul_48' [9, 4] is not part of the model")
        }
        #expect {
            _ = try ModelImporter.load(path: folder + "/model.dynamo.onnx", conversionSpecPath: folder + "/conversion.json")
        } throws: { error in
            "\(error)".contains("missing tensor 'gates.0.layers.0.weight'")
        }
        let (checkpoint, notes) = try OnnxReader.read(path: folder + "/model.legacy.onnx")
        #expect(checkpoint["onnx::MatMul_48"]?.shape == [9, 4])
        #expect(notes.contains { $0.message.contains("4 parameters have no name and no module") })

        // The user's way out: map the slices by their ONNX names (as `inspect --tensors` lists them).
        var conversion = try conversionJSON(folder)
        var mapping = try #require(conversion["mapping"] as? [[String: Any]]).filter { !(($0["from"] as? String) ?? "").contains("gate") }
        for (gate, (weight, bias)) in [("onnx::MatMul_48", "onnx::Add_49"), ("onnx::MatMul_50", "onnx::Add_51")].enumerated() {
            mapping.append(["from": "^\(weight)$", "to": "gates.\(gate).layers.0.weight", "transpose": true])
            mapping.append(["from": "^\(bias)$", "to": "gates.\(gate).layers.0.bias"])
        }
        conversion["mapping"] = mapping
        let temporary = try TemporaryFolder()
        try JSONSerialization.data(withJSONObject: conversion).write(to: URL(fileURLWithPath: temporary.file("onnx.json")))
        let result = try ModelImporter.load(path: folder + "/model.legacy.onnx", conversionSpecPath: temporary.file("onnx.json"))
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec))
        try expectParity(prediction, try PredictionFiles.readExpected(folder + "/outputs.npz"), "stacked legacy export")
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
        #expect(reason("onnx_truncated.onnx")?.contains("runs past the end") == true)
        #expect(reason("onnx_wire_type.onnx")?.contains("unsupported wire type 3 for field 7") == true)
        #expect(reason("onnx_length_past_end.onnx")?.contains("field 7 of 16777215 bytes runs past the end") == true)
        let pastEnd = reason("onnx_external_past_end.onnx")
        #expect(pastEnd?.contains("onnx_side.data") == true && pastEnd?.contains("lies outside the external data file") == true)
        #expect(reason("onnx_external_symlink.onnx")?.contains("'onnx_link.data' is a symbolic link") == true)
        #expect(reason("onnx_negative_dim.onnx")?.contains("negative dimension -3") == true)
        #expect(reason("onnx_raw_size_mismatch.onnx")?.contains("raw bytes, shape") == true)
        #expect(reason("onnx_no_inputs.onnx")?.contains("no inputs") == true)
        #expect(reason("onnx_duplicate_initializer.onnx")?.contains("is defined twice") == true)
        #expect(reason("onnx_huge_shape.onnx")?.contains("invalid shape") == true)
    }

    @Test("initializers in every typed field and Constant nodes are read; unnamed ones get their module's name and layout")
    func typedFields() throws {
        let (checkpoint, notes) = try OnnxReader.read(path: fixturesPath + "/misc/typed_fields.onnx")
        let expected = try NumpyArchive.read(path: fixturesPath + "/misc/typed_fields.npz")
        #expect(
            checkpoint["emb.weight"]?.dtype == .f16 && checkpoint["other.weight"]?.dtype == .bf16 && checkpoint["lin.bias"]?.dtype == .f64)
        for name in expected.keys.sorted() {
            let array = try #require(expected[name])
            let want = array.data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            let tensor = try #require(checkpoint[name], "\(name)")
            #expect(tensor.shape == array.shape, "\(name)")
            #expect((0..<want.count).allSatisfy { Float(tensor.value($0)) == want[$0] }, "\(name)")
        }
        #expect(checkpoint["onnx::MatMul_9"] == nil)
        #expect(checkpoint["shape"]?.dtype == .i64)
        #expect(notes.contains { $0.message.contains("onnx::MatMul_9 → head.weight (transposed)") })
    }

    @Test("a graph with more than 2^20 nodes is refused before it is walked")
    func nodeLimit() throws {
        // ModelProto.graph (field 7) holding 2^20 + 1 empty NodeProtos (field 1, length 0).
        let nodes = [UInt8](repeating: 0, count: 2 * ((1 << 20) + 1)).enumerated().map { $0.offset % 2 == 0 ? UInt8(0x0A) : 0 }
        var length = nodes.count
        var varint: [UInt8] = []
        while length >= 0x80 {
            varint.append(UInt8(length & 0x7F) | 0x80)
            length >>= 7
        }
        varint.append(UInt8(length))
        let folder = try TemporaryFolder()
        let path = folder.file("many.onnx")
        try Data([0x08, 0x08, 0x3A] + varint + nodes).write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try OnnxReader.read(path: path)
        } throws: { error in
            guard case ImportError.limitExceeded(_, let what, let limit) = error else { return false }
            return what == "ONNX nodes" && limit == 1 << 20
        }
    }

    @Test("every prefix of an ONNX model and every flipped byte of its header ends in a typed error or a model")
    func damagedSweep() throws {
        let source = fixturesPath + "/torch/deepctr_torch_esmm/model.legacy.onnx"
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: source)))
        let folder = try TemporaryFolder()
        var refused = 0
        for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 400)) {
            let path = folder.path + "/cut.onnx"
            try Data(bytes[..<cut]).write(to: URL(fileURLWithPath: path))
            do { _ = try OnnxReader.read(path: path) } catch { refused += 1 }
        }
        #expect(refused > 0)
        var flipped = 0
        for at in 0..<min(bytes.count, 2048) {
            var copy = bytes
            copy[at] ^= 0xA5
            let path = folder.path + "/flip.onnx"
            try Data(copy).write(to: URL(fileURLWithPath: path))
            do { _ = try OnnxReader.read(path: path) } catch { flipped += 1 }
        }
        #expect(flipped > 0)
    }
}
