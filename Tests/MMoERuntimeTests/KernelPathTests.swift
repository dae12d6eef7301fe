import CMMoEKernels
import MMoECore
import MMoETestSupport
import Testing

@testable import MMoERuntime

/// Every matrix-multiply path this CPU supports against the naive reference evaluator, on
/// every sample architecture, on shapes that cross every blocking edge (rows below and above
/// the tile heights, k above one k block, partial panels, bf16 panels, folded batch norms).
/// Paths the CPU lacks are printed as skipped, never silently passed.
extension KernelPath {
    /// Whether this CPU runs the path; a path it lacks is printed as skipped, never passed silently.
    var runsHere: Bool {
        if !isSupported { print("kernel path \(self): SKIPPED, this CPU lacks it") }
        return isSupported
    }
}

@Suite("Every kernel path against the reference")
struct KernelPathTests {
    /// Two experts of 520 units over 600 inputs: the fused first layer (600 x 1,058 float32,
    /// 2.5 MB) is split over threads at batch 1 and packed by several threads at load.
    static let large = ModelSpec(
        name: "large", tables: [], features: [.dense("x", width: 600)],
        architecture: Architecture(
            type: .mmoe,
            experts: [MLP(layers: [.linear(units: 520, bias: true), .relu]), MLP(layers: [.linear(units: 520, bias: true), .relu])],
            gates: [MLP(layers: [.linear(units: 2, bias: true)])],
            towers: [MLP(layers: [.linear(units: 1, bias: true)])]),
        tasks: [TaskHead(name: "y", head: .identity)])

