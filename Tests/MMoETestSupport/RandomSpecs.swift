import MMoECore

/// Random valid specs: every architecture, feature kind, pooling and padding convention,
/// layer type and head, with class outputs and products; for property tests (export → import
/// round trips) over models nobody wrote by hand.
public enum RandomSpecs {
    /// A random spec that passes validation (drawn again until one does).
    public static func spec(seed: UInt64) -> ModelSpec {
        var random = TestRandom(seed: seed)
        for _ in 0..<100 {
            let candidate = draw(&random)
            if (try? candidate.validateStructure()) != nil { return candidate }
        }
        return SampleSpecs.mmoe
    }

    static func draw(_ r: inout TestRandom) -> ModelSpec {
        let tables = (0..<(1 + r.int(2))).map { EmbeddingTable(name: "t\($0)", vocabSize: 2 + r.int(20), dim: 1 + r.int(6)) }
        var features: [Feature] = []
        for f in 0..<(1 + r.int(5)) {
            let table = tables[r.int(tables.count)].name
            switch r.int(3) {
            case 0:
                let width = 1 + r.int(3)
                var feature = Feature.dense("d\(f)", width: width)
                if r.int(2) == 0 {
                    let columns = r.int(2) == 0 ? 1 : width
                    feature.scaler = Scaler(
                        kind: r.int(2) == 0 ? .standard : .minmax, shift: (0..<columns).map { _ in Double(r.uniform(-1, 1)) },
                        scale: (0..<columns).map { _ in Double(r.uniform(0.5, 2)) })
                }
                features.append(feature)
            case 1:
                var feature = Feature.sparse("s \(f)", table: table)
                if r.int(3) == 0 { feature.vocabulary = Vocabulary(values: ["a", "b"], offset: 0, oovID: 0) }
                features.append(feature)
            default:
                let pooling = [Pooling.sum, .mean, .max][r.int(3)]
                features.append(
                    Feature(
                        name: "q\(f)", kind: .sequence, table: table, maxLength: 1 + r.int(4), pooling: pooling,
                        paddingID: r.int(3) == 0 ? nil : 0, meanEpsilon: pooling == .mean && r.int(2) == 0 ? 1e-8 : nil,
                        emptyMaxValue: pooling == .max && r.int(2) == 0 ? -1e9 : nil))
            }
        }
        var concat = features.map(\.name)
        for i in concat.indices.reversed() where i > 0 { concat.swapAt(i, r.int(i + 1)) }
        func layer(_ width: Int) -> [Layer] {
            switch r.int(12) {
            case 0: return [.batchNorm(eps: 1e-5, affine: r.int(2) == 0)]
            case 1: return [.layerNorm(eps: 1e-5, affine: r.int(2) == 0)]
            case 2: return [.leakyRelu(slope: 0.2)]
            case 3: return [.prelu(channels: r.int(2) == 0 ? 1 : width)]
            case 4: return [.gelu(tanhApproximation: r.int(2) == 0)]
            case 5: return [.silu]
            case 6: return [.dice(variant: [DiceVariant.deepctr, .deepctrTorch, .rechub][r.int(3)], eps: 1e-3)]
            case 7: return [.tanh]
            case 8: return [.sigmoid]
            case 9: return [.dropout(rate: 0.1)]
            default: return [.relu]
            }
        }
        func mlp(_ widths: [Int], out: Int? = nil) -> MLP {
            var layers: [Layer] = []
            if r.int(6) == 0 { layers.append(.batchNorm(eps: 1e-3, affine: true)) }  // a norm before the first linear
            for w in widths {
                layers.append(.linear(units: w, bias: r.int(4) != 0))
                if r.int(3) == 0 { layers.append(.batchNorm(eps: 1e-5, affine: r.int(2) == 0)) }
                layers += layer(w)
            }
            if let out { layers.append(.linear(units: out, bias: r.int(2) == 0)) }
            return MLP(layers: layers)
        }
        func hidden() -> [Int] { (0..<(1 + r.int(2))).map { _ in 2 + r.int(6) } }
        let taskCount = 2 + r.int(2)
        var tasks: [TaskHead] = []
        var towerOuts: [Int] = []
        var classOutputs: [OutputSpec] = []
        for t in 0..<taskCount {
            switch r.int(5) {
            case 0:
                tasks.append(TaskHead(name: "t\(t)", head: .identity, predictionBias: r.int(2) == 0))
                towerOuts.append(1)
            case 1:
                tasks.append(TaskHead(name: "t\(t)", head: .softmax2))
                towerOuts.append(2)
            case 2:
                let classes = 2 + r.int(3)
                tasks.append(TaskHead(name: "t\(t)", head: .softmax))
                towerOuts.append(classes)
                classOutputs.append(OutputSpec(name: "t\(t)_c", task: "t\(t)", classIndex: r.int(classes)))
            default:
                tasks.append(TaskHead(name: "t\(t)", head: .sigmoid, predictionBias: r.int(2) == 0))
                towerOuts.append(1)
            }
        }
        let expertWidth = 2 + r.int(6)
        let towers = towerOuts.map { mlp(r.int(2) == 0 ? [] : hidden(), out: $0) }
        let architecture: Architecture
        switch r.int(6) {
        case 0: architecture = Architecture(type: .sharedBottom, bottom: r.int(3) == 0 ? nil : mlp(hidden()), towers: towers)
        case 1: architecture = Architecture(type: .esmm, towers: towers)
        case 2:
            let experts = 1 + r.int(3)
            architecture = Architecture(
                type: .omoe, experts: (0..<experts).map { _ in mlp(hidden() + [expertWidth]) }, gate: mlp([], out: experts), towers: towers)
        case 3:
            let experts = 1 + r.int(3)
            architecture = Architecture(
                type: .mmoe, experts: (0..<experts).map { _ in mlp(hidden() + [expertWidth]) },
                gates: (0..<taskCount).map { _ in mlp(r.int(2) == 0 ? [] : hidden(), out: experts) }, towers: towers)
        case 4:
            let levels = 1 + r.int(2)
            let specific = 1 + r.int(2)
            let shared = 1 + r.int(2)
            architecture = Architecture(
                type: .ple,
                levels: (0..<levels).map { l in
                    PLELevel(
                        specificExperts: (0..<taskCount).map { _ in (0..<specific).map { _ in mlp([expertWidth]) } },
                        sharedExperts: (0..<shared).map { _ in mlp([expertWidth]) },
                        specificGates: (0..<taskCount).map { _ in mlp([], out: specific + shared) },
                        sharedGate: l < levels - 1 ? mlp([], out: taskCount * specific + shared) : nil)
                }, towers: towers)
        default:
            architecture = Architecture(
                type: .aitm, bottoms: (0..<taskCount).map { _ in mlp(hidden() + [expertWidth]) },
                infoGates: (1..<taskCount).map { _ in mlp([expertWidth]) }, towers: towers)
        }
        var outputs = tasks.map { OutputSpec(name: $0.name) } + classOutputs
        let scalar = tasks.filter { $0.head != .softmax }.map(\.name) + classOutputs.map(\.name)
        if scalar.count >= 2, r.int(2) == 0 { outputs.append(OutputSpec(name: "product", product: [scalar[0], scalar[1]])) }
        return ModelSpec(
            name: "random", tables: tables, features: features, concat: concat, architecture: architecture, tasks: tasks, outputs: outputs)
    }
}
