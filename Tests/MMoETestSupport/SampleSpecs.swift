import MMoECore

/// Small specs covering every architecture and building block; shared by the test suites.
public enum SampleSpecs {
    /// Tables and features used by most samples: dense (width 1 and 3), sparse, a shared table,
    /// and sequence features with each pooling mode and padding convention.
    public static let tables = [
        EmbeddingTable(name: "user", vocabSize: 11, dim: 4),
        EmbeddingTable(name: "item", vocabSize: 17, dim: 5),
    ]

    /// Features (concatenated in a different order than listed, like torch-rechub does).
    public static let features: [Feature] = [
        .dense("price"),
        .sparse("user_id", table: "user"),
        .sparse("item_id", table: "item"),
        Feature(name: "hist sum", kind: .sequence, table: "item", maxLength: 4, pooling: .sum, paddingID: 0),
        Feature(name: "hist_mean", kind: .sequence, table: "item", maxLength: 3, pooling: .mean, paddingID: 0, meanEpsilon: 1e-8),
        Feature(name: "hist_max", kind: .sequence, table: "item", maxLength: 3, pooling: .max, paddingID: 0, emptyMaxValue: -1),
        Feature(name: "hist_all", kind: .sequence, table: "user", maxLength: 2, pooling: .mean),
        .dense("context", width: 3),
    ]

    /// Embeddings first, then dense values.
    public static let concat = ["user_id", "item_id", "hist sum", "hist_mean", "hist_max", "hist_all", "price", "context"]

    static func expert(_ dims: [Int], _ activation: Layer = .relu, bn: Bool = false) -> MLP {
        var layers: [Layer] = []
        for d in dims {
            layers.append(.linear(units: d, bias: true))
            if bn { layers.append(.batchNorm(eps: 1e-5, affine: true)) }
            layers.append(activation)
            layers.append(.dropout(rate: 0.1))
        }
        return MLP(layers: layers)
    }

    static func tower(_ dims: [Int], out: Int = 1, _ activation: Layer = .relu, bias: Bool = true) -> MLP {
        var mlp = expert(dims, activation)
        mlp.layers.append(.linear(units: out, bias: bias))
        return mlp
    }

    static func linearGate(_ experts: Int, bias: Bool = true) -> MLP { MLP(layers: [.linear(units: experts, bias: bias)]) }

    static func spec(_ architecture: Architecture, tasks: [TaskHead], outputs: [OutputSpec]? = nil) -> ModelSpec {
        ModelSpec(
            name: "sample", tables: tables, features: features, concat: concat, architecture: architecture, tasks: tasks,
            outputs: outputs)
    }

    /// MMoE: BN-in-gate like torch-rechub, an MLP gate with PReLU like DeepCTR-Torch, regression task.
    public static var mmoe: ModelSpec {
        spec(
            Architecture(
                type: .mmoe,
                experts: [expert([8, 6], bn: true), expert([8, 6], bn: true), expert([8, 6], bn: true)],
                gates: [
                    MLP(layers: [.linear(units: 3, bias: true), .batchNorm(eps: 1e-5, affine: true)]),
                    MLP(layers: [.linear(units: 5, bias: true), .prelu(channels: 1), .linear(units: 3, bias: false)]),
                ],
                towers: [tower([4]), tower([4], .prelu(channels: 4), bias: false)]),
            tasks: [TaskHead(name: "ctr", head: .sigmoid), TaskHead(name: "watch_time", head: .identity, predictionBias: true)])
    }

    /// OMoE with tanh/sigmoid experts, a legacy 2-class softmax2 head, and a 4-class softmax
    /// head with one class as an output and in a product.
    public static var omoe: ModelSpec {
        spec(
            Architecture(
                type: .omoe, experts: [expert([6], .tanh), expert([6], .sigmoid)], gate: linearGate(2, bias: false),
                towers: [tower([3], out: 2), tower([], .relu), tower([5], out: 4)]),
            tasks: [
                TaskHead(name: "click", head: .softmax2), TaskHead(name: "like", head: .sigmoid, predictionBias: true),
                TaskHead(name: "genre", head: .softmax),
            ],
            outputs: [
                OutputSpec(name: "click"), OutputSpec(name: "genre"), OutputSpec(name: "like_drama", product: ["like", "genre_drama"]),
                OutputSpec(name: "like"), OutputSpec(name: "genre_drama", task: "genre", classIndex: 2),
                OutputSpec(
                    name: "score",
                    fusion: Fusion(
                        kind: .weightedSum,
                        terms: [.init(output: "click", weight: 2), .init(output: "like_drama", weight: 0.5, max: 0.3)])),
            ])
    }

