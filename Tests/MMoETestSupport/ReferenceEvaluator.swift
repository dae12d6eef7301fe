import Foundation
import MMoECore
import MMoERuntime

/// A deliberately naive evaluator of a spec: one example at a time, in Double, every layer
/// exactly as the spec states it (no folding, no fusion). The runtime is checked against it.
public struct ReferenceEvaluator {
    let spec: ModelSpec
    let tensors: TensorStore
    private let cache = ValueCache()

    /// An evaluator.
    public init(spec: ModelSpec, tensors: TensorStore) {
        self.spec = spec
        self.tensors = tensors
    }

    /// A tensor's values as Doubles (decoded once).
    func values(_ name: String) -> [Double] {
        if let cached = cache.values[name] { return cached }
        guard let tensor = tensors[name] else { return [] }
        let decoded = (0..<tensor.elementCount).map { Double(tensor.element($0)) }
        cache.values[name] = decoded
        return decoded
    }

    func embeddingRow(_ table: String, _ id: Int) -> [Double] {
        guard let weight = tensors[TensorNames.embedding(table)] else { return [] }
        let dim = weight.shape[1]
        let scale = weight.dtype == .i8 ? Double(tensors[TensorNames.embeddingScale(table)]?.element(id) ?? 0) : 1
        let offset = weight.dtype == .i8 ? Double(tensors[TensorNames.embeddingOffset(table)]?.element(id) ?? 0) : 0
        return (0..<dim).map { Double(weight.element(id * dim + $0)) * scale + offset }
    }

    static func sigmoid(_ x: Double) -> Double { 1 / (1 + exp(-x)) }

    func mlp(_ mlp: MLP, path: String, _ input: [Double]) -> [Double] {
        var x = input
        for (i, layer) in mlp.layers.enumerated() {
            let p = { (name: String) in values(TensorNames.layer(path, i, name)) }
            switch layer {
            case .linear(let units, let bias):
                let w = p("weight")
                let b = bias ? p("bias") : Array(repeating: 0, count: units)
                x = (0..<units).map { o in
                    var sum = b[o]
                    for j in 0..<x.count { sum += w[o * x.count + j] * x[j] }
                    return sum
                }
            case .batchNorm(let eps, let affine):
                let mean = p("running_mean")
                let variance = p("running_var")
                let gamma = affine ? p("weight") : Array(repeating: 1, count: x.count)
                let beta = affine ? p("bias") : Array(repeating: 0, count: x.count)
                x = x.indices.map { (x[$0] - mean[$0]) / (variance[$0] + eps).squareRoot() * gamma[$0] + beta[$0] }
            case .layerNorm(let eps, let affine):
                let mean = x.reduce(0, +) / Double(x.count)
                let variance = x.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(x.count)
                let gamma = affine ? p("weight") : Array(repeating: 1, count: x.count)
                let beta = affine ? p("bias") : Array(repeating: 0, count: x.count)
                x = x.indices.map { (x[$0] - mean) / (variance + eps).squareRoot() * gamma[$0] + beta[$0] }
            case .relu: x = x.map { max($0, 0) }
            case .leakyRelu(let slope): x = x.map { $0 >= 0 ? $0 : $0 * slope }
            case .prelu(let channels):
                let a = p("weight")
                x = x.indices.map { x[$0] >= 0 ? x[$0] : x[$0] * a[channels == 1 ? 0 : $0] }
            case .sigmoid: x = x.map(ReferenceEvaluator.sigmoid)
            case .tanh: x = x.map { Foundation.tanh($0) }
            case .gelu(let approximate):
                x = x.map { v in
                    approximate
                        ? 0.5 * v * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
                        : 0.5 * v * (1 + erf(v / 2.0.squareRoot()))
                }
            case .silu: x = x.map { $0 * ReferenceEvaluator.sigmoid($0) }
            case .identity, .dropout: break
            case .dice(let variant, let eps):
                let alpha = p("alpha")
                switch variant {
                case .rechub:
                    let mean = x.reduce(0, +) / Double(x.count)
                    let variance = x.map { ($0 - mean) * ($0 - mean) + eps }.reduce(0, +)
                    x = x.map { v in
                        let ps = ReferenceEvaluator.sigmoid((v - mean) / variance.squareRoot())
                        return ps * v + (1 - ps) * alpha[0] * v
                    }
                case .deepctr, .deepctrTorch:
                    let mean = p("running_mean")
                    let variance = p("running_var")
                    let gamma = variant == .deepctrTorch ? p("weight") : Array(repeating: 1, count: x.count)
                    let beta = variant == .deepctrTorch ? p("bias") : Array(repeating: 0, count: x.count)
                    x = x.indices.map { c in
                        let normed = (x[c] - mean[c]) / (variance[c] + eps).squareRoot() * gamma[c] + beta[c]
                        let ps = ReferenceEvaluator.sigmoid(normed)
                        return alpha[c] * (1 - ps) * x[c] + ps * x[c]
                    }
                }
            }
        }
        return x
    }

