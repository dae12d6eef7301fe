import MMoECore

/// Recovers a PyTorch-style state_dict from an exported ONNX graph.
///
/// The graph is walked from its inputs (the features) in topological order. Every node on
/// that walk that consumes a constant as a parameter says what the constant is: `Gather`
/// data is an embedding table, `Gemm`'s B and C (with `transB`, `alpha`, `beta`) and a
/// constant right operand of `MatMul` (plus the `Add` after it) are a linear layer,
/// `PRelu`'s slope is a PReLU weight, `BatchNormalization`'s operands are a batch norm.
///
/// Constants that kept their parameter name (`expert_dnn.0.linears.0.weight`) pass through as
/// they are: the framework importers map them exactly as for a state_dict. Exporters leave
/// some parameters without a name: the legacy exporter turns a bias-less `Linear` into a
/// `MatMul` with an anonymous transposed constant (`onnx::MatMul_247`), the dynamo exporter
/// folds PReLU slopes into constants (`val_154`, shape `[1, 1]`). Those are named after the
/// module the exporter recorded for their node (dynamo's `pkg.torch.onnx.name_scopes`, the
/// legacy exporter's `/module/path/Op` node names) and given the layout the module's
/// state_dict has (`[out, in]` weights, 1-D slopes). Batch norm the exporter already folded
/// into a `Gemm` reads as a linear layer without batch norm, which computes the same.
enum OnnxRecovery {
    /// Whether `name` is one the exporter made up rather than a parameter's name.
    static func isAnonymous(_ name: String) -> Bool {
        name.hasPrefix("onnx::") || name.hasPrefix("val_") || name.hasPrefix("_val_") || name.isEmpty
    }

