import Foundation
import MMoECore
import MMoERuntime
import MMoETestSupport
import Testing

/// |optimized − reference| ≤ tolerance · max(1, |reference|) for every output and gate weight
/// (float32 arithmetic against the reference's float64).
func expectClose(
    _ prediction: Prediction, _ reference: (outputs: [String: [Double]], gates: [String: [[Double]]]), rows: Int, tolerance: Double = 1e-6
) {
    for name in prediction.outputNames {
        let got = prediction[name] ?? []
        let want = reference.outputs[name] ?? []
        let width = prediction.widths[name] ?? 0
        #expect(prediction.shape(of: name) == (width == 1 ? [rows] : [rows, width]))
        #expect(got.count == rows * width && want.count == rows * width, "output \(name)")
        for r in 0..<min(got.count, want.count) {
            let error = abs(Double(got[r]) - want[r])
            #expect(error <= tolerance * max(1, abs(want[r])), "output \(name) row \(r): \(got[r]) vs \(want[r])")
        }
    }
    for gate in prediction.gates {
        let want = reference.gates[gate.name] ?? []
        #expect(want.count == rows, "gate \(gate.name)")
        for r in 0..<min(rows, want.count) {
            for e in 0..<gate.experts {
                let error = abs(Double(gate.weights[r * gate.experts + e]) - want[r][e])
                #expect(error <= tolerance, "gate \(gate.name) row \(r) expert \(e)")
            }
        }
    }
}

@Suite("Runtime against the naive reference evaluator")
struct ReferenceParityTests {
    static let samples = SampleSpecs.all.map(\.name)

    @Test("optimized plan equals the reference", arguments: samples)
    func parity(sample: String) throws {
        let spec = try #require(SampleSpecs.all.first { $0.name == sample }?.spec)
        let tensors = try randomTensors(for: spec, seed: 42)
        let model = try Model(spec: spec, tensors: tensors)
        for rows in [1, 7, 33] {
            let batch = randomBatch(for: spec, rows: rows, seed: UInt64(rows))
            let prediction = try model.predict(batch, options: PredictOptions(includeGates: true))
            let reference = ReferenceEvaluator(spec: spec, tensors: tensors).predict(batch, rows: rows)
            expectClose(prediction, reference, rows: rows)
            #expect(prediction.outputNames == spec.resolvedOutputs.map(\.name))
        }
    }

    @Test("embedding tables in every dtype", arguments: [DType.f16, .bf16, .i8])
    func embeddingDTypes(dtype: DType) throws {
        let spec = SampleSpecs.mmoe
        let tensors = try randomTensors(for: spec, seed: 7, embeddingDType: dtype)
        #expect(tensors[TensorNames.embedding("item")]?.dtype == dtype)
        let model = try Model(spec: spec, tensors: tensors)
        let batch = randomBatch(for: spec, rows: 9, seed: 3)
        let reference = ReferenceEvaluator(spec: spec, tensors: tensors).predict(batch, rows: 9)
        expectClose(try model.predict(batch, options: PredictOptions(includeGates: true)), reference, rows: 9)
    }

    @Test("batches larger than one chunk run in chunks")
    func chunking() throws {
        let spec = SampleSpecs.ple
        let tensors = try randomTensors(for: spec, seed: 5)
        let model = try Model(spec: spec, tensors: tensors)
        let rows = Model.chunkRows + 5
        let batch = randomBatch(for: spec, rows: rows, seed: 11)
        let whole = try model.predict(batch)
        // The last 5 rows alone must match the tail of the whole batch.
        var tail: [String: FeatureArray] = [:]
        for (name, array) in batch {
            let width = array.shape.dropFirst().reduce(1, *)
            var shape = array.shape
            shape[0] = 5
            switch array.values {
            case .float32(let v): tail[name] = FeatureArray(values: .float32(Array(v[((rows - 5) * width)...])), shape: shape)
            case .int64(let v): tail[name] = FeatureArray(values: .int64(Array(v[((rows - 5) * width)...])), shape: shape)
            case .strings(let v): tail[name] = FeatureArray(values: .strings(Array(v[((rows - 5) * width)...])), shape: shape)
            }
        }
        let part = try model.predict(tail)
        for name in whole.outputNames {
            #expect(Array(whole[name]?.suffix(5) ?? []) == part[name])
        }
    }

    @Test("fusion: first layers of all experts and gates are one matrix multiply")
    func fusion() throws {
        let spec = SampleSpecs.mmoe
        let model = try Model(spec: spec, tensors: try randomTensors(for: spec, seed: 1))
        // 1 fused (3 experts + 2 gates) + 3 second expert layers + 1 gate second layer
        // + 2 towers x 2 layers.
        #expect(model.matrixMultiplyCount == 1 + 3 + 1 + 4)
    }

