import Foundation
import MMoECore
import MMoETestSupport
import Testing

@Suite("Model spec")
struct SpecTests {
    @Test("every sample survives a JSON round trip unchanged", arguments: SampleSpecs.all.map(\.name))
    func roundTrip(sample: String) throws {
        let spec = try #require(SampleSpecs.all.first { $0.name == sample }?.spec)
        let json = spec.encodedJSON()
        let decoded = try ModelSpec.decode(json: json)
        #expect(decoded == spec)
        #expect(decoded.encodedJSON() == json)
    }

    @Test("a malformed document names the JSON path")
    func malformed() throws {
        var text = String(decoding: SampleSpecs.mmoe.encodedJSON(), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"type\":\"relu\"", with: "\"type\":\"swish9\"")
        #expect {
            _ = try ModelSpec.decode(json: Array(text.utf8))
        } throws: { error in
            guard case ModelError.malformedSpec(let reason) = error else { return false }
            return reason.contains("architecture.experts[0].layers") && reason.contains("swish9")
        }
        #expect(throws: ModelError.self) { _ = try ModelSpec.decode(json: Array("{\"format\":".utf8)) }
    }

    @Test("a future spec version is refused")
    func futureVersion() throws {
        var text = String(decoding: SampleSpecs.esmm.encodedJSON(), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"version\":1", with: "\"version\":7")
        #expect(throws: ModelError.unsupportedSpecVersion(format: "mmoe-spec", version: 7)) {
            _ = try ModelSpec.decode(json: Array(text.utf8))
        }
    }

    @Test("structural errors name the place")
    func structure() {
        var spec = SampleSpecs.mmoe
        spec.architecture.gates?[0].layers[0] = .linear(units: 4, bias: true)
        #expect(throws: ModelError.invalidSpec(path: "architecture.gates[0]", reason: "the gate outputs 4 values but mixes 3 experts")) {
            _ = try spec.validateStructure()
        }
        spec = SampleSpecs.mmoe
        spec.concat.removeLast()
        #expect(throws: ModelError.invalidSpec(path: "concat", reason: "feature \"context\" is not in the concatenation order")) {
            _ = try spec.validateStructure()
        }
        spec = SampleSpecs.mmoe
        spec.tables[0].name = "us.er"
        #expect(throws: ModelError.self) { _ = try spec.validateStructure() }
        spec = SampleSpecs.mmoe
        spec.architecture.towers.removeLast()
        #expect(throws: ModelError.self) { _ = try spec.validateStructure() }
        spec = SampleSpecs.ple
        spec.architecture.levels?[0].sharedGate = nil
        #expect(
            throws: ModelError.invalidSpec(
                path: "architecture.levels[0].shared_gate", reason: "every level but the last needs a shared gate")
        ) {
            _ = try spec.validateStructure()
        }
        spec = SampleSpecs.omoe
        spec.tasks[0].head = .sigmoid  // its tower outputs 2 values
        #expect(throws: ModelError.self) { _ = try spec.validateStructure() }
        spec = SampleSpecs.esmm
        spec.outputs?[2].product = ["ctr", "nope"]
        #expect(throws: ModelError.invalidSpec(path: "outputs[2].product", reason: "unknown task \"nope\"")) {
            _ = try spec.validateStructure()
        }
        spec = SampleSpecs.sharedBottom
        spec.features[0].width = 0
        #expect(throws: ModelError.self) { _ = try spec.validateStructure() }
    }

    @Test("softmax heads: widths, class outputs and products are checked")
    func softmaxOutputs() throws {
        let layout = try SampleSpecs.omoe.validateStructure()
        #expect(layout.outputWidths == [1, 4, 1, 1, 1, 1])
        func refusal(_ edit: (inout ModelSpec) -> Void) -> ModelError? {
            var spec = SampleSpecs.omoe
            edit(&spec)
            do {
                _ = try spec.validateStructure()
                return nil
            } catch { return error }
        }
        #expect(
            refusal { $0.outputs?[4].classIndex = 4 }
                == .invalidSpec(path: "outputs[4].class", reason: "class 4 is outside 0..<4 of task \"genre\""))
        #expect(
            refusal { $0.outputs?[4].task = "like" }
                == .invalidSpec(path: "outputs[4].task", reason: "task \"like\" has one value per example; only a softmax task has classes")
        )
        #expect(
            refusal { $0.outputs?[4].classIndex = nil }
                == .invalidSpec(path: "outputs[4].class", reason: "a class output needs the class index"))
        #expect(
            refusal { $0.outputs?[2].product = ["like", "genre"] }
                == .invalidSpec(
                    path: "outputs[2].product",
                    reason:
                        "\"genre\" has 4 values per example; a product multiplies one-value outputs (pick a class with \"task\" "
                        + "and \"class\")"
                ))
        #expect(refusal { $0.outputs?[4].name = "like" } != nil)
        #expect(
            refusal { $0.outputs?[2].task = "genre" }
                == .invalidSpec(path: "outputs[2]", reason: "an output is either a product or a class of a task, not both"))
        #expect(
            refusal { $0.tasks[2].predictionBias = true }
                == .invalidSpec(path: "tasks[2]", reason: "a softmax head takes no prediction bias"))
        #expect(
            refusal { $0.architecture.towers[2].layers[$0.architecture.towers[2].layers.count - 1] = .linear(units: 1, bias: true) }
                == .invalidSpec(
                    path: "architecture.towers[2]", reason: "the tower outputs 1 value; a softmax head needs one per class (at least 2)"))
        // Fusions: one-value outputs defined before them, finite weights, ordered clips.
        #expect(layout.outputWidths.count == 6)
        #expect(
            refusal { $0.outputs?[5].fusion?.terms[0].output = "genre" }
                == .invalidSpec(
                    path: "outputs[5].fusion.terms[0].output",
                    reason: "\"genre\" has 4 values per example; a fusion combines one-value outputs"))
        #expect(
            refusal { $0.outputs?[5].fusion?.terms[0].output = "score" }
                == .invalidSpec(
                    path: "outputs[5].fusion.terms[0].output",
                    reason: "unknown output \"score\" (a term names a task or an output listed before the fusion)"))
        #expect(
            refusal { $0.outputs?[5].fusion?.terms[1].min = 0.5 }
                == .invalidSpec(path: "outputs[5].fusion.terms[1]", reason: "min 0.5 is above max 0.3"))
        #expect(
            refusal { $0.outputs?[5].fusion?.terms[0].weight = .nan }
                == .invalidSpec(path: "outputs[5].fusion.terms[0].weight", reason: "must be finite"))
        #expect(
            refusal { $0.outputs?[5].fusion?.terms = [] }
                == .invalidSpec(path: "outputs[5].fusion.terms", reason: "a fusion needs at least one term"))
        // The class index is stored as "class" in the spec JSON.
        let json = String(decoding: try JSONEncoder().encode(SampleSpecs.omoe.outputs?[4]), as: UTF8.self)
        #expect(json.contains("\"class\":2"))
    }

    @Test("tensor validation names the tensor and both shapes")
    func tensorValidation() throws {
        let spec = SampleSpecs.mmoe
        var tensors = try randomTensors(for: spec, seed: 1)
        try spec.validate(tensors: tensors)

        var broken = tensors
        broken.set(try Tensor(float32: [Float](repeating: 0, count: 8 * 20), shape: [8, 20]), named: "experts.1.layers.0.weight")
        #expect(throws: ModelError.shapeMismatch(tensor: "experts.1.layers.0.weight", expected: [8, 32], actual: [8, 20])) {
            try spec.validate(tensors: broken)
        }
        broken = tensors
        broken.remove(named: "gates.0.layers.1.running_var")
        #expect(throws: ModelError.missingTensor(name: "gates.0.layers.1.running_var", expectedShape: [3])) {
            try spec.validate(tensors: broken)
        }
        broken = tensors
        broken.set(try Tensor(float32: [1], shape: [1]), named: "experts.0.layers.9.weight")
        #expect(throws: ModelError.unexpectedTensor(name: "experts.0.layers.9.weight")) { try spec.validate(tensors: broken) }
        broken = tensors
        let weight = try #require(tensors["towers.0.layers.0.weight"])
        broken.set(
            try Tensor(dtype: .i8, shape: weight.shape, bytes: [UInt8](repeating: 1, count: weight.elementCount)),
            named: "towers.0.layers.0.weight")
        #expect(throws: ModelError.dtypeMismatch(tensor: "towers.0.layers.0.weight", allowed: [.f32, .f16, .bf16], actual: .i8)) {
            try spec.validate(tensors: broken)
        }
        // An i8 table needs its scales.
        let quantized = try randomTensors(for: spec, seed: 1, embeddingDType: .i8)
        try spec.validate(tensors: quantized)
        broken = quantized
        broken.remove(named: "embeddings.user.scale")
        #expect(throws: ModelError.missingTensor(name: "embeddings.user.scale", expectedShape: [11])) {
            try spec.validate(tensors: broken)
        }
        // Duplicate names are refused by the store.
        #expect(throws: ModelError.duplicateTensor(name: "embeddings.user.weight")) {
            try tensors.insert(try Tensor(float32: [0], shape: [1]), named: "embeddings.user.weight")
        }
    }

    @Test("tensors cannot point outside their storage")
    func tensorBounds() {
        let storage = ByteStorage(copying: [UInt8](repeating: 0, count: 16))
        #expect(throws: ModelError.self) { _ = try Tensor(dtype: .f32, shape: [5], storage: storage) }
        #expect(throws: ModelError.self) { _ = try Tensor(dtype: .f32, shape: [2], storage: storage, byteOffset: 12) }
        #expect(throws: ModelError.self) { _ = try Tensor(dtype: .f32, shape: [Int.max, 4], storage: storage) }
        #expect(throws: ModelError.self) { _ = try Tensor(dtype: .f32, shape: [-1], storage: storage) }
    }
}

