import Foundation
import MMoECore

/// How to write an ONNX model.
public struct OnnxExportOptions: Sendable {
    /// Operator set, 13 ... 21.
    public var opset: Int
    /// Initializer bytes above which large initializers go to a side file (ONNX protobufs
    /// cannot exceed 2 GB).
    public var externalDataThreshold: Int
    /// The side file's name, beside the model.
    public var externalDataName: String

    /// Options; the defaults write opset 17 and keep everything in one file below ~1.8 GB.
    public init(opset: Int = 17, externalDataThreshold: Int = 1_800_000_000, externalDataName: String = "model.onnx.data") {
        self.opset = opset
        self.externalDataThreshold = externalDataThreshold
        self.externalDataName = externalDataName
    }
}

/// An ONNX model as bytes, with its external data when it has any.
public struct OnnxExport: Sendable {
    /// The ModelProto.
    public let model: [UInt8]
    /// The bytes of the side file named by `OnnxExportOptions.externalDataName`, or nil.
    public let externalData: [UInt8]?
}

/// Writes a model as a standard ONNX graph: one named input per feature (`int64 [N]` ids,
/// `int64 [N, L]` padded sequences, `float32 [N, W]` dense values), one output per model
/// output (`float32 [N]`, `[N, C]` for class probabilities), batch norm after a linear folded
/// into it, every other block spelled out in standard operators exactly as the runtime
/// computes it. Initializers keep the canonical tensor names and the (folded) spec is stored
/// as metadata `mmoe.spec`, so the file converts back without a spec.
public enum OnnxExporter {
    /// Supported operator sets.
    public static let opsets = 13...21
    /// The metadata key holding the spec.
    public static let specKey = "mmoe.spec"

    /// Exports `spec` with `tensors`.
    public static func export(spec original: ModelSpec, tensors original2: TensorStore, options: OnnxExportOptions = OnnxExportOptions())
        throws(ImportError) -> OnnxExport
    {
        let path = "onnx export"
        guard opsets.contains(options.opset) else {
            throw .unsupported(path: path, reason: "opset \(options.opset) is outside \(opsets.lowerBound)...\(opsets.upperBound)")
        }
        let spec: ModelSpec
        let tensors: TensorStore
        do throws(ModelError) {
            (spec, tensors) = try ModelTransforms.foldBatchNorms(spec: original, tensors: original2)
        } catch {
            throw .invalidModel(path: path, error)
        }
        var graph = OnnxGraphBuilder(spec: spec, tensors: tensors, opset: options.opset)
        try graph.build()
        return graph.encode(options: options)
    }
}

/// The graph being written.
struct OnnxGraphBuilder {
    enum Attribute {
        case int(String, Int)
        case float(String, Float)
        case ints(String, [Int])
        case string(String, String)
    }

    struct Initializer {
        let name: String
        let dataType: Int  // ONNX TensorProto.DataType
        let dims: [Int]
        let raw: [UInt8]
    }

    let spec: ModelSpec
    let tensors: TensorStore
    let opset: Int
    var nodes: [[UInt8]] = []
    var initializers: [Initializer] = []
    var initializerNames: Set<String> = []
    var counter = 0
    var stackedExperts: [String: String] = [:]
    /// Unnamed constants by value (dims and values), so that each is one initializer.
    var constants: [String: String] = [:]
    /// A dimension of a graph input or output: fixed, or named (dynamic).
    enum Dim {
        case fixed(Int)
        case symbol(String)
    }

    var graphInputs: [(name: String, elementType: Int, dims: [Dim])] = []
    var graphOutputs: [(name: String, dims: [Dim])] = []
    let path = "onnx export"

    init(spec: ModelSpec, tensors: TensorStore, opset: Int) {
        self.spec = spec
        self.tensors = tensors
        self.opset = opset
    }

    // MARK: primitives

    mutating func fresh(_ hint: String) -> String {
        counter += 1
        return "mmoe/\(hint)/\(counter)"
    }

