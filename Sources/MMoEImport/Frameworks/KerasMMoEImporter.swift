import MMoECore

/// Models built around the keras-mmoe `MMoE` layer: one layer holding every expert
/// (`expert_kernel [in, units, E]`, `expert_bias [units, E]`) and one gate per task
/// (`gate_kernel_task_<t> [in, E]`, `gate_bias_task_<t> [E]`), followed by per-task towers of
/// Dense layers the conversion spec names (census example: 2-class softmax heads).
/// Keras 3 files keep the custom layer's variables by position (`var0` ...), in that order.
struct KerasMMoEImporter {
    let conversion: ConversionSpec
    let path: String

    func dense(_ layer: String, keys: inout CheckpointKeys) throws(ImportError) -> LayerPart {
        let weight = try NativeMappingImporter.transposed(try keys.take("\(layer)/kernel"), name: "\(layer)/kernel")
        let bias = keys.has("\(layer)/bias") ? try keys.take("\(layer)/bias", shape: [weight.shape[0]]) : nil
        return .linear(weight: weight, bias: bias)
    }

    /// The slice `[:, :, e]` of a `[in, units, E]` kernel as a `[units, in]` linear weight.
    static func expertWeight(_ kernel: Tensor, expert e: Int) throws(ModelError) -> Tensor {
        let (inputs, units, experts) = (kernel.shape[0], kernel.shape[1], kernel.shape[2])
        let values = kernel.floats()
        var weight = [Float](repeating: 0, count: units * inputs)
        for i in 0..<inputs {
            for u in 0..<units { weight[u * inputs + i] = values[(i * units + u) * experts + e] }
        }
        return try Tensor(float32: weight, shape: [units, inputs])
    }