    func softmax(_ x: [Double]) -> [Double] {
        let m = x.max() ?? 0
        let e = x.map { exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    func mix(_ gate: [Double], _ experts: [[Double]]) -> [Double] {
        var out = [Double](repeating: 0, count: experts[0].count)
        for (e, expert) in experts.enumerated() { for c in out.indices { out[c] += gate[e] * expert[c] } }
        return out
    }

    /// The input vector of example `row`.
    func input(row: Int, batch: [String: FeatureArray]) -> [Double] {
        var x: [Double] = []
        for name in spec.concat {
            guard let feature = spec.features.first(where: { $0.name == name }), let array = batch[name] else { continue }
            switch (feature.kind, array.values) {
            case (.dense, .float32(let values)):
                let width = feature.width ?? 1
                x += (0..<width).map { Double(values[row * width + $0]) }
            case (.sparse, .int64(let ids)):
                x += embeddingRow(feature.table ?? "", Int(ids[row]))
            case (.sequence, .int64(let ids)):
                let length = array.shape[1]
                let table = feature.table ?? ""
                let dim = spec.tables.first { $0.name == table }?.dim ?? 0
                var rowsUsed: [[Double]] = []
                for p in 0..<length {
                    let id = ids[row * length + p]
                    if let padding = feature.paddingID, id == Int64(padding) { continue }
                    rowsUsed.append(embeddingRow(table, Int(id)))
                }
                switch feature.pooling ?? .sum {
                case .sum:
                    x += (0..<dim).map { c in rowsUsed.reduce(0) { $0 + $1[c] } }
                case .mean:
                    let n = Double(rowsUsed.count) + (feature.meanEpsilon ?? 0)
                    x += (0..<dim).map { c in rowsUsed.isEmpty ? 0 : rowsUsed.reduce(0) { $0 + $1[c] } / n }
                case .max:
                    x += (0..<dim).map { c in rowsUsed.isEmpty ? (feature.emptyMaxValue ?? 0) : rowsUsed.map { $0[c] }.max() ?? 0 }
                }
            default:
                continue
            }
        }
        return x
    }

    /// Outputs by name (and gate weights by gate name) for every example.
    public func predict(_ batch: [String: FeatureArray], rows: Int) -> (outputs: [String: [Double]], gates: [String: [[Double]]]) {
        var outputs: [String: [Double]] = [:]
        var gates: [String: [[Double]]] = [:]
        let a = spec.architecture
        for row in 0..<rows {
            let x = input(row: row, batch: batch)
            var towerInputs: [[Double]] = []
            switch a.type {
            case .sharedBottom, .esmm:
                let h = a.bottom.map { mlp($0, path: "bottom", x) } ?? x
                towerInputs = Array(repeating: h, count: spec.tasks.count)
            case .omoe, .mmoe:
                let experts = (a.experts ?? []).enumerated().map { mlp($0.element, path: "experts.\($0.offset)", x) }
                for t in spec.tasks.indices {
                    let g: [Double]
                    let name: String
                    if a.type == .omoe {
                        g = softmax(mlp(a.gate ?? MLP(layers: []), path: "gate", x))
                        name = "shared"
                    } else {
                        g = softmax(mlp((a.gates ?? [])[t], path: "gates.\(t)", x))
                        name = spec.tasks[t].name
                    }
                    if a.type == .mmoe || t == 0 { gates[name, default: []].append(g) }
                    towerInputs.append(mix(g, experts))
                }
            case .aitm:
                // Straight from the paper's code: q, k, v of both items, scaled dot products,
                // softmax over the two items, weighted sum of the values.
                var inputs = (a.bottoms ?? []).enumerated().map { mlp($0.element, path: "bottoms.\($0.offset)", x) }
                for (index, gate) in (a.infoGates ?? []).enumerated() {
                    let info = mlp(gate, path: "info_gates.\(index)", inputs[index])
                    let items = [inputs[index + 1], info]
                    func project(_ part: String, _ v: [Double]) -> [Double] {
                        let w = values(TensorNames.attention(index, part))
                        let d = v.count
                        return (0..<d).map { o in (0..<d).reduce(0.0) { $0 + w[o * d + $1] * v[$1] } }
                    }
                    let scores = items.map { item in
                        zip(project("query", item), project("key", item)).reduce(0.0) { $0 + $1.0 * $1.1 } / Double(item.count).squareRoot()
                    }
                    let weights = softmax(scores)
                    let valuesOfItems = items.map { project("value", $0) }
                    inputs[index + 1] = (0..<valuesOfItems[0].count).map { c in
                        weights[0] * valuesOfItems[0][c] + weights[1] * valuesOfItems[1][c]
                    }
                }
                towerInputs = inputs
            case .ple:
                var taskInputs = Array(repeating: x, count: spec.tasks.count)
                var shared = x
                for (l, level) in (a.levels ?? []).enumerated() {
                    var specific: [[[Double]]] = []
                    for (t, experts) in level.specificExperts.enumerated() {
                        specific.append(
                            experts.enumerated().map {
                                mlp($0.element, path: "levels.\(l).specific_experts.\(t).\($0.offset)", taskInputs[t])
                            })
                    }
                    let sharedOut = level.sharedExperts.enumerated().map {
                        mlp($0.element, path: "levels.\(l).shared_experts.\($0.offset)", shared)
                    }
                    var next: [[Double]] = []
                    for t in spec.tasks.indices {
                        let g = softmax(mlp(level.specificGates[t], path: "levels.\(l).specific_gates.\(t)", taskInputs[t]))
                        gates["level\(l).\(spec.tasks[t].name)", default: []].append(g)
                        next.append(mix(g, specific[t] + sharedOut))
                    }
                    if let gate = level.sharedGate {
                        let g = softmax(mlp(gate, path: "levels.\(l).shared_gate", shared))
                        gates["level\(l).shared", default: []].append(g)
                        shared = mix(g, specific.flatMap { $0 } + sharedOut)
                    }
                    taskInputs = next
                }
                towerInputs = taskInputs
            }
            var taskValues: [String: [Double]] = [:]
            for (t, task) in spec.tasks.enumerated() {
                let logits = mlp(a.towers[t], path: "towers.\(t)", towerInputs[t])
                let bias = task.predictionBias ? values(TensorNames.headBias(t))[0] : 0
                switch task.head {
                case .sigmoid: taskValues[task.name] = [ReferenceEvaluator.sigmoid(logits[0] + bias)]
                case .identity: taskValues[task.name] = [logits[0] + bias]
                case .softmax2: taskValues[task.name] = [softmax(logits)[1]]
                case .softmax: taskValues[task.name] = softmax(logits)
                }
            }
            // Class outputs, then products (which may multiply class outputs), then in order.
            var named = taskValues
            for output in spec.resolvedOutputs where output.product == nil {
                if let task = output.task, let k = output.classIndex { named[output.name] = [taskValues[task]?[k] ?? .nan] }
            }
            for output in spec.resolvedOutputs {
                if let product = output.product { named[output.name] = [product.reduce(1.0) { $0 * (named[$1]?[0] ?? .nan) }] }
                if let fusion = output.fusion {
                    // Written out here rather than through Fusion.apply, so that both are checked.
                    var score = fusion.kind == .weightedSum ? 0.0 : 1.0
                    for term in fusion.terms {
                        let v = min(max(named[term.output]?[0] ?? .nan, term.min ?? -.infinity), term.max ?? .infinity)
                        score = fusion.kind == .weightedSum ? score + term.weight * v : score * pow((term.add ?? 0) + v, term.weight)
                    }
                    named[output.name] = [score]
                }
                outputs[output.name, default: []] += named[output.name] ?? [.nan]
            }
        }
        return (outputs, gates)
    }
}

/// Decoded tensors of one evaluator (single-threaded use).
final class ValueCache {
    var values: [String: [Double]] = [:]
}
