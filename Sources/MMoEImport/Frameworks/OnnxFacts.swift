/// What an exported graph says about the model beyond its parameters, for converting an
/// ONNX file without a conversion spec: the features (one graph input per feature, as
/// torch-rechub's export helper and dict-input models give), the activation each module
/// applies, and which task outputs pass through a sigmoid.
struct OnnxFacts: Sendable {
    struct Feature: Sendable, Equatable {
        var name: String
        /// dense, sparse or sequence.
        var kind: String
        /// The embedding table's initializer name (sparse and sequence features).
        var table: String?
        /// Dense width.
        var width = 1
        var maxLength: Int?
        /// sum, mean or max.
        var pooling: String?
        var paddingID: Int?
        /// For features sliced out of one packed input: their first column.
        var column: Int?
    }

    /// The features in the order the model concatenates them (one per graph input), or in
    /// column order (slices of one packed input); nil when the graph shows neither.
    var features: [Feature]?
    /// Module path → relu, sigmoid, leakyrelu or tanh (the first such node of the module).
    var activations: [String: String] = [:]
    /// For each column of the graph's output: whether a sigmoid produces it.
    var sigmoidOutputs: [Bool]?
    /// Constants used as parameters that have neither a name nor a module (kept under their
    /// ONNX names; a conversion that leaves them unused is refused).
    var unnamedParameters: Set<String> = []
    /// Distinct PReLU slopes on the walk (a layer applied twice counts once).
    var preluSlopes: Set<String> = []

    /// Operators that pass ids or values through unchanged in meaning.
    static let transparent: Set<String> = ["Cast", "Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Expand"]

    static func gather(from graph: OnnxGraph, walked: [Int], producer: [String: Int], consumers: [String: [Int]]) -> OnnxFacts {
        var facts = OnnxFacts()
        let activationNames = ["Relu": "relu", "Sigmoid": "sigmoid", "LeakyRelu": "leakyrelu", "Tanh": "tanh"]
        for index in walked {
            let node = graph.nodes[index]
            if let name = activationNames[node.op], !node.scope.isEmpty, facts.activations[node.scope] == nil {
                facts.activations[node.scope] = name
            }
            if node.op == "PRelu", node.inputs.count == 2 { facts.preluSlopes.insert(node.inputs[1]) }
        }

        // Values reached from `start` through transparent operators (a bounded walk).
        func aliases(of start: String) -> [String] {
            var found = [start]
            var frontier = [start]
            for _ in 0..<4 {
                var next: [String] = []
                for value in frontier {
                    for index in consumers[value] ?? [] where transparent.contains(graph.nodes[index].op) {
                        next += graph.nodes[index].outputs
                    }
                }
                found += next
                frontier = next
                if frontier.isEmpty || found.count > 64 { break }
            }
            return found
        }

        if graph.inputs.count == 1, let type = graph.inputTypes[graph.inputs[0]], type.isFloat, type.dims.count == 2 {
            facts.features = packedColumns(graph.inputs[0], graph: graph, consumers: consumers, aliases: aliases)
        } else {
            facts.features = perInputFeatures(graph: graph, consumers: consumers, aliases: aliases)
        }

        // Task heads: the columns of the first output's Concat.
        if let output = graph.outputs.first, let index = producer[output], graph.nodes[index].op == "Concat" {
            facts.sigmoidOutputs = graph.nodes[index].inputs.map { value in
                var value = value
                for _ in 0..<8 {
                    guard let p = producer[value] else { return false }
                    let node = graph.nodes[p]
                    if node.op == "Sigmoid" { return true }
                    guard transparent.contains(node.op) || node.op == "Slice", let first = node.inputs.first else { return false }
                    value = first
                }
                return false
            }
        }
        return facts
    }

    /// The embedding table a lookup of `ids` reads, the lookup's output, and the padding id a
    /// mask compares the ids with.
    static func lookup(_ ids: String, graph: OnnxGraph, consumers: [String: [Int]], aliases: (String) -> [String]) -> (
        table: String, output: String?, padding: Int?
    )? {
        var table: String?
        var gatherOutput: String?
        var padding: Int?
        for value in aliases(ids) {
            for index in consumers[value] ?? [] {
                let node = graph.nodes[index]
                if node.op == "Gather", node.inputs.count == 2, node.inputs[1] == value, let data = graph.constants[node.inputs[0]],
                    data.shape.count == 2, data.dtype.isFloat
                {
                    table = table ?? data.name
                    gatherOutput = gatherOutput ?? node.outputs.first
                } else if node.op == "Equal", let other = node.inputs.first(where: { $0 != value }), let constant = graph.constants[other],
                    constant.count == 1
                {
                    padding = Int(exactly: constant.value(0))
                }
            }
        }
        return table.map { ($0, gatherOutput, padding) }
    }

