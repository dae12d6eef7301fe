import MMoECore
import MMoERuntime

/// A small deterministic random generator (SplitMix64) for tests.
public struct TestRandom: Sendable {
    private var state: UInt64
    /// A generator with a seed.
    public init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [low, high).
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        low + (high - low) * Float(next() >> 40) / Float(1 << 24)
    }
    /// Uniform integer in 0..<bound.
    public mutating func int(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// The same tensors with every two-dimensional weight (linear layers, embedding tables) stored
/// as bfloat16, as `convert --dtype bf16` stores them.
public func withBF16Weights(_ tensors: TensorStore) throws -> TensorStore {
    var converted = tensors
    for name in tensors.names where name.hasSuffix("weight") {
        if let tensor = tensors[name], tensor.shape.count == 2 { converted.set(try tensor.converted(to: .bf16), named: name) }
    }
    return converted
}

/// Fills every tensor a spec needs with random values of a sensible range.
public func randomTensors(for spec: ModelSpec, seed: UInt64, embeddingDType: DType = .f32) throws -> TensorStore {
    var random = TestRandom(seed: seed)
    var store = TensorStore()
    for table in spec.tables {
        let count = table.vocabSize * table.dim
        let values = (0..<count).map { _ in random.uniform(-1, 1) }
        let tensor = try Tensor(float32: values, shape: [table.vocabSize, table.dim])
        if embeddingDType == .i8 {
            let (codes, scales) = try quantizeRows(tensor)
            try store.insert(codes, named: TensorNames.embedding(table.name))
            try store.insert(scales, named: TensorNames.embeddingScale(table.name))
        } else {
            try store.insert(try tensor.converted(to: embeddingDType), named: TensorNames.embedding(table.name))
        }
    }
    let layout = try spec.validateStructure()
    for requirement in layout.requirements {
        let count = requirement.shape.reduce(1, *)
        let fanIn = requirement.shape.count == 2 ? requirement.shape[1] : 1
        let bound = 1.5 / Float(fanIn).squareRoot()
        let values: [Float]
        if requirement.name.hasSuffix("running_var") {
            values = (0..<count).map { _ in random.uniform(0.3, 2) }
        } else if requirement.name.hasSuffix(".alpha") {
            values = (0..<count).map { _ in random.uniform(-0.5, 0.5) }
        } else if requirement.name.hasSuffix("running_mean") || requirement.name.hasSuffix("bias") {
            values = (0..<count).map { _ in random.uniform(-0.3, 0.3) }
        } else if requirement.shape.count == 1 {
            values = (0..<count).map { _ in random.uniform(0.5, 1.5) }  // BN/LN gamma, PReLU slopes
        } else {
            values = (0..<count).map { _ in random.uniform(-bound, bound) }
        }
        try store.insert(try Tensor(float32: values, shape: requirement.shape), named: requirement.name)
    }
    return store
}

/// Row-wise symmetric int8 quantization, the same rule as the converter's (scale = max|row| / 127).
public func quantizeRows(_ table: Tensor) throws -> (codes: Tensor, scales: Tensor) {
    let rows = table.shape[0]
    let dim = table.shape[1]
    let values = table.floats()
    var codes = [UInt8](repeating: 0, count: rows * dim)
    var scales = [Float](repeating: 0, count: rows)
    for r in 0..<rows {
        let row = values[(r * dim)..<((r + 1) * dim)]
        let largest = row.map { abs($0) }.max() ?? 0
        let scale = largest > 0 ? largest / 127 : 1
        scales[r] = scale
        for (c, v) in row.enumerated() {
            codes[r * dim + c] = UInt8(bitPattern: Int8(max(-127, min(127, (v / scale).rounded()))))
        }
    }
    return (try Tensor(dtype: .i8, shape: [rows, dim], bytes: codes), try Tensor(float32: scales, shape: [rows]))
}

/// A random batch that fits a spec (ids in range; sequences with some padding).
public func randomBatch(for spec: ModelSpec, rows: Int, seed: UInt64) -> [String: FeatureArray] {
    var random = TestRandom(seed: seed)
    var batch: [String: FeatureArray] = [:]
    let vocab = Dictionary(uniqueKeysWithValues: spec.tables.map { ($0.name, $0.vocabSize) })
    for feature in spec.features {
        switch feature.kind {
        case .dense:
            let width = feature.width ?? 1
            batch[feature.name] = .floats((0..<(rows * width)).map { _ in random.uniform(-2, 2) }, width: width)
        case .sparse:
            let size = vocab[feature.table ?? ""] ?? 1
            batch[feature.name] = .ids((0..<rows).map { _ in Int64(random.int(size)) })
        case .sequence:
            let size = vocab[feature.table ?? ""] ?? 1
            let length = feature.maxLength ?? 1
            var ids: [Int64] = []
            for r in 0..<rows {
                // Row 0 is all padding, to exercise the empty case.
                let used = r == 0 ? 0 : 1 + random.int(length)
                for p in 0..<length {
                    if p < used {
                        ids.append(Int64(random.int(size)))
                    } else {
                        ids.append(Int64(feature.paddingID ?? random.int(size)))
                    }
                }
            }
            batch[feature.name] = .sequences(ids, length: length)
        }
    }
    return batch
}