    /// Shared-bottom with layer norm, GELU (both forms), SiLU, leaky ReLU, norm after activation.
    public static var sharedBottom: ModelSpec {
        spec(
            Architecture(
                type: .sharedBottom,
                bottom: MLP(layers: [
                    .linear(units: 10, bias: true), .gelu(tanhApproximation: false), .layerNorm(eps: 1e-5, affine: true),
                    .linear(units: 8, bias: false), .silu, .batchNorm(eps: 1e-3, affine: false),
                    .linear(units: 7, bias: true), .leakyRelu(slope: 0.2), .layerNorm(eps: 1e-6, affine: false),
                ]),
                towers: [tower([5], .gelu(tanhApproximation: true)), tower([4], .identity)]),
            tasks: [TaskHead(name: "a"), TaskHead(name: "b", head: .identity)])
    }

    /// ESMM: two towers on the input; outputs in torch-rechub order [cvr, ctr, ctcvr].
    public static var esmm: ModelSpec {
        spec(
            Architecture(type: .esmm, towers: [tower([8, 4], bias: true), tower([8, 4])]),
            tasks: [TaskHead(name: "ctr"), TaskHead(name: "cvr")],
            outputs: [
                OutputSpec(name: "cvr"), OutputSpec(name: "ctr"), OutputSpec(name: "ctcvr", product: ["ctr", "cvr"]),
                OutputSpec(
                    name: "score",
                    fusion: Fusion(
                        kind: .weightedProduct,
                        terms: [.init(output: "ctr", weight: 1), .init(output: "ctcvr", weight: 0.5, add: 0.1, min: 0.01, max: 0.9)])),
            ])
    }

    /// Two-level PLE with the three Dice variants, per-channel PReLU and a BN before the first linear.
    public static var ple: ModelSpec {
        let diceDeepCTR = MLP(layers: [.linear(units: 6, bias: true), .dice(variant: .deepctr, eps: 1e-9)])
        let diceTorch = MLP(layers: [.linear(units: 6, bias: true), .dice(variant: .deepctrTorch, eps: 1e-8)])
        let diceRechub = MLP(layers: [.linear(units: 6, bias: true), .dice(variant: .rechub, eps: 1e-3)])
        let prelu = MLP(layers: [.linear(units: 6, bias: true), .prelu(channels: 6)])
        let normFirst = MLP(layers: [.batchNorm(eps: 1e-3, affine: true), .linear(units: 6, bias: true), .relu])
        let level0 = PLELevel(
            specificExperts: [[diceDeepCTR, diceTorch], [diceRechub]], sharedExperts: [prelu, normFirst],
            specificGates: [linearGate(4), MLP(layers: [.linear(units: 4, bias: true), .relu, .linear(units: 3, bias: true)])],
            sharedGate: linearGate(5))
        let level1 = PLELevel(
            specificExperts: [[expert([5])], [expert([5]), expert([5])]], sharedExperts: [expert([5])],
            specificGates: [linearGate(2), linearGate(3)], sharedGate: nil)
        return spec(
            Architecture(type: .ple, levels: [level0, level1], towers: [tower([3]), tower([3])]),
            tasks: [TaskHead(name: "ctr"), TaskHead(name: "cvr", predictionBias: true)])
    }

    /// AITM with three tasks (two attention transfers), BN info gates like torch-rechub, a
    /// bottom width that is not a multiple of 16 (the fused q/k/v columns are padded).
    public static var aitm: ModelSpec {
        let infoGate = MLP(layers: [.linear(units: 7, bias: true), .batchNorm(eps: 1e-5, affine: true), .relu])
        return spec(
            Architecture(
                type: .aitm, bottoms: [expert([9, 7], bn: true), expert([9, 7], bn: true), expert([9, 7], bn: true)],
                infoGates: [infoGate, infoGate], towers: [tower([4]), tower([4]), tower([5])]),
            tasks: [TaskHead(name: "click"), TaskHead(name: "purchase"), TaskHead(name: "repurchase", head: .identity)])
    }

    /// Every sample by name.
    public static var all: [(name: String, spec: ModelSpec)] {
        [("mmoe", mmoe), ("omoe", omoe), ("shared_bottom", sharedBottom), ("esmm", esmm), ("ple", ple), ("aitm", aitm)]
    }
}