    @discardableResult
    mutating func node(_ op: String, _ inputs: [String], _ attributes: [Attribute] = [], output: String? = nil) -> String {
        let out = output ?? fresh(op)
        var w = ProtoWriter()
        for input in inputs { w.string(1, input) }
        w.string(2, out)
        w.string(3, "n\(nodes.count)_\(op)")
        w.string(4, op)
        for attribute in attributes {
            w.message(5) { a in
                switch attribute {
                case .int(let name, let value):
                    a.string(1, name)
                    a.int(3, value)
                    a.int(20, 2)
                case .float(let name, let value):
                    a.string(1, name)
                    a.float(2, value)
                    a.int(20, 1)
                case .ints(let name, let values):
                    a.string(1, name)
                    for v in values { a.int(8, v) }
                    a.int(20, 7)
                case .string(let name, let value):
                    a.string(1, name)
                    a.string(4, value)
                    a.int(20, 3)
                }
            }
        }
        nodes.append(w.bytes)
        return out
    }

    mutating func addInitializer(_ name: String, dataType: Int, dims: [Int], raw: [UInt8]) {
        guard initializerNames.insert(name).inserted else { return }
        initializers.append(Initializer(name: name, dataType: dataType, dims: dims, raw: raw))
    }

    mutating func floats(_ values: [Float], dims: [Int], name: String? = nil) -> String {
        let key = "f\(dims):" + values.map { String($0.bitPattern) }.joined(separator: ",")
        if name == nil, let existing = constants[key] { return existing }
        let n = name ?? fresh("const")
        if name == nil { constants[key] = n }
        var raw = [UInt8]()
        raw.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw += $0 } }
        addInitializer(n, dataType: 1, dims: dims, raw: raw)
        return n
    }

    mutating func scalar(_ value: Float) -> String { floats([value], dims: []) }

    mutating func ints(_ values: [Int], dims: [Int]? = nil) -> String {
        let key = "i\(dims ?? [values.count]):" + values.map(String.init).joined(separator: ",")
        if let existing = constants[key] { return existing }
        let n = fresh("ints")
        constants[key] = n
        var raw = [UInt8]()
        for v in values { withUnsafeBytes(of: Int64(v).littleEndian) { raw += $0 } }
        addInitializer(n, dataType: 7, dims: dims ?? [values.count], raw: raw)
        return n
    }

    /// A canonical tensor as an f32 initializer (widened from f16/bf16) under its own name.
    mutating func tensor(_ name: String) throws(ImportError) -> String {
        guard let t = tensors[name] else { throw .mismatch(path: path, reason: "tensor '\(name)' is missing") }
        if !initializerNames.contains(name) {
            _ = floats(t.floats(), dims: t.shape, name: name)
        }
        return name
    }

    mutating func reduceMax(_ x: String, axis: Int, keepdims: Bool) -> String {
        if opset >= 18 { return node("ReduceMax", [x, ints([axis])], [.int("keepdims", keepdims ? 1 : 0)]) }
        return node("ReduceMax", [x], [.ints("axes", [axis]), .int("keepdims", keepdims ? 1 : 0)])
    }

    mutating func reduceSum(_ x: String, axis: Int, keepdims: Bool) -> String {
        node("ReduceSum", [x, ints([axis])], [.int("keepdims", keepdims ? 1 : 0)])
    }

    mutating func unsqueeze(_ x: String, _ axis: Int) -> String { node("Unsqueeze", [x, ints([axis])]) }

    // MARK: the model

    mutating func build() throws(ImportError) {
        let layout: ModelLayout
        do throws(ModelError) { layout = try spec.validate(tensors: tensors) } catch { throw .invalidModel(path: path, error) }
        let taken = Set(tensors.names)
        for feature in spec.features where taken.contains(feature.name) || feature.name.hasPrefix("mmoe/") {
            throw .unsupported(path: path, reason: "feature '\(feature.name)' has the name of a tensor; ONNX names must be unique")
        }
        // Every table, used or not, so that the file converts back to the same spec.
        for table in spec.tables { _ = try embeddingInitializers(table.name) }
        // Inputs and the concatenated input vector.
        var pieces: [String: String] = [:]
        for feature in spec.features {
            switch feature.kind {
            case .dense:
                graphInputs.append((feature.name, 1, [.symbol("N"), .fixed(feature.width ?? 1)]))
                if let scaler = feature.scaler {
                    // The fitted scaler on the raw values, as the runtime applies it.
                    let shift = floats(scaler.shift.map { Float($0) }, dims: [scaler.shift.count])
                    let scale = floats(scaler.scale.map { Float($0) }, dims: [scaler.scale.count])
                    pieces[feature.name] = node("Div", [node("Sub", [feature.name, shift]), scale])
                } else {
                    pieces[feature.name] = feature.name
                }
            case .sparse:
                graphInputs.append((feature.name, 7, [.symbol("N")]))
                pieces[feature.name] = try lookup(table: feature.table ?? "", ids: feature.name)
            case .sequence:
                graphInputs.append((feature.name, 7, [.symbol("N"), .symbol("\(feature.name)_length")]))
                pieces[feature.name] = try pooled(feature)
            }
        }
        let ordered = spec.concat.compactMap { pieces[$0] }
        let input = ordered.count == 1 ? ordered[0] : node("Concat", ordered, [.int("axis", 1)])
        let towerInputs = try architecture(input)
        var taskValues: [String: String] = [:]
        for (t, task) in spec.tasks.enumerated() {
            let logits = try mlp(spec.architecture.towers[t], path: "towers.\(t)", towerInputs[t])
            let value: String
            switch task.head {
            case .sigmoid, .identity:
                var z = node("Squeeze", [logits, ints([1])])
                if task.predictionBias { z = node("Add", [z, try tensor(TensorNames.headBias(t))]) }  // [N] + [1]
                value = task.head == .sigmoid ? node("Sigmoid", [z]) : z
            case .softmax2:
                let z1 = node("Gather", [logits, ints([1], dims: [])], [.int("axis", 1)])
                let z0 = node("Gather", [logits, ints([0], dims: [])], [.int("axis", 1)])
                value = node("Sigmoid", [node("Sub", [z1, z0])])
            case .softmax:
                value = node("Softmax", [logits], [.int("axis", 1)])
            }
            taskValues[task.name] = value
        }
        // Outputs: tasks, class columns, products.
        var named = taskValues
        let outputs = spec.resolvedOutputs
        for output in outputs where output.product == nil {
            if let task = output.task, let k = output.classIndex, let probabilities = taskValues[task] {
                named[output.name] = node("Gather", [probabilities, ints([k], dims: [])], [.int("axis", 1)])
            }
        }
        for output in outputs {
            if let product = output.product {
                var value = named[product[0]] ?? ""
                for factor in product.dropFirst() { value = node("Mul", [value, named[factor] ?? ""]) }
                named[output.name] = value
            } else if let fusion = output.fusion {
                var score: String?
                for term in fusion.terms {
                    var v = named[term.output] ?? ""
                    if let low = term.min { v = node("Max", [v, scalar(Float(low))]) }
                    if let high = term.max { v = node("Min", [v, scalar(Float(high))]) }
                    let part: String
                    switch fusion.kind {
                    case .weightedSum: part = node("Mul", [v, scalar(Float(term.weight))])
                    case .weightedProduct:
                        let base = term.add.map { node("Add", [v, scalar(Float($0))]) } ?? v
                        part = node("Pow", [base, scalar(Float(term.weight))])
                    }
                    score = score.map { node(fusion.kind == .weightedSum ? "Add" : "Mul", [$0, part]) } ?? part
                }
                named[output.name] = score
            }
        }
        for (o, output) in outputs.enumerated() {
            guard let value = named[output.name] else { continue }
            node("Identity", [value], output: output.name)
            let width = layout.outputWidths[o]
            graphOutputs.append((output.name, width == 1 ? [.symbol("N")] : [.symbol("N"), .fixed(width)]))
        }
    }

    /// Rows of `table` for `ids` (any shape): f32/f16/bf16 tables widened to f32; int8 tables
    /// kept as int8 codes, the looked-up codes times their row's scale (plus its offset).
    mutating func lookup(table: String, ids: String) throws(ImportError) -> String {
        let name = try embeddingInitializers(table)
        if tensors[name]?.dtype == .i8 {
            let scales = TensorNames.embeddingScale(table)
            let codes = node("Cast", [node("Gather", [name, ids], [.int("axis", 0)])], [.int("to", 1)])
            let scale = unsqueeze(node("Gather", [scales, ids], [.int("axis", 0)]), -1)
            let scaled = node("Mul", [codes, scale])
            let offsets = TensorNames.embeddingOffset(table)
            guard initializerNames.contains(offsets) else { return scaled }
            return node("Add", [scaled, unsqueeze(node("Gather", [offsets, ids], [.int("axis", 0)]), -1)])
        }
        return node("Gather", [name, ids], [.int("axis", 0)])
    }

    /// The initializers of a table: f32 (widened), or int8 codes and their f32 row scales.
    mutating func embeddingInitializers(_ table: String) throws(ImportError) -> String {
        let name = TensorNames.embedding(table)
        guard let weight = tensors[name] else { throw .mismatch(path: path, reason: "table '\(name)' is missing") }
        if weight.dtype == .i8 {
            addInitializer(name, dataType: 3, dims: weight.shape, raw: weight.bytesArray())
            _ = try tensor(TensorNames.embeddingScale(table))
            if tensors[TensorNames.embeddingOffset(table)] != nil { _ = try tensor(TensorNames.embeddingOffset(table)) }
            return name
        }
        return try tensor(name)
    }

    /// A pooled sequence: padding positions skipped (looked up as row 0, masked out).
    mutating func pooled(_ feature: Feature) throws(ImportError) -> String {
        let ids = feature.name
        let mask: String
        if let padding = feature.paddingID {
            mask = node("Not", [node("Equal", [ids, ints([padding], dims: [])])])
        } else {
            mask = node("Equal", [ids, ids])  // every position counts
        }
        let safe = node("Where", [mask, ids, ints([0], dims: [])])
        let rows = try lookup(table: feature.table ?? "", ids: safe)  // [N, L, D]
        let weights = unsqueeze(node("Cast", [mask], [.int("to", 1)]), -1)  // [N, L, 1]
        let count = reduceSum(weights, axis: 1, keepdims: false)  // [N, 1]
        switch feature.pooling ?? .sum {
        case .sum:
            return reduceSum(node("Mul", [rows, weights]), axis: 1, keepdims: false)
        case .mean:
            let sum = reduceSum(node("Mul", [rows, weights]), axis: 1, keepdims: false)
            let denominator = node(
                "Max", [node("Add", [count, scalar(Float(feature.meanEpsilon ?? 0))]), scalar(Float.leastNormalMagnitude)])
            return node("Div", [sum, denominator])
        case .max:
            let masked = node("Where", [unsqueeze(mask, -1), rows, scalar(-Float.infinity)])
            let largest = reduceMax(masked, axis: 1, keepdims: false)
            let any = node("Greater", [count, scalar(0)])
            return node("Where", [any, largest, scalar(Float(feature.emptyMaxValue ?? 0))])
        }
    }

    /// The representation each tower reads.
    mutating func architecture(_ input: String) throws(ImportError) -> [String] {
        let a = spec.architecture
        let tasks = spec.tasks.count
        switch a.type {
        case .sharedBottom, .esmm:
            let shared = try a.bottom.map { m throws(ImportError) in try mlp(m, path: "bottom", input) } ?? input
            return Array(repeating: shared, count: tasks)
        case .mmoe, .omoe:
            var experts: [String] = []
            for (e, expert) in (a.experts ?? []).enumerated() { experts.append(try mlp(expert, path: "experts.\(e)", input)) }
            if a.type == .omoe, let gate = a.gate {
                let mixed = mix(gate: try mlp(gate, path: "gate", input), experts: experts)
                return Array(repeating: mixed, count: tasks)
            }
            var result: [String] = []
            for (t, gate) in (a.gates ?? []).enumerated() {
                result.append(mix(gate: try mlp(gate, path: "gates.\(t)", input), experts: experts))
            }
            return result
        case .ple:
            var taskInputs = Array(repeating: input, count: tasks)
            var shared = input
            for (l, level) in (a.levels ?? []).enumerated() {
                var specific: [[String]] = []
                for (t, list) in level.specificExperts.enumerated() {
                    var outs: [String] = []
                    for (j, expert) in list.enumerated() {
                        outs.append(try mlp(expert, path: "levels.\(l).specific_experts.\(t).\(j)", taskInputs[t]))
                    }
                    specific.append(outs)
                }
                var sharedExperts: [String] = []
                for (k, expert) in level.sharedExperts.enumerated() {
                    sharedExperts.append(try mlp(expert, path: "levels.\(l).shared_experts.\(k)", shared))
                }
                var next: [String] = []
                for t in 0..<tasks {
                    let gate = try mlp(level.specificGates[t], path: "levels.\(l).specific_gates.\(t)", taskInputs[t])
                    next.append(mix(gate: gate, experts: specific[t] + sharedExperts))
                }
                if let gate = level.sharedGate {
                    let logits = try mlp(gate, path: "levels.\(l).shared_gate", shared)
                    shared = mix(gate: logits, experts: specific.flatMap { $0 } + sharedExperts)
                }
                taskInputs = next
            }
            return taskInputs
        case .aitm:
            var views: [String] = []
            for (t, bottom) in (a.bottoms ?? []).enumerated() { views.append(try mlp(bottom, path: "bottoms.\(t)", input)) }
            for (index, gate) in (a.infoGates ?? []).enumerated() {
                let info = try mlp(gate, path: "info_gates.\(index)", views[index])
                views[index + 1] = try attention(current: views[index + 1], info: info, index: index)
            }
            return views
        }
    }

    /// softmax(gate logits) · experts: `[N, 1, E] x [N, E, H] -> [N, H]`.
    mutating func mix(gate logits: String, experts: [String]) -> String {
        let weights = node("Softmax", [logits], [.int("axis", 1)])
        let key = experts.joined(separator: "\u{0}")
        let stacked = stackedExperts[key] ?? node("Concat", experts.map { unsqueeze($0, 1) }, [.int("axis", 1)])
        stackedExperts[key] = stacked  // gates mixing the same experts share one stack
        let product = node("MatMul", [unsqueeze(weights, 1), stacked])
        return node("Squeeze", [product, ints([1])])
    }

    /// AITM's attention transfer over (current, info).
    mutating func attention(current: String, info: String, index: Int) throws(ImportError) -> String {
        let q = try tensor(TensorNames.attention(index, "query"))
        let k = try tensor(TensorNames.attention(index, "key"))
        let v = try tensor(TensorNames.attention(index, "value"))
        guard let d = tensors[q]?.shape.first else { throw .mismatch(path: path, reason: "attention \(index) has no width") }
        let scale = scalar(Float(1 / Double(d).squareRoot()))
        var scores: [String] = []
        var values: [String] = []
        for item in [current, info] {
            let query = node("Gemm", [item, q], [.int("transB", 1)])
            let key = node("Gemm", [item, k], [.int("transB", 1)])
            scores.append(node("Mul", [reduceSum(node("Mul", [query, key]), axis: 1, keepdims: true), scale]))
            values.append(node("Gemm", [item, v], [.int("transB", 1)]))
        }
        let weights = node("Softmax", [node("Concat", scores, [.int("axis", 1)])], [.int("axis", 1)])  // [N, 2]
        let w0 = unsqueeze(node("Gather", [weights, ints([0], dims: [])], [.int("axis", 1)]), 1)
        let w1 = unsqueeze(node("Gather", [weights, ints([1], dims: [])], [.int("axis", 1)]), 1)
        return node("Add", [node("Mul", [w0, values[0]]), node("Mul", [w1, values[1]])])
    }

    /// An MLP applied to `x` (`[N, in]`).
    mutating func mlp(_ mlp: MLP, path: String, _ input: String) throws(ImportError) -> String {
        var x = input
        for (i, layer) in mlp.layers.enumerated() {
            func name(_ parameter: String) -> String { TensorNames.layer(path, i, parameter) }
            switch layer {
            case .linear(_, let bias):
                var inputs = [x, try tensor(name("weight"))]
                if bias { inputs.append(try tensor(name("bias"))) }
                x = node("Gemm", inputs, [.int("transB", 1)])
            case .batchNorm(let eps, let affine):
                let mean = try tensor(name("running_mean"))
                let variance = try tensor(name("running_var"))
                let w = tensors[mean]?.elementCount ?? 0
                let gamma = affine ? try tensor(name("weight")) : floats([Float](repeating: 1, count: w), dims: [w])
                let beta = affine ? try tensor(name("bias")) : floats([Float](repeating: 0, count: w), dims: [w])
                x = node("BatchNormalization", [x, gamma, beta, mean, variance], [.float("epsilon", Float(eps))])
            case .layerNorm(let eps, let affine):
                x = try layerNorm(
                    x, eps: eps, gamma: affine ? try tensor(name("weight")) : nil, beta: affine ? try tensor(name("bias")) : nil)
            case .relu: x = node("Relu", [x])
            case .sigmoid: x = node("Sigmoid", [x])
            case .tanh: x = node("Tanh", [x])
            case .leakyRelu(let slope): x = node("LeakyRelu", [x], [.float("alpha", Float(slope))])
            case .prelu: x = node("PRelu", [x, try tensor(name("weight"))])
            case .silu: x = node("Mul", [x, node("Sigmoid", [x])])
            case .identity, .dropout: break
            case .gelu(let tanhApproximation):
                if opset >= 20 {
                    x = node("Gelu", [x], [.string("approximate", tanhApproximation ? "tanh" : "none")])
                } else if tanhApproximation {
                    let cube = node("Mul", [node("Mul", [x, x]), x])
                    let inner = node(
                        "Mul", [node("Add", [x, node("Mul", [cube, scalar(0.044715)])]), scalar(Float((2 / Double.pi).squareRoot()))])
                    x = node("Mul", [node("Mul", [x, scalar(0.5)]), node("Add", [node("Tanh", [inner]), scalar(1)])])
                } else {
                    let erf = node("Erf", [node("Div", [x, scalar(Float(2.0.squareRoot()))])])
                    x = node("Mul", [node("Mul", [x, scalar(0.5)]), node("Add", [erf, scalar(1)])])
                }
            case .dice(let variant, let eps):
                let alpha = try tensor(name("alpha"))
                let p: String
                switch variant {
                case .rechub:
                    let w = node("Cast", [node("Gather", [node("Shape", [x]), ints([1], dims: [])])], [.int("to", 1)])
                    let mean = node("Div", [reduceSum(x, axis: 1, keepdims: true), w])
                    let centred = node("Sub", [x, mean])
                    let spread = node(
                        "Add",
                        [reduceSum(node("Mul", [centred, centred]), axis: 1, keepdims: true), node("Mul", [w, scalar(Float(eps))])])
                    p = node("Sigmoid", [node("Div", [centred, node("Sqrt", [spread])])])
                case .deepctr, .deepctrTorch:
                    let std = node("Sqrt", [node("Add", [try tensor(name("running_var")), scalar(Float(eps))])])
                    var normed = node("Div", [node("Sub", [x, try tensor(name("running_mean"))]), std])
                    if variant == .deepctrTorch {
                        normed = node("Add", [node("Mul", [normed, try tensor(name("weight"))]), try tensor(name("bias"))])
                    }
                    p = node("Sigmoid", [normed])
                }
                // y = p·x + (1 − p)·alpha·x
                let rest = node("Mul", [node("Mul", [node("Sub", [scalar(1), p]), alpha]), x])
                x = node("Add", [node("Mul", [p, x]), rest])
            }
        }
        return x
    }

    mutating func layerNorm(_ x: String, eps: Double, gamma: String?, beta: String?) throws(ImportError) -> String {
        if opset >= 17, let gamma {
            var inputs = [x, gamma]
            if let beta { inputs.append(beta) }
            return node("LayerNormalization", inputs, [.int("axis", -1), .float("epsilon", Float(eps))])
        }
        let count = node("Cast", [node("Gather", [node("Shape", [x]), ints([1], dims: [])])], [.int("to", 1)])
        let mean = node("Div", [reduceSum(x, axis: 1, keepdims: true), count])
        let centred = node("Sub", [x, mean])
        let variance = node("Div", [reduceSum(node("Mul", [centred, centred]), axis: 1, keepdims: true), count])
        var y = node("Div", [centred, node("Sqrt", [node("Add", [variance, scalar(Float(eps))])])])
        if let gamma { y = node("Mul", [y, gamma]) }
        if let beta { y = node("Add", [y, beta]) }
        return y
    }

    // MARK: encoding

    func encode(options: OnnxExportOptions) -> OnnxExport {
        let total = initializers.reduce(0) { $0 + $1.raw.count }
        let external = total > options.externalDataThreshold
        var side: [UInt8] = []
        var graph = ProtoWriter()
        for n in nodes { graph.bytes(1, n) }
        graph.string(2, spec.name ?? "mmoe")
        for initializer in initializers {
            graph.message(5) { t in
                for d in initializer.dims { t.int(1, d) }
                t.int(2, initializer.dataType)
                t.string(8, initializer.name)
                if external && initializer.raw.count >= 1024 {
                    while side.count % 64 != 0 { side.append(0) }
                    let offset = side.count
                    side += initializer.raw
                    for (key, value) in [
                        ("location", options.externalDataName), ("offset", "\(offset)"), ("length", "\(initializer.raw.count)"),
                    ] {
                        t.message(13) { entry in
                            entry.string(1, key)
                            entry.string(2, value)
                        }
                    }
                    t.int(14, 1)
                } else {
                    t.bytes(9, initializer.raw)
                }
            }
        }
        func valueInfo(_ w: inout ProtoWriter, field: Int, name: String, elementType: Int, dims: [Dim]) {
            w.message(field) { v in
                v.string(1, name)
                v.message(2) { type in
                    type.message(1) { tensor in
                        tensor.int(1, elementType)
                        tensor.message(2) { shape in
                            for d in dims {
                                shape.message(1) { dim in
                                    switch d {
                                    case .fixed(let value): dim.int(1, value)
                                    case .symbol(let name): dim.string(2, name)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for input in graphInputs { valueInfo(&graph, field: 11, name: input.name, elementType: input.elementType, dims: input.dims) }
        for output in graphOutputs { valueInfo(&graph, field: 12, name: output.name, elementType: 1, dims: output.dims) }
        var model = ProtoWriter()
        let ir = opset <= 14 ? 7 : opset <= 18 ? 8 : opset <= 20 ? 9 : 10
        model.int(1, ir)
        model.string(2, "swift-mmoe")
        model.string(3, "1")
        model.message(7) { $0 = graph }
        model.message(8) { o in
            o.string(1, "")
            o.int(2, opset)
        }
        var metadata = [(OnnxExporter.specKey, String(decoding: spec.encodedJSON(), as: UTF8.self))]
        metadata.append(("mmoe.outputs", spec.resolvedOutputs.map(\.name).joined(separator: ",")))
        if let source = spec.metadata?["source_framework"] { metadata.append(("mmoe.source_framework", source)) }
        for (key, value) in metadata {
            model.message(14) { entry in
                entry.string(1, key)
                entry.string(2, value)
            }
        }
        return OnnxExport(model: model.bytes, externalData: external ? side : nil)
    }
}