    @Test("8 threads predicting on one model get identical results")
    func concurrency() async throws {
        let spec = SampleSpecs.ple
        let model = try Model(spec: spec, tensors: try randomTensors(for: spec, seed: 9))
        let batches = (0..<8).map { randomBatch(for: spec, rows: 50 + $0 * 37, seed: UInt64($0)) }
        let serial = try batches.map { try model.predict($0, options: PredictOptions(includeGates: true)) }
        let concurrent = try await withThrowingTaskGroup(of: (Int, [Prediction]).self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var results: [Prediction] = []
                    for round in 0..<10 {
                        let index = (worker + round) % batches.count
                        results.append(try model.predict(batches[index], options: PredictOptions(includeGates: true)))
                    }
                    return (worker, results)
                }
            }
            var all: [(Int, [Prediction])] = []
            for try await result in group { all.append(result) }
            return all
        }
        #expect(concurrent.count == 8)
        for (worker, results) in concurrent {
            for (round, result) in results.enumerated() {
                #expect(result == serial[(worker + round) % batches.count])
            }
        }
    }
}

@Suite("Matrix multiply blocking")
struct BlockingTests {
    @Test("inputs wider than one k block and batches taller than one row block")
    func wide() throws {
        let spec = ModelSpec(
            name: "wide", tables: [], features: [.dense("x", width: 700)],
            architecture: Architecture(
                type: .mmoe,
                experts: [
                    MLP(layers: [.linear(units: 37, bias: true), .relu, .linear(units: 21, bias: false), .relu]),
                    MLP(layers: [.linear(units: 37, bias: true), .relu, .linear(units: 21, bias: true), .tanh]),
                ],
                gates: [MLP(layers: [.linear(units: 2, bias: true)])],
                towers: [MLP(layers: [.linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y", head: .identity)])
        let tensors = try randomTensors(for: spec, seed: 12)
        try expectMatchesReference(spec, tensors, rows: [1, 2, 5, 6, 7, 131, 300], seed: 0)
        // The same with bf16 weights, widened as the packed fp32 kernels load them: the one-row
        // and six-row bfloat16 tiles over k blocks that add to the partial sums already stored.
        for path in [KernelPath.avx2, .avx512] where path.isSupported {
            try expectMatchesReference(spec, try withBF16Weights(tensors), rows: [1, 2, 5, 6, 7, 131, 300], seed: 1, kernel: path)
        }
    }

    /// The compiled model against the reference evaluator for each batch size in `rows`.
    func expectMatchesReference(
        _ spec: ModelSpec, _ tensors: TensorStore, rows: [Int], seed: UInt64, kernel: KernelPath = KernelPath.processDefault
    ) throws {
        let model = try Model(spec: spec, tensors: tensors, kernel: kernel)
        for count in rows {
            let batch = randomBatch(for: spec, rows: count, seed: UInt64(count) + seed)
            let reference = ReferenceEvaluator(spec: spec, tensors: tensors).predict(batch, rows: count)
            expectClose(try model.predict(batch, options: PredictOptions(includeGates: true)), reference, rows: count)
        }
    }

    @Test("bf16 weights: kept bf16 in the panels without batch norm, widened when one is folded")
    func bf16Weights() throws {
        let dense = ModelSpec(
            name: "bf16", tables: [], features: [.dense("x", width: 45)],
            architecture: Architecture(
                type: .mmoe,
                experts: [
                    MLP(layers: [.linear(units: 37, bias: true), .relu, .linear(units: 32, bias: false), .relu]),
                    MLP(layers: [
                        .linear(units: 37, bias: false), .batchNorm(eps: 1e-3, affine: true), .relu, .linear(units: 32, bias: true),
                    ]),
                ],
                gates: [MLP(layers: [.linear(units: 2, bias: true)])],
                towers: [MLP(layers: [.linear(units: 16, bias: true), .relu, .linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y", head: .identity)])
        var tensors = try randomTensors(for: dense, seed: 33)
        for name in tensors.names where name.hasSuffix("weight") && !name.contains("norm") {
            if let tensor = tensors[name], tensor.shape.count == 2 { tensors.set(try tensor.converted(to: .bf16), named: name) }
        }
        #expect(tensors["experts.0.layers.0.weight"]?.dtype == .bf16)
        // float32 arithmetic over bf16 weights (bfloat16 products, `avx512bf16`, are checked in KernelPathTests).
        let kernel = KernelPath.processDefault == .avx512bf16 ? KernelPath.avx512 : KernelPath.processDefault
        try expectMatchesReference(dense, tensors, rows: [1, 2, 7, 300], seed: 200, kernel: kernel)
    }

    @Test("full 16-column panels with batch norms folded in, and k not a multiple of 8")
    func foldedPanels() throws {
        let spec = ModelSpec(
            name: "panels", tables: [], features: [.dense("x", width: 45)],
            architecture: Architecture(
                type: .mmoe,
                experts: [
                    MLP(layers: [
                        .linear(units: 48, bias: true), .batchNorm(eps: 1e-3, affine: true), .relu, .linear(units: 32, bias: false),
                        .batchNorm(eps: 1e-5, affine: false),
                    ]),
                    MLP(layers: [
                        .linear(units: 32, bias: false), .batchNorm(eps: 1e-3, affine: true), .batchNorm(eps: 1e-3, affine: true), .relu,
                        .linear(units: 32, bias: true),
                    ]),
                ],
                gates: [MLP(layers: [.linear(units: 2, bias: true)])],
                towers: [MLP(layers: [.linear(units: 16, bias: true), .relu, .linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y", head: .identity)])
        let tensors = try randomTensors(for: spec, seed: 21)
        try expectMatchesReference(spec, tensors, rows: [1, 7, 64], seed: 100)
    }
}