    mutating func build(keys: inout CheckpointKeys, builder: inout CanonicalBuilder, notes: inout [ImportNote]) throws(ImportError)
        -> ModelSpec
    {
        let args = conversion.args
        let layer = try args.string("mmoe_layer") ?? "mmoe"
        let taskSpecs = conversion.tasks
        guard !taskSpecs.isEmpty else {
            throw .mismatch(path: conversion.file, reason: "keras-mmoe needs \"tasks\" with each task's tower layer names")
        }
        let positional = keys.has("\(layer)/var0")
        func name(_ keras2: String, _ position: Int) -> String { positional ? "\(layer)/var\(position)" : "\(layer)/\(keras2)" }
        guard let kernelShape = keys.shape(name("expert_kernel", 0)), kernelShape.count == 3 else {
            throw .mismatch(path: path, reason: "no expert kernel [in, units, experts] in layer '\(layer)'")
        }
        let (inputs, units, experts) = (kernelShape[0], kernelShape[1], kernelShape[2])
        let tasks = taskSpecs.count
        let hasExpertBias = keys.shape(name("expert_bias", 1)) == [units, experts]
        let gateBase = hasExpertBias ? 2 : 1
        for (key, value) in [("units", units), ("num_experts", experts)] {
            if let given = try args.int(key), given != value {
                throw .mismatch(path: path, reason: "\(key) is \(given) but the checkpoint has \(value)")
            }
        }
        // Features in the order the model concatenates them: dense values as they are, sparse
        // ids and padded sequences through the Keras Embedding layer each names
        // (`embedding_name`, default the feature's name; id 0 is padding, as `mask_zero` has it;
        // a sequence's masked mean divides by the number of ids, as GlobalAveragePooling1D does).
        let convention = CheckpointConverter.InputConvention(
            tableKey: { "\($0)/embeddings" }, owner: { $0.embeddingName ?? $0.name }, defaultPooling: "mean", defaultPadding: 0,
            meanEpsilon: 0, emptyMax: 0, defaultMaxLength: 256)
        let (tables, features) = try CheckpointConverter.buildInputs(
            conversion.features, convention: convention, keys: &keys, builder: &builder, notes: &notes, path: path)
        let width = features.reduce(0) { total, feature in
            total + (feature.kind == .dense ? feature.width ?? 1 : tables.first { $0.name == feature.table }?.dim ?? 0)
        }
        guard width == inputs else {
            throw .mismatch(path: path, reason: "the features give \(width) input values, the keras-mmoe layer reads \(inputs)")
        }
        let kernel = try keys.take(name("expert_kernel", 0))
        let bias = hasExpertBias ? try keys.take(name("expert_bias", 1)).floats() : nil
        let activation = try args.string("expert_activation") ?? "relu"
        let act: Layer
        switch activation {
        case "relu": act = .relu
        case "sigmoid": act = .sigmoid
        case "tanh": act = .tanh
        case "linear": act = .identity
        default: throw .unsupported(path: conversion.file, reason: "expert activation '\(activation)'")
        }
        var expertMLPs: [MLP] = []
        for e in 0..<experts {
            let weight: Tensor
            var b: Tensor? = nil
            do throws(ModelError) {
                weight = try KerasMMoEImporter.expertWeight(kernel, expert: e)
                if let bias { b = try Tensor(float32: (0..<units).map { bias[$0 * experts + e] }, shape: [units]) }
            } catch {
                throw .invalidModel(path: path, error)
            }
            expertMLPs.append(try builder.mlp("experts.\(e)", [.linear(weight: weight, bias: b), .plain(act)]))
        }
        var gates: [MLP] = []
        for t in 0..<tasks {
            let gateKernel = try NativeMappingImporter.transposed(
                try keys.take(name("gate_kernel_task_\(t)", gateBase + t), shape: [inputs, experts]), name: "gate \(t)")
            let biasKey = name("gate_bias_task_\(t)", gateBase + tasks + t)
            let gateBias = keys.has(biasKey) ? try keys.take(biasKey, shape: [experts]) : nil
            gates.append(try builder.mlp("gates.\(t)", [.linear(weight: gateKernel, bias: gateBias)]))
        }
        var heads: [TaskHead] = []
        var towers: [MLP] = []
        var classOutputs: [OutputSpec] = []
        for (t, task) in taskSpecs.enumerated() {
            guard let taskName = try task.string("name"), let layers = try task.strings("layers"), !layers.isEmpty else {
                throw task.fail("layers", "each task needs its name and the names of its tower's Dense layers")
            }
            let hidden = try task.string("activation") ?? "relu"
            var parts: [LayerPart] = []
            for (i, dense) in layers.enumerated() {
                parts.append(try self.dense(dense, keys: &keys))
                if i < layers.count - 1 {
                    switch hidden {
                    case "relu": parts.append(.plain(.relu))
                    case "sigmoid": parts.append(.plain(.sigmoid))
                    case "tanh": parts.append(.plain(.tanh))
                    case "linear": break
                    default: throw .unsupported(path: conversion.file, reason: "tower activation '\(hidden)'")
                    }
                }
            }
            let headName = try task.string("head", "type") ?? "softmax"
            let head: HeadKind
            switch headName {
            case "softmax", "softmax2": head = .softmax
            case "sigmoid", "binary": head = .sigmoid
            case "identity", "regression": head = .identity
            default: throw task.fail("head", "must be softmax, sigmoid or identity")
            }
            if head == .softmax, case .linear(let weight, _)? = parts.last, weight.shape.first == 2 {
                // Two classes: the probability of class 1 as a one-value output for ranking.
                classOutputs.append(OutputSpec(name: "\(taskName)_positive", task: taskName, classIndex: 1))
            }
            towers.append(try builder.mlp("towers.\(t)", parts))
            heads.append(TaskHead(name: taskName, head: head))
        }
        if !classOutputs.isEmpty {
            let names = classOutputs.map(\.name).joined(separator: ", ")
            notes.append(ImportNote(.inferred, "softmax heads output every class probability [N, C]; \(names): the probability of class 1"))
        }
        notes.append(ImportNote(.inferred, "\(experts) experts of \(units) units over \(inputs) inputs, \(tasks) tasks"))
        return ModelSpec(
            name: "keras-mmoe", tables: tables, features: features,
            architecture: Architecture(type: .mmoe, experts: expertMLPs, gates: gates, towers: towers),
            tasks: heads, outputs: classOutputs.isEmpty ? nil : heads.map { OutputSpec(name: $0.name) } + classOutputs,
            metadata: ["source_framework": "keras-mmoe"])
    }
}