    static func recover(_ graph: OnnxGraph, path: String) throws(ImportError) -> (SourceCheckpoint, [ImportNote]) {
        var notes: [ImportNote] = []
        if let opset = graph.opset, !(13...20).contains(opset) {
            notes.append(ImportNote(.assumed, "the model imports opset \(opset); exports at opsets 13 to 20 are the ones tested"))
        }
        guard !graph.inputs.isEmpty else {
            throw .malformed(path: path, offset: nil, reason: "the ONNX graph has no inputs besides its initializers")
        }

        // Producers, for following a constant through Identity nodes; consumers, for the Add
        // after a MatMul.
        let (producer, consumers) = graph.links()
        func constant(_ name: String) -> SourceTensor? {
            var name = name
            for _ in 0..<64 {
                if let tensor = graph.constants[name] { return tensor }
                guard let index = producer[name], graph.nodes[index].op == "Identity", let input = graph.nodes[index].inputs.first else {
                    return nil
                }
                name = input
            }
            return nil
        }

        /// A PReLU slope: a constant, or one reached through shape-only nodes.
        func slopeConstant(_ name: String) -> SourceTensor? {
            var name = name
            for _ in 0..<16 {
                if let tensor = constant(name) { return tensor }
                guard let index = producer[name],
                    ["Reshape", "Unsqueeze", "Squeeze", "Expand", "Flatten", "Identity"].contains(graph.nodes[index].op),
                    let input = graph.nodes[index].inputs.first
                else { return nil }
                name = input
            }
            return nil
        }

        /// The activation module after the linear layer that produces `input` (through its
        /// batch norm or bias `Add`), by the frameworks' module layouts: torch-rechub's MLP
        /// `…mlp.<4i>` → `…mlp.<4i+2>` (Linear, BatchNorm1d, activation), DeepCTR-Torch's DNN
        /// `…linears.<k>` → `…activation_layers.<k>`, an `nn.Sequential` `…<i>` → the next
        /// index after the linear (and its batch norm).
        func activationModule(after input: String) -> String? {
            var name = input
            var sawNorm = false
            for _ in 0..<8 {
                guard let index = producer[name] else { return nil }
                let node = graph.nodes[index]
                switch node.op {
                case "BatchNormalization":
                    sawNorm = true
                    name = node.inputs.first ?? ""
                case "Identity":
                    name = node.inputs.first ?? ""
                case "Add":
                    guard let other = node.inputs.first(where: { constant($0) == nil }) else { return nil }
                    name = other
                case "Gemm", "MatMul":
                    guard node.inputs.count >= 2, let weight = constant(node.inputs[1]) else { return nil }
                    let linear = isAnonymous(weight) ? node.scope : moduleOf(weight.name)
                    guard let dot = linear.lastIndex(of: "."), let position = Int(linear[linear.index(after: dot)...]) else { return nil }
                    let parent = String(linear[..<dot])
                    if parent.hasSuffix(".mlp") || parent == "mlp" { return "\(parent).\(position + 2)" }
                    if parent.hasSuffix(".linears") || parent == "linears" {
                        return "\(parent.dropLast("linears".count))activation_layers.\(position)"
                    }
                    return "\(parent).\(position + (sawNorm ? 2 : 1))"
                default:
                    return nil
                }
            }
            return nil
        }

        // The walk from the inputs: nodes whose operands depend on a feature, in topological order.
        var reached = Set(graph.inputs)
        var walked: [Int] = []
        for (index, node) in graph.nodes.enumerated() where node.inputs.contains(where: { reached.contains($0) }) {
            walked.append(index)
            reached.formUnion(node.outputs)
        }
        guard graph.outputs.contains(where: { reached.contains($0) }) else {
            throw .malformed(path: path, offset: nil, reason: "no graph output depends on the inputs \(graph.inputs)")
        }

        // A constant is a named parameter only if it is an initializer with a real name;
        // `Constant` node outputs and exporter-made names are not.
        let initializers = Set(graph.initializers)
        func isAnonymous(_ tensor: SourceTensor) -> Bool { !initializers.contains(tensor.name) || OnnxRecovery.isAnonymous(tensor.name) }
        var recovered: [String: SourceTensor] = [:]
        var replaced = Set<String>()
        var sources: [String: String] = [:]
        var examples: [String] = []
        var foldedNorms = 0
        var unnamed: [String] = []
        var slopesByLayer = 0
        func put(_ values: [Float], shape: [Int], module: String, suffix: String, from source: String, node: OnnxGraph.Node, how: String)
            throws(ImportError)
        {
            // No module recorded (a top-level parameter, or a slice of one): the constant keeps
            // its ONNX name and layout, for a native mapping to name.
            guard !module.isEmpty else {
                if !unnamed.contains(source) { unnamed.append(source) }
                return
            }
            let name = module + "." + suffix
            // A module applied twice (a shared layer) meets the same constant again.
            if recovered[name] != nil, sources[name] == source { return }
            guard recovered[name] == nil, graph.constants[name] == nil else {
                throw .mismatch(
                    path: path,
                    reason: "the unnamed constant '\(source)' of node '\(node.name)' would be '\(name)', which the graph already has")
            }
            recovered[name] = SourceTensor(
                name: name, dtype: .f32, shape: shape, storage: ByteStorage(copying: values.withUnsafeBytes { Array($0) }), byteOffset: 0)
            replaced.insert(source)
            sources[name] = source
            if examples.count < 4 { examples.append("\(source) → \(name)\(how)") }
        }
        func floats(_ tensor: SourceTensor, node: OnnxGraph.Node) throws(ImportError) -> [Float] {
            guard tensor.dtype.isFloat else {
                throw .mismatch(
                    path: path,
                    reason:
                        "node '\(node.name)' (\(node.op)) takes '\(tensor.name)' of type \(tensor.dtype.rawValue) where a float "
                        + "parameter belongs"
                )
            }
            return (0..<tensor.count).map { Float(tensor.value($0)) }
        }

        for index in walked {
            let node = graph.nodes[index]
            let operands = node.inputs.map { $0.isEmpty ? nil : constant($0) }
            switch node.op {
            case "Gemm":
                guard operands.count >= 2, let b = operands[1], operands[0] == nil else { continue }
                guard node.int("transA", default: 0) == 0 else {
                    throw .unsupported(path: path, reason: "node '\(node.name)' (Gemm) transposes its input (transA = 1)")
                }
                let alpha = node.float("alpha", default: 1)
                let beta = node.float("beta", default: 1)
                let c = operands.count >= 3 ? operands[2] : nil
                guard b.shape.count == 2 else {
                    throw .mismatch(path: path, reason: "node '\(node.name)' (Gemm) has a weight '\(b.name)' of shape \(b.shape)")
                }
                let transposed = node.int("transB", default: 0) != 0
                let outputs = transposed ? b.shape[0] : b.shape[1]
                if node.torchOperation.contains("batch_norm") { foldedNorms += 1 }
                let module = node.scope.isEmpty || node.torchOperation.contains("batch_norm") ? moduleOf(b.name) : node.scope
                if isAnonymous(b) {
                    var w = try floats(b, node: node)
                    if !transposed { w = transpose(w, rows: b.shape[0], columns: b.shape[1]) }
                    if alpha != 1 { w = w.map { $0 * alpha } }
                    try put(
                        w, shape: [outputs, w.count / max(outputs, 1)], module: module, suffix: "weight", from: b.name, node: node,
                        how: transposed ? "" : " (transposed)")
                } else if alpha != 1 {
                    // A named parameter passes through as stored; a scaled one would not be the
                    // parameter any more.
                    throw .unsupported(path: path, reason: "node '\(node.name)' (Gemm) scales its weight '\(b.name)' by alpha \(alpha)")
                }
                if let c {
                    if isAnonymous(c) {
                        var bias = try floats(c, node: node)
                        if bias.count == 1, outputs > 1 { bias = Array(repeating: bias[0], count: outputs) }
                        guard bias.count == outputs else {
                            throw .mismatch(
                                path: path,
                                reason: "node '\(node.name)' (Gemm) has a bias '\(c.name)' of shape \(c.shape) for \(outputs) outputs")
                        }
                        if beta != 1 { bias = bias.map { $0 * beta } }
                        let biasModule = isAnonymous(b) ? module : moduleOf(b.name)
                        try put(bias, shape: [outputs], module: biasModule, suffix: "bias", from: c.name, node: node, how: "")
                    } else if beta != 1 {
                        throw .unsupported(path: path, reason: "node '\(node.name)' (Gemm) scales its bias '\(c.name)' by beta \(beta)")
                    }
                }
            case "MatMul":
                guard operands.count == 2, operands[0] == nil, let b = operands[1], isAnonymous(b), b.shape.count == 2 else { continue }
                let (rows, columns) = (b.shape[0], b.shape[1])
                try put(
                    transpose(try floats(b, node: node), rows: rows, columns: columns), shape: [columns, rows], module: node.scope,
                    suffix: "weight", from: b.name, node: node, how: " (transposed)")
                // A Linear applied to a 3-D input: MatMul, then Add of the bias.
                if let output = node.outputs.first, let next = consumers[output], next.count == 1, graph.nodes[next[0]].op == "Add" {
                    let add = graph.nodes[next[0]]
                    if let other = add.inputs.first(where: { $0 != output }), let bias = constant(other), isAnonymous(bias),
                        bias.count == columns
                    {
                        try put(
                            try floats(bias, node: add), shape: [columns], module: node.scope, suffix: "bias", from: bias.name, node: add,
                            how: "")
                    }
                }
            case "PRelu":
                // The slope, whatever its shape ([], [1], [1, 1], [C], ...) and origin (an
                // initializer, a Constant node, or either behind Reshape/Unsqueeze/Expand).
                // A slope whose name is not a module's parameter path is the exporter's too.
                guard node.inputs.count == 2, operands[0] == nil, let slope = slopeConstant(node.inputs[1]),
                    isAnonymous(slope) || !slope.name.contains(".")
                else { continue }
                let values = try floats(slope, node: node)
                var module = node.scope
                if module.isEmpty, let input = node.inputs.first, let owner = activationModule(after: input) {
                    // No module recorded (node metadata stripped): named by the layer before it.
                    module = owner
                    slopesByLayer += 1
                }
                try put(values, shape: [values.count], module: module, suffix: "weight", from: slope.name, node: node, how: "")
            case "BatchNormalization":
                guard operands.count >= 5, operands[0] == nil else { continue }
                for (position, suffix) in [(1, "weight"), (2, "bias"), (3, "running_mean"), (4, "running_var")] {
                    guard let tensor = operands[position], isAnonymous(tensor) else { continue }
                    let values = try floats(tensor, node: node)
                    try put(values, shape: [values.count], module: node.scope, suffix: suffix, from: tensor.name, node: node, how: "")
                }
            case "Gather":
                guard operands.count == 2, let table = operands[0], operands[1] == nil, isAnonymous(table), table.shape.count == 2,
                    table.dtype.isFloat
                else { continue }
                try put(
                    try floats(table, node: node), shape: table.shape, module: node.scope, suffix: "weight", from: table.name, node: node,
                    how: "")
            default:
                continue
            }
        }

        var tensors: [SourceTensor] = []
        for name in graph.initializers where !replaced.contains(name) {
            if let tensor = graph.constants[name] { tensors.append(tensor) }
        }
        tensors += recovered.keys.sorted().compactMap { recovered[$0] }
        if !recovered.isEmpty {
            notes.append(
                ImportNote(
                    .inferred,
                    "named \(recovered.count) parameters the exporter left unnamed after the modules their nodes belong to: "
                        + "\(examples.joined(separator: ", "))\(recovered.count > examples.count ? ", ..." : "")"
                ))
        }
        if !unnamed.isEmpty {
            notes.append(
                ImportNote(
                    .inferred,
                    "\(unnamed.count) parameters have no name and no module in the graph and keep their ONNX names and layout ("
                        + unnamed.prefix(6).joined(separator: ", ") + (unnamed.count > 6 ? ", ..." : "")
                        + "); a native mapping can name them"
                ))
        }
        if slopesByLayer > 0 {
            notes.append(
                ImportNote(
                    .inferred, "\(slopesByLayer) PReLU slopes without a recorded module were named after the linear layer before them"))
        }
        if foldedNorms > 0 {
            notes.append(
                ImportNote(
                    .inferred,
                    "\(foldedNorms) batch norms were folded into their linear layers by the exporter; they convert as linear "
                        + "layers without batch norm"
                ))
        }
        var checkpoint = SourceCheckpoint(tensors: tensors, path: path, format: "onnx")
        checkpoint.onnxFacts = OnnxFacts.gather(from: graph, walked: walked, producer: producer, consumers: consumers)
        checkpoint.onnxFacts?.unnamedParameters = Set(unnamed)
        return (checkpoint, notes)
    }

    /// The module of a parameter name (`a.b.weight` → `a.b`).
    static func moduleOf(_ name: String) -> String {
        guard let dot = name.lastIndex(of: ".") else { return "" }
        return String(name[..<dot])
    }

    static func transpose(_ values: [Float], rows: Int, columns: Int) -> [Float] {
        var out = [Float](repeating: 0, count: values.count)
        for r in 0..<rows {
            for c in 0..<columns { out[c * rows + r] = values[r * columns + c] }
        }
        return out
    }
}