    static let rows = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 25, 97, 131, 300]

    static func check(_ spec: ModelSpec, _ tensors: TensorStore, path: KernelPath, rows: [Int], seed: UInt64, tolerance: Double = 4e-6)
        throws
    {
        let model = try Model(spec: spec, tensors: tensors, kernel: path)
        #expect(model.kernel == path)
        for count in rows {
            let batch = randomBatch(for: spec, rows: count, seed: UInt64(count) + seed)
            let reference = ReferenceEvaluator(spec: spec, tensors: tensors).predict(batch, rows: count)
            expectClose(try model.predict(batch, options: PredictOptions(includeGates: true)), reference, rows: count, tolerance: tolerance)
        }
    }

    @Test("each supported path matches the reference on every sample architecture", arguments: KernelPath.allCases)
    func samples(path: KernelPath) throws {
        guard path.runsHere else { return }
        print("kernel path \(path): tested")
        for sample in SampleSpecs.all {
            try Self.check(sample.spec, try randomTensors(for: sample.spec, seed: 42), path: path, rows: Self.rows, seed: 7)
        }
    }

    @Test("each supported path: wide inputs (several k blocks), partial panels, bf16 panels", arguments: KernelPath.allCases)
    func edges(path: KernelPath) throws {
        guard path.runsHere else { return }
        let wide = ModelSpec(
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
        try Self.check(wide, try randomTensors(for: wide, seed: 12), path: path, rows: Self.rows, seed: 1)

        // A first layer large enough that batches below 6 split its panels over threads.
        let large = Self.large
        #expect(600 * 2 * 528 * 4 >= Kernels.panelSplitMinimum)
        let largeTensors = try randomTensors(for: large, seed: 5)
        try Self.check(large, largeTensors, path: path, rows: [1, 2, 3, 5, 7], seed: 4)
        // The same in bfloat16 (half the bytes, still split): bf16 products on avx512bf16.
        let largeBF16 = try withBF16Weights(largeTensors)
        #expect(600 * 2 * 528 * 2 >= Kernels.panelSplitMinimum)
        try Self.check(large, largeBF16, path: path, rows: [1, 2, 3, 5, 7], seed: 6, tolerance: path == .avx512bf16 ? 3e-2 : 4e-6)

        // Experts' second layers large enough that a batch below 6 runs them side by side on the
        // threads (when there are two or more), each thread on the same experts every call.
        let sideBySide = ModelSpec(
            name: "side-by-side", tables: [], features: [.dense("x", width: 64)],
            architecture: Architecture(
                type: .mmoe,
                experts: (0..<4).map { _ in MLP(layers: [.linear(units: 200, bias: true), .relu, .linear(units: 200, bias: true), .relu]) },
                gates: [MLP(layers: [.linear(units: 4, bias: true)])],
                towers: [MLP(layers: [.linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y", head: .identity)])
        let sideTensors = try randomTensors(for: sideBySide, seed: 8)
        if path.isPacked {
            let model = try Model(spec: sideBySide, tensors: sideTensors, kernel: path)
            let runs = model.independentRuns.map { (members: $0.value.end - $0.key, bytes: $0.value.bytes) }
            let second = runs.first { $0.members == 4 }
            #expect(second != nil, "the four second layers form one run (runs: \(runs))")
            #expect(second?.bytes == 4 * 200 * 200 * 4)
            #expect(4 * 200 * 200 * 4 >= Model.independentRunMinimum)
        }
        try Self.check(sideBySide, sideTensors, path: path, rows: [1, 2, 3, 5, 7], seed: 9)

        let folded = ModelSpec(
            name: "bf16", tables: [], features: [.dense("x", width: 45)],
            architecture: Architecture(
                type: .mmoe,
                experts: [
                    MLP(layers: [.linear(units: 48, bias: true), .relu, .linear(units: 32, bias: false), .relu]),
                    MLP(layers: [
                        .linear(units: 48, bias: false), .batchNorm(eps: 1e-3, affine: true), .relu, .linear(units: 32, bias: true),
                    ]),
                ],
                gates: [MLP(layers: [.linear(units: 2, bias: true)])],
                towers: [MLP(layers: [.linear(units: 16, bias: true), .relu, .linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y", head: .identity)])
        let tensors = try randomTensors(for: folded, seed: 33)
        try Self.check(folded, tensors, path: path, rows: Self.rows, seed: 2)
        let bf16 = try withBF16Weights(tensors)
        // bf16 weights multiply in bfloat16 on avx512bf16 (activations rounded to 8 bits of mantissa).
        try Self.check(folded, bf16, path: path, rows: Self.rows, seed: 3, tolerance: path == .avx512bf16 ? 3e-2 : 4e-6)
    }

    @Test("bfloat16 products (avx512bf16): AMX tiles and VDPBF16PS rows within bf16 rounding of the reference, not the float32 results")
    func bf16Products() throws {
        guard KernelPath.avx512bf16.isSupported else {
            print("kernel path avx512bf16: SKIPPED, this CPU lacks AVX512-BF16")
            return
        }
        print("kernel path avx512bf16: tested, AMX \(KernelPath.hasAMX ? "available" : "not available")")
        for sample in SampleSpecs.all {
            var tensors = try randomTensors(for: sample.spec, seed: 8)
            for name in tensors.names where name.hasSuffix("weight") {
                if let tensor = tensors[name], tensor.shape.count == 2, !name.hasPrefix("embeddings.") {
                    tensors.set(try tensor.converted(to: .bf16), named: name)
                }
            }
            let products = try Model(spec: sample.spec, tensors: tensors, kernel: .avx512bf16)
            let widened = try Model(spec: sample.spec, tensors: tensors, kernel: .avx512)
            var differs = false
            // Rows below 16 run on VDPBF16PS (1 row, 8-row groups), 16 and more on AMX tiles where present.
            for rows in [1, 3, 9, 16, 33, 300] {
                let batch = randomBatch(for: sample.spec, rows: rows, seed: UInt64(rows))
                let reference = ReferenceEvaluator(spec: sample.spec, tensors: tensors).predict(batch, rows: rows)
                let got = try products.predict(batch, options: PredictOptions(includeGates: true))
                expectClose(got, reference, rows: rows, tolerance: 3e-2)
                let exact = try widened.predict(batch)
                differs = differs || got.outputNames.contains { got[$0] != exact[$0] }
            }
            #expect(differs, "\(sample.name): bfloat16 products should round differently from float32 ones")
        }
    }

    @Test("bfloat16 hand-off: layers read only by bfloat16 products write bfloat16, with the same predictions as float32 outputs")
    func bf16HandOff() throws {
        guard KernelPath.avx512bf16.isSupported else {
            print("kernel path avx512bf16 (bfloat16 hand-off): SKIPPED, this CPU lacks AVX512-BF16")
            return
        }
        func expert(_ first: Int, _ activation: Layer) -> MLP {
            MLP(layers: [.linear(units: first, bias: true), activation, .linear(units: 32, bias: true), .relu])
        }
        // First layer columns: expert 0 at panels 0-3 (read by a 64-wide bfloat16 product: hand-off),
        // expert 1 at 4-7 (tanh runs on the float32 output), expert 2 at 8-11 (its bfloat16 panels
        // would land in expert 1's float32 bytes), expert 3 at 12-14 (48 wide, not a multiple of
        // 32), then the gates (softmax).
        let spec = ModelSpec(
            name: "handoff", tables: [], features: [.dense("x", width: 100)],
            architecture: Architecture(
                type: .mmoe,
                experts: [expert(64, .relu), expert(64, .tanh), expert(64, .relu), expert(48, .relu)],
                gates: [MLP(layers: [.linear(units: 4, bias: true)]), MLP(layers: [.linear(units: 4, bias: false)])],
                towers: [
                    MLP(layers: [.linear(units: 32, bias: true), .relu, .linear(units: 1, bias: true)]),
                    MLP(layers: [
                        .linear(units: 64, bias: true), .relu, .linear(units: 32, bias: false), .relu, .linear(units: 1, bias: true),
                    ]),
                ]),
            tasks: [TaskHead(name: "a", head: .sigmoid), TaskHead(name: "b", head: .identity)])
        let tensors = try withBF16Weights(try randomTensors(for: spec, seed: 21))
        let handOff = try Model(spec: spec, tensors: tensors, kernel: .avx512bf16, bf16HandOff: true)
        let float32 = try Model(spec: spec, tensors: tensors, kernel: .avx512bf16, bf16HandOff: false)
        let gemms = handOff.steps.compactMap { step -> GemmStep? in if case .gemm(let gemm) = step { gemm } else { nil } }
        #expect(gemms.allSatisfy { $0.vnni })
        let first = try #require(gemms.first)
        #expect(first.outputBF16 == (0..<17).map { $0 < 4 ? 1 : 0 }, "first layer: only expert 0's panels")
        // Read as bfloat16: expert 0's second layer, the first tower's second layer (32 wide), the
        // second tower's second (64) and third (32) layers.
        #expect(gemms.filter { $0.inputBF16Origin != nil }.count == 4)
        #expect(gemms.filter { !$0.outputBF16.isEmpty }.count == 4)
        let plain = float32.steps.contains { step in
            if case .gemm(let gemm) = step { !gemm.outputBF16.isEmpty || gemm.inputBF16Origin != nil } else { false }
        }
        #expect(!plain)
        // Row counts across the AMX blocks (32, 64) and the VDPBF16PS groups (1, 8).
        for rows in [1, 2, 3, 8, 9, 16, 31, 32, 33, 64, 65, 100, 300] {
            let batch = randomBatch(for: spec, rows: rows, seed: UInt64(rows) + 5)
            let got = try handOff.predict(batch, options: PredictOptions(includeGates: true))
            let expected = try float32.predict(batch, options: PredictOptions(includeGates: true))
            for name in expected.outputNames { #expect(got[name] == expected[name], "\(name), \(rows) rows") }
            #expect(got.gates == expected.gates, "gates, \(rows) rows")
            let reference = ReferenceEvaluator(spec: spec, tensors: tensors).predict(batch, rows: rows)
            expectClose(got, reference, rows: rows, tolerance: 3e-2)
        }
    }

    @Test("bf16 kernel: bfloat16 inputs give the float32 inputs' results, bfloat16 output panels their rounding")
    func bf16KernelHandOff() throws {
        guard mmoe_bf16_compute_support() & 1 != 0 else {
            print("bf16 kernel hand-off: SKIPPED, this CPU lacks AVX512-BF16")
            return
        }
        func rounded(_ value: Float) -> UInt16 {
            let bits = value.bitPattern
            return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        }
        var state: UInt64 = 5
        func uniform() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) * 2 - 1
        }
        // k: in place (32, 256) and copied with padding (48, 170); rows across the VDPBF16PS
        // groups (1, 8) and the AMX blocks (16, 32, 64).
        for k in [32, 48, 170, 256] {
            for n in [16, 40, 128] {
                let panels = (n + 15) / 16
                let weights = (0..<(n * k)).map { _ in uniform() * 0.2 }
                var packed = [UInt16](repeating: 0, count: mmoe_vnni_size(Int32(k), Int32(n)))
                #expect(mmoe_pack_vnni(weights, 0, Int32(k), Int32(n), &packed) == -1)
                let bias = (0..<n).map { _ in uniform() }
                let relu = [UInt8](repeating: 1, count: panels)
                // The first half of the panels as bfloat16 (each lands in the bytes of a panel
                // before it, itself bfloat16), the rest float32.
                let halves = (0..<panels).map { UInt8($0 < (panels + 1) / 2 ? 1 : 0) }
                for rows in [1, 3, 8, 9, 16, 31, 32, 33, 64, 100] {
                    let lda = k + 3
                    let lda16 = k + 5
                    let a = (0..<(rows * lda)).map { _ in uniform() }
                    var a16 = [UInt16](repeating: 0, count: rows * lda16)
                    for r in 0..<rows { for c in 0..<k { a16[r * lda16 + c] = rounded(a[r * lda + c]) } }
                    var expected = [Float](repeating: 0, count: rows * n)
                    var fromHalves = [Float](repeating: .nan, count: rows * n)
                    var mixed = [Float](repeating: .nan, count: rows * n)
                    mmoe_gemm_vnni(
                        Int32(rows), Int32(n), Int32(k), a, Int32(lda), nil, 0, packed, bias, relu, nil, &expected, Int32(n), 0,
                        Int32(panels))
                    mmoe_gemm_vnni(
                        Int32(rows), Int32(n), Int32(k), a, Int32(lda), a16, Int32(lda16), packed, bias, relu, nil, &fromHalves,
                        Int32(n), 0, Int32(panels))
                    mmoe_gemm_vnni(
                        Int32(rows), Int32(n), Int32(k), a, Int32(lda), a16, Int32(lda16), packed, bias, relu, halves, &mixed,
                        Int32(n), 0, Int32(panels))
                    #expect(fromHalves == expected, "k \(k), n \(n), \(rows) rows: bfloat16 input")
                    var bad = 0
                    mixed.withUnsafeBytes { bytes in
                        for r in 0..<rows {
                            for c in 0..<n {
                                let want = expected[r * n + c]
                                if halves[c / 16] == 1 {
                                    let got = bytes.load(fromByteOffset: (r * n) * 4 + c * 2, as: UInt16.self)
                                    if got != rounded(want) { bad += 1 }
                                } else if bytes.load(fromByteOffset: (r * n + c) * 4, as: Float.self).bitPattern != want.bitPattern {
                                    bad += 1
                                }
                            }
                        }
                    }
                    #expect(bad == 0, "k \(k), n \(n), \(rows) rows: \(bad) outputs differ")
                }
            }
        }
        print("bf16 kernel hand-off: tested, AMX \(mmoe_bf16_compute_support() & 2 != 0 ? "on" : "off")")
    }

    @Test(
        "a NaN dense value makes its row's outputs NaN on every path (as PyTorch and ONNX Runtime), other rows unchanged",
        arguments: KernelPath.allCases)
    func nanPropagates(path: KernelPath) throws {
        guard path.runsHere else { return }
        for sample in SampleSpecs.all {
            let spec = sample.spec
            guard spec.features.contains(where: { $0.name == "price" }) else { continue }
            let model = try Model(spec: spec, tensors: try randomTensors(for: spec, seed: 4), kernel: path)
            for rows in [1, 5, 40] {
                let clean = randomBatch(for: spec, rows: rows, seed: 9)
                var dirty = clean
                let poisoned = rows / 2
                if case .float32(var values)? = clean["price"]?.values, let shape = clean["price"]?.shape {
                    values[poisoned] = .nan
                    dirty["price"] = FeatureArray(values: .float32(values), shape: shape)
                }
                let expected = try model.predict(clean)
                let got = try model.predict(dirty)
                for name in got.outputNames {
                    let values = try #require(got[name])
                    let reference = try #require(expected[name])
                    let width = got.widths[name] ?? 1
                    for i in 0..<rows * width {
                        let r = i / width
                        if r == poisoned {
                            #expect(values[i].isNaN, "\(sample.name) \(path) \(name) row \(r): \(values[i])")
                        } else {
                            #expect(values[i] == reference[i], "\(sample.name) \(path) \(name) row \(r)")
                        }
                    }
                }
            }
        }
    }

    @Test("an unsupported path falls back to the best supported one")
    func fallback() throws {
        let spec = SampleSpecs.mmoe
        let tensors = try randomTensors(for: spec, seed: 1)
        for path in KernelPath.allCases {
            let model = try Model(spec: spec, tensors: tensors, kernel: path)
            #expect(model.kernel == (path.isSupported ? path : KernelPath.best))
        }
        #expect(KernelPath.best.isSupported)
    }

    @Test("MMOE_KERNEL values: every path's name in any case, bf16 and amx for the bfloat16 products, nothing else")
    func kernelNames() {
        for path in KernelPath.allCases {
            #expect(KernelPath.named(path.rawValue) == path)
            #expect(KernelPath.named(path.rawValue.uppercased()) == path)
        }
        #expect(KernelPath.named("bf16") == .avx512bf16)
        #expect(KernelPath.named("AMX") == .avx512bf16)
        #expect(KernelPath.named("avx") == nil)
        #expect(KernelPath.named("") == nil)
    }
}