    /// Features sliced out of one packed float input (DeepCTR-Torch's `x`): each `Slice` of
    /// the input's columns is a feature; a slice whose ids feed a table lookup is sparse (one
    /// column) or a sequence, any other slice is dense. In column order.
    static func packedColumns(_ input: String, graph: OnnxGraph, consumers: [String: [Int]], aliases: (String) -> [String]) -> [Feature]? {
        func scalar(_ name: String?) -> Int? {
            guard let name, let tensor = graph.constants[name], tensor.count == 1, !tensor.dtype.isFloat else { return nil }
            return Int(exactly: tensor.value(0))
        }
        var features: [Feature] = []
        var columns = Set<Int>()
        for index in consumers[input] ?? [] {
            let node = graph.nodes[index]
            guard node.op == "Slice", node.inputs.count >= 4, node.inputs[0] == input, let start = scalar(node.inputs[1]),
                let end = scalar(node.inputs[2]),
                let axis = scalar(node.inputs[3]), axis == 1 || axis == -1, node.inputs.count < 5 || scalar(node.inputs[4]) == 1,
                start >= 0, end > start, end - start <= 1 << 20, let output = node.outputs.first
            else { return nil }
            guard columns.insert(start).inserted else { continue }
            if let (table, gathered, padding) = lookup(output, graph: graph, consumers: consumers, aliases: aliases) {
                if end - start == 1 {
                    features.append(Feature(name: "", kind: "sparse", table: table, column: start))
                } else {
                    features.append(
                        Feature(
                            name: "", kind: "sequence", table: table, maxLength: end - start,
                            pooling: pooling(after: gathered, graph: graph, consumers: consumers),
                            paddingID: padding, column: start))
                }
            } else {
                features.append(Feature(name: "", kind: "dense", width: end - start, column: start))
            }
        }
        guard !features.isEmpty else { return nil }
        return features.sorted { ($0.column ?? 0) < ($1.column ?? 0) }
    }

    /// One feature per graph input (dict-input models, torch-rechub's export helper).
    static func perInputFeatures(graph: OnnxGraph, consumers: [String: [Int]], aliases: (String) -> [String]) -> [Feature]? {
        var features: [Feature] = []
        for input in graph.inputs {
            guard let type = graph.inputTypes[input], type.dims.count == 1 || type.dims.count == 2 else { return nil }
            if type.isFloat {
                if type.dims.count == 2 {
                    guard let width = type.dims[1] else { return nil }
                    features.append(Feature(name: input, kind: "dense", width: width))
                } else {
                    features.append(Feature(name: input, kind: "dense"))
                }
                continue
            }
            guard type.isInteger, let (table, gathered, padding) = lookup(input, graph: graph, consumers: consumers, aliases: aliases)
            else { return nil }
            if type.dims.count == 1 {
                features.append(Feature(name: input, kind: "sparse", table: table))
            } else {
                features.append(
                    Feature(
                        name: input, kind: "sequence", table: table, maxLength: type.dims[1],
                        pooling: pooling(after: gathered, graph: graph, consumers: consumers), paddingID: padding))
            }
        }
        return concatOrder(features, graph: graph, consumers: consumers)
    }

    /// The features in the order the model concatenates them (graph inputs may be listed in
    /// any order). For each feature, the Concat nodes its values reach before the first layer
    /// and the slot they enter; two features are ordered by the earliest Concat they reach in
    /// different slots.
    static func concatOrder(_ features: [Feature], graph: OnnxGraph, consumers: [String: [Int]]) -> [Feature] {
        func slots(from input: String) -> [Int: Int] {
            var result: [Int: Int] = [:]
            var seen: Set<String> = [input]
            var frontier = [input]
            var steps = 0
            while !frontier.isEmpty, steps < 4096 {
                var next: [String] = []
                for value in frontier {
                    for index in consumers[value] ?? [] {
                        steps += 1
                        let node = graph.nodes[index]
                        let isLayer =
                            (node.op == "Gemm" || node.op == "MatMul") && node.inputs.dropFirst().contains { graph.constants[$0] != nil }
                        if isLayer || node.op == "Softmax" { continue }
                        if node.op == "Concat", result[index] == nil, let slot = node.inputs.firstIndex(of: value) { result[index] = slot }
                        for output in node.outputs where seen.insert(output).inserted { next.append(output) }
                    }
                }
                frontier = next
            }
            return result
        }
        let reached = features.map { slots(from: $0.name) }
        func precedes(_ a: Int, _ b: Int) -> Bool? {
            let shared = Set(reached[a].keys).intersection(reached[b].keys).sorted()
            for concat in shared {
                if let slotA = reached[a][concat], let slotB = reached[b][concat], slotA != slotB { return slotA < slotB }
            }
            return nil
        }
        // Insertion sort: stable, and tolerant of pairs the graph does not order.
        var order: [Int] = []
        for i in features.indices {
            var at = order.count
            while at > 0, precedes(i, order[at - 1]) == true { at -= 1 }
            order.insert(i, at: at)
        }
        return order.map { features[$0] }
    }

    /// The pooling a sequence's embeddings go through: max if a ReduceMax follows the lookup,
    /// mean if a division (or ReduceMean) does, else sum. The walk stops at the next layer.
    static func pooling(after start: String?, graph: OnnxGraph, consumers: [String: [Int]]) -> String {
        guard let start else { return "sum" }
        var seen = Set<String>()
        var frontier = [start]
        var ops = Set<String>()
        for _ in 0..<10 {
            var next: [String] = []
            for value in frontier where seen.insert(value).inserted {
                for index in consumers[value] ?? [] {
                    let node = graph.nodes[index]
                    let isLayer =
                        (node.op == "Gemm" || node.op == "MatMul") && node.inputs.dropFirst().contains { graph.constants[$0] != nil }
                    if isLayer || node.op == "Concat" || node.op == "Gather" { continue }
                    ops.insert(node.op)
                    next += node.outputs
                }
            }
            frontier = next
            if frontier.isEmpty { break }
        }
        if ops.contains("ReduceMax") { return "max" }
        if ops.contains("Div") || ops.contains("ReduceMean") { return "mean" }
        return "sum"
    }
}