@Suite("Numeric formats")
struct NumericTests {
    @Test("every finite half value survives half -> float -> half")
    func halfRoundTrip() {
        for bits in UInt16.min...UInt16.max {
            let value = HalfPrecision.float(fromHalf: bits)
            if value.isNaN { #expect(HalfPrecision.half(from: value) & 0x7C00 == 0x7C00); continue }
            #expect(HalfPrecision.half(from: value) == bits, "bits \(bits)")
        }
    }

    @Test("half and bfloat16 rounding")
    func rounding() {
        #expect(HalfPrecision.half(from: 1.0) == 0x3C00)
        #expect(HalfPrecision.half(from: 65520) == 0x7C00)  // rounds to infinity
        #expect(HalfPrecision.half(from: 1.0 + 1.0 / 2048) == 0x3C00)  // tie to even
        #expect(HalfPrecision.half(from: 5.96e-8) == 0x0001)  // smallest subnormal
        #expect(HalfPrecision.bfloat16(from: 1.0) == 0x3F80)
        #expect(HalfPrecision.bfloat16(from: Float(bitPattern: 0x3F80_8000)) == 0x3F80)  // tie to even
        #expect(HalfPrecision.bfloat16(from: Float(bitPattern: 0x3F81_8000)) == 0x3F82)
        #expect(HalfPrecision.float(fromBFloat16: 0xC040) == -3)
    }

    @Test("CRC-32C check values")
    func crc() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        var split = CRC32C()
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        bytes[0..<333].withUnsafeBytes { split.update($0) }
        bytes[333...].withUnsafeBytes { split.update($0) }
        #expect(split.value == CRC32C.checksum(bytes))
    }
}
