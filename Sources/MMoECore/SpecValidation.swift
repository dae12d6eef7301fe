/// A tensor the spec needs: canonical name, shape and the dtypes allowed there.
public struct TensorRequirement: Sendable, Equatable {
    /// Canonical name (see `TensorNames`).
    public let name: String
    /// Exact shape.
    public let shape: [Int]
    /// Allowed dtypes.
    public let allowed: [DType]
}

/// Canonical tensor names: the one naming scheme every importer and codec uses.
public enum TensorNames {
    /// `embeddings.<table>.weight` `[vocab_size, dim]`.
    public static func embedding(_ table: String) -> String { "embeddings.\(table).weight" }
    /// `embeddings.<table>.scale` `[vocab_size]`: per-row scales of an i8 table.
    public static func embeddingScale(_ table: String) -> String { "embeddings.\(table).scale" }
    /// The optional per-row offsets `[vocab_size]` (f32) of an int8 table: value = code · scale + offset.
    public static func embeddingOffset(_ table: String) -> String { "embeddings.\(table).offset" }
    /// `<mlp>.layers.<i>.<parameter>`.
    public static func layer(_ mlp: String, _ index: Int, _ parameter: String) -> String {
        "\(mlp).layers.\(index).\(parameter)"
    }
    /// `aits.<index>.<part>.weight` `[d, d]` (part: query, key, value): the attention transfer
    /// into task `index + 1` of an AITM.
    public static func attention(_ index: Int, _ part: String) -> String { "aits.\(index).\(part).weight" }
    /// The parts of an attention transfer, in the order their weights are fused.
    public static let attentionParts = ["query", "key", "value"]
    /// `heads.<task index>.bias` `[1]`.
    public static func headBias(_ task: Int) -> String { "heads.\(task).bias" }
}

/// Limits on counts in a spec, so that a hostile spec cannot ask for unbounded work.
public enum SpecLimits {
    /// Largest layer width, table dim or dense width.
    public static let maxWidth = 1 << 20
    /// Largest concatenated input width.
    public static let maxInputWidth = 1 << 24
    /// Most layers in one MLP.
    public static let maxLayers = 256
    /// Most experts in one mixture.
    public static let maxExperts = 1024
    /// Most tasks.
    public static let maxTasks = 256
    /// Most PLE levels.
    public static let maxLevels = 64
    /// Most features or tables.
    public static let maxFeatures = 100_000
    /// Longest sequence feature.
    public static let maxSequenceLength = 1 << 16
    /// Largest vocabulary.
    public static let maxVocab = 1 << 40
    /// Longest name, in UTF-8 bytes.
    public static let maxNameBytes = 256
}

/// What validating a spec's structure yields: the input layout and every tensor it needs.
public struct ModelLayout: Sendable {
    /// Width of the concatenated input.
    public let inputWidth: Int
    /// Column offset of each feature (by name) in the concatenated input.
    public let featureOffsets: [String: Int]
    /// Every non-embedding tensor the spec needs, in a stable order.
    public let requirements: [TensorRequirement]
    /// Per task, the width of the representation its tower reads.
    public let towerInputWidths: [Int]
    /// Values per example of each output, in output order: 1, or C for a softmax task's
    /// class probabilities.
    public let outputWidths: [Int]
}

extension Architecture {
    /// Calls `body` with every MLP's canonical path (the same paths as `ModelSpec.mlpPaths`),
    /// letting it change the MLP in place.
    public mutating func forEachMLP(_ body: (String, inout MLP) -> Void) {
        func each(_ list: inout [MLP]?, _ prefix: String) {
            guard var items = list else { return }
            for i in items.indices { body("\(prefix).\(i)", &items[i]) }
            list = items
        }
        func one(_ item: inout MLP?, _ path: String) {
            guard var value = item else { return }
            body(path, &value)
            item = value
        }
        one(&bottom, "bottom")
        each(&experts, "experts")
        one(&gate, "gate")
        each(&gates, "gates")
        if var all = levels {
            for l in all.indices {
                for t in all[l].specificExperts.indices {
                    for j in all[l].specificExperts[t].indices {
                        body("levels.\(l).specific_experts.\(t).\(j)", &all[l].specificExperts[t][j])
                    }
                }
                for k in all[l].sharedExperts.indices { body("levels.\(l).shared_experts.\(k)", &all[l].sharedExperts[k]) }
                for t in all[l].specificGates.indices { body("levels.\(l).specific_gates.\(t)", &all[l].specificGates[t]) }
                one(&all[l].sharedGate, "levels.\(l).shared_gate")
            }
            levels = all
        }
        each(&bottoms, "bottoms")
        each(&infoGates, "info_gates")
        for t in towers.indices { body("towers.\(t)", &towers[t]) }
    }
}

extension ModelSpec {
    /// The MLP paths of the architecture with the input width each reads; used by the
    /// runtime and the tools. Call after `validateStructure()`.
    public var mlpPaths: [(path: String, mlp: MLP)] {
        // One enumeration of the architecture's MLPs and their paths: `forEachMLP`'s.
        var result: [(path: String, mlp: MLP)] = []
        var copy = architecture
        copy.forEachMLP { path, mlp in result.append((path, mlp)) }
        return result
    }

    /// Checks everything that does not need the tensors: names, references, counts and
    /// widths. Returns the layout; throws naming the JSON path of the first problem.
    public func validateStructure() throws(ModelError) -> ModelLayout {
        var builder = LayoutBuilder()
        return try builder.build(self)
    }

    /// Checks the tensors against the spec: every needed tensor present with its exact shape
    /// and an allowed dtype, no extra tensors, i8 tables with their scales. Returns the layout.
    @discardableResult
    public func validate(tensors: TensorStore) throws(ModelError) -> ModelLayout {
        try validate(tensors: tensors, layout: validateStructure())
    }

    /// `validate(tensors:)` with the layout `validateStructure()` already returned for this spec
    /// (opening a file checks the structure as it decodes the spec; building it again cost as
    /// much as a tenth of a small model's load).
    @discardableResult
    package func validate(tensors: TensorStore, layout: ModelLayout) throws(ModelError) -> ModelLayout {
        var expected = Set<String>()
        func check(_ requirement: TensorRequirement) throws(ModelError) {
            expected.insert(requirement.name)
            guard let tensor = tensors[requirement.name] else {
                throw .missingTensor(name: requirement.name, expectedShape: requirement.shape)
            }
            guard tensor.shape == requirement.shape else {
                throw .shapeMismatch(tensor: requirement.name, expected: requirement.shape, actual: tensor.shape)
            }
            guard requirement.allowed.contains(tensor.dtype) else {
                throw .dtypeMismatch(tensor: requirement.name, allowed: requirement.allowed, actual: tensor.dtype)
            }
        }
        for table in tables {
            let weight = TensorNames.embedding(table.name)
            try check(TensorRequirement(name: weight, shape: [table.vocabSize, table.dim], allowed: [.f32, .f16, .bf16, .i8]))
            if tensors[weight]?.dtype == .i8 {
                try check(TensorRequirement(name: TensorNames.embeddingScale(table.name), shape: [table.vocabSize], allowed: [.f32]))
                if tensors[TensorNames.embeddingOffset(table.name)] != nil {
                    try check(TensorRequirement(name: TensorNames.embeddingOffset(table.name), shape: [table.vocabSize], allowed: [.f32]))
                }
            }
        }
        for requirement in layout.requirements { try check(requirement) }
        for name in tensors.names where !expected.contains(name) { throw .unexpectedTensor(name: name) }
        return layout
    }
}

/// Walks a spec once, checking it and collecting tensor requirements.
private struct LayoutBuilder {
    var requirements: [TensorRequirement] = []
    static let floats: [DType] = [.f32, .f16, .bf16]

    func fail(_ path: String, _ reason: String) -> ModelError { .invalidSpec(path: path, reason: reason) }

    func checkName(_ name: String, at path: String, allowDots: Bool) throws(ModelError) {
        guard !name.isEmpty, name.utf8.count <= SpecLimits.maxNameBytes else {
            throw fail(path, "a name must be 1 to \(SpecLimits.maxNameBytes) bytes")
        }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw fail(path, "name \"\(name)\" contains a control character")
        }
        if !allowDots {
            guard !name.contains("."), !name.contains("/") else {
                throw fail(path, "name \"\(name)\" may not contain '.' or '/' (it is part of tensor names)")
            }
        }
    }

    func checkWidth(_ value: Int, at path: String, what: String) throws(ModelError) {
        guard value >= 1, value <= SpecLimits.maxWidth else {
            throw fail(path, "\(what) must be between 1 and \(SpecLimits.maxWidth), got \(value)")
        }
    }

    func checkEps(_ eps: Double, at path: String) throws(ModelError) {
        guard eps.isFinite, eps >= 0 else { throw fail(path, "eps must be finite and >= 0, got \(eps)") }
    }

    mutating func require(_ name: String, _ shape: [Int]) {
        requirements.append(TensorRequirement(name: name, shape: shape, allowed: LayoutBuilder.floats))
    }

    /// Checks one MLP reading `width` values; returns its output width.
    mutating func mlp(_ mlp: MLP, path: String, jsonPath: String, width inputWidth: Int) throws(ModelError) -> Int {
        guard mlp.layers.count <= SpecLimits.maxLayers else {
            throw fail(jsonPath, "more than \(SpecLimits.maxLayers) layers")
        }
        var width = inputWidth
        for (i, layer) in mlp.layers.enumerated() {
            let at = "\(jsonPath).layers[\(i)]"
            let name = { (parameter: String) in TensorNames.layer(path, i, parameter) }
            switch layer {
            case .linear(let units, let bias):
                try checkWidth(units, at: at, what: "units")
                require(name("weight"), [units, width])
                if bias { require(name("bias"), [units]) }
                width = units
            case .batchNorm(let eps, let affine):
                try checkEps(eps, at: at)
                if affine {
                    require(name("weight"), [width])
                    require(name("bias"), [width])
                }
                require(name("running_mean"), [width])
                require(name("running_var"), [width])
            case .layerNorm(let eps, let affine):
                try checkEps(eps, at: at)
                if affine {
                    require(name("weight"), [width])
                    require(name("bias"), [width])
                }
            case .prelu(let channels):
                guard channels == 1 || channels == width else {
                    throw fail(at, "prelu channels must be 1 or the layer width \(width), got \(channels)")
                }
                require(name("weight"), [channels])
            case .leakyRelu(let slope):
                guard slope.isFinite else { throw fail(at, "leaky_relu slope must be finite") }
            case .dice(let variant, let eps):
                try checkEps(eps, at: at)
                switch variant {
                case .deepctr:
                    require(name("alpha"), [width])
                    require(name("running_mean"), [width])
                    require(name("running_var"), [width])
                case .deepctrTorch:
                    require(name("alpha"), [width])
                    require(name("weight"), [width])
                    require(name("bias"), [width])
                    require(name("running_mean"), [width])
                    require(name("running_var"), [width])
                case .rechub:
                    require(name("alpha"), [1])
                }
            case .dropout(let rate):
                if let rate, !(rate >= 0 && rate <= 1) { throw fail(at, "dropout rate must be in [0, 1]") }
            case .relu, .sigmoid, .tanh, .gelu, .silu, .identity:
                break
            }
        }
        return width
    }

    /// Checks a gate over `experts` experts.
    mutating func gate(_ gate: MLP, path: String, jsonPath: String, width: Int, experts: Int) throws(ModelError) {
        let out = try mlp(gate, path: path, jsonPath: jsonPath, width: width)
        guard out == experts else {
            throw fail(jsonPath, "the gate outputs \(out) values but mixes \(experts) experts")
        }
    }

    /// Checks experts reading `width`; returns their common output width.
    mutating func experts(_ experts: [MLP], paths: [String], jsonPaths: [String], width: Int, at jsonPath: String)
        throws(ModelError) -> Int?
    {
        var common: Int?
        for (index, expert) in experts.enumerated() {
            let out = try mlp(expert, path: paths[index], jsonPath: jsonPaths[index], width: width)
            if let existing = common, existing != out {
                throw fail(jsonPaths[index], "expert output width \(out) differs from the other experts' \(existing)")
            }
            common = out
        }
        return common
    }

    mutating func build(_ spec: ModelSpec) throws(ModelError) -> ModelLayout {
        // Tables.
        guard spec.tables.count <= SpecLimits.maxFeatures, spec.features.count <= SpecLimits.maxFeatures else {
            throw fail("features", "more than \(SpecLimits.maxFeatures) features or tables")
        }
        var tableDims: [String: Int] = [:]
        for (i, table) in spec.tables.enumerated() {
            let at = "tables[\(i)]"
            try checkName(table.name, at: at + ".name", allowDots: false)
            guard tableDims[table.name] == nil else { throw fail(at + ".name", "duplicate table \"\(table.name)\"") }
            guard table.vocabSize >= 1, table.vocabSize <= SpecLimits.maxVocab else {
                throw fail(at + ".vocab_size", "vocab_size must be between 1 and \(SpecLimits.maxVocab)")
            }
            try checkWidth(table.dim, at: at + ".dim", what: "dim")
            guard Tensor.checkedElementCount([table.vocabSize, table.dim, 4]) != nil else {
                throw fail(at, "table of \(table.vocabSize) x \(table.dim) is too large")
            }
            tableDims[table.name] = table.dim
        }
        // Features.
        var widths: [String: Int] = [:]
        for (i, feature) in spec.features.enumerated() {
            let at = "features[\(i)]"
            try checkName(feature.name, at: at + ".name", allowDots: true)
            guard widths[feature.name] == nil else { throw fail(at + ".name", "duplicate feature \"\(feature.name)\"") }
            switch feature.kind {
            case .dense:
                let width = feature.width ?? 1
                try checkWidth(width, at: at + ".width", what: "width")
                guard feature.table == nil, feature.maxLength == nil, feature.pooling == nil, feature.vocabulary == nil else {
                    throw fail(at, "a dense feature has no table, max_length, pooling or vocabulary")
                }
                if let scaler = feature.scaler {
                    guard scaler.shift.count == scaler.scale.count, scaler.shift.count == 1 || scaler.shift.count == width else {
                        throw fail(at + ".scaler", "needs one shift and one scale, or one per column (\(width))")
                    }
                    guard scaler.shift.allSatisfy(\.isFinite), scaler.scale.allSatisfy({ $0.isFinite && $0 != 0 }) else {
                        throw fail(at + ".scaler", "shifts must be finite and scales finite and non-zero")
                    }
                }
                widths[feature.name] = width
            case .sparse, .sequence:
                guard let table = feature.table else { throw fail(at + ".table", "a \(feature.kind.rawValue) feature needs a table") }
                guard let dim = tableDims[table] else { throw fail(at + ".table", "unknown table \"\(table)\"") }
                guard feature.width == nil || feature.width == dim else {
                    throw fail(at + ".width", "width \(feature.width ?? 0) differs from the table dim \(dim)")
                }
                guard feature.scaler == nil else { throw fail(at + ".scaler", "only a dense feature has a scaler") }
                if let vocabulary = feature.vocabulary {
                    let vocab = spec.tables.first { $0.name == table }?.vocabSize ?? 0
                    switch (vocabulary.values, vocabulary.hashBuckets) {
                    case (let values?, nil):
                        guard vocabulary.offset >= 0, values.count + vocabulary.offset <= vocab else {
                            throw fail(
                                at + ".vocabulary",
                                "\(values.count) values from id \(vocabulary.offset) exceed table \"\(table)\" (\(vocab) rows)")
                        }
                        guard Set(values).count == values.count else { throw fail(at + ".vocabulary.values", "a value is listed twice") }
                    case (nil, let buckets?):
                        guard buckets >= 1, vocabulary.offset >= 0, buckets + vocabulary.offset <= vocab else {
                            throw fail(
                                at + ".vocabulary.hash_buckets",
                                "\(buckets) buckets from id \(vocabulary.offset) exceed table \"\(table)\" (\(vocab) rows)")
                        }
                    default:
                        throw fail(at + ".vocabulary", "give either values or hash_buckets")
                    }
                    guard vocabulary.oovID >= 0, vocabulary.oovID < vocab else {
                        throw fail(at + ".vocabulary.oov_id", "\(vocabulary.oovID) is outside table \"\(table)\" (\(vocab) rows)")
                    }
                }
                if feature.kind == .sparse {
                    guard feature.maxLength == nil, feature.pooling == nil else {
                        throw fail(at, "a sparse feature has no max_length or pooling")
                    }
                } else {
                    guard let length = feature.maxLength, length >= 1, length <= SpecLimits.maxSequenceLength else {
                        throw fail(at + ".max_length", "a sequence feature needs max_length between 1 and \(SpecLimits.maxSequenceLength)")
                    }
                    if let epsilon = feature.meanEpsilon, !(epsilon.isFinite && epsilon >= 0) {
                        throw fail(at + ".mean_epsilon", "must be finite and >= 0")
                    }
                    if let value = feature.emptyMaxValue, !value.isFinite {
                        throw fail(at + ".empty_max_value", "must be finite")
                    }
                }
                widths[feature.name] = dim
            }
        }
        // Concatenation order.
        var offsets: [String: Int] = [:]
        var inputWidth = 0
        for (i, name) in spec.concat.enumerated() {
            guard let width = widths[name] else { throw fail("concat[\(i)]", "unknown feature \"\(name)\"") }
            guard offsets[name] == nil else { throw fail("concat[\(i)]", "feature \"\(name)\" appears twice") }
            offsets[name] = inputWidth
            inputWidth += width
            guard inputWidth <= SpecLimits.maxInputWidth else { throw fail("concat", "input wider than \(SpecLimits.maxInputWidth)") }
        }
        if let missing = spec.features.first(where: { offsets[$0.name] == nil }) {
            throw fail("concat", "feature \"\(missing.name)\" is not in the concatenation order")
        }
        guard inputWidth >= 1 else { throw fail("concat", "the model has no input") }
        // Tasks.
        let tasks = spec.tasks
        guard !tasks.isEmpty, tasks.count <= SpecLimits.maxTasks else {
            throw fail("tasks", "between 1 and \(SpecLimits.maxTasks) tasks are needed")
        }
        var taskNames = Set<String>()
        for (t, task) in tasks.enumerated() {
            try checkName(task.name, at: "tasks[\(t)].name", allowDots: true)
            guard taskNames.insert(task.name).inserted else { throw fail("tasks[\(t)].name", "duplicate task \"\(task.name)\"") }
            if task.predictionBias {
                guard task.head != .softmax2, task.head != .softmax else {
                    throw fail("tasks[\(t)]", "a \(task.head.rawValue) head takes no prediction bias")
                }
                require(TensorNames.headBias(t), [1])
            }
        }
        // Architecture.
        let towerInputs = try architecture(spec.architecture, inputWidth: inputWidth, tasks: tasks.count)
        let a = spec.architecture
        guard a.towers.count == tasks.count else {
            throw fail("architecture.towers", "\(a.towers.count) towers for \(tasks.count) tasks")
        }
        var taskWidths: [String: Int] = [:]
        for (t, tower) in a.towers.enumerated() {
            let at = "architecture.towers[\(t)]"
            let out = try mlp(tower, path: "towers.\(t)", jsonPath: at, width: towerInputs[t])
            switch tasks[t].head {
            case .softmax:
                guard out >= 2 else { throw fail(at, "the tower outputs \(out) value; a softmax head needs one per class (at least 2)") }
            case .softmax2, .sigmoid, .identity:
                let needed = tasks[t].head == .softmax2 ? 2 : 1
                guard out == needed else {
                    throw fail(at, "the tower outputs \(out) values; a \(tasks[t].head.rawValue) head needs \(needed)")
                }
            }
            taskWidths[tasks[t].name] = tasks[t].head == .softmax ? out : 1
        }
        let outputWidths = try checkOutputs(spec.resolvedOutputs, taskWidths: taskWidths)
        return ModelLayout(
            inputWidth: inputWidth, featureOffsets: offsets, requirements: requirements, towerInputWidths: towerInputs,
            outputWidths: outputWidths)
    }

    /// Checks the outputs: each names a task, picks a class of a softmax task, or multiplies
    /// one-value outputs. Returns each output's width.
    func checkOutputs(_ outputs: [OutputSpec], taskWidths: [String: Int]) throws(ModelError) -> [Int] {
        var widths: [String: Int] = [:]
        var result: [Int] = []
        var seen = Set<String>()
        // Class outputs first: products may multiply them whatever the order.
        for output in outputs where output.task != nil && output.product == nil {
            widths[output.name] = 1
        }
        for (o, output) in outputs.enumerated() {
            let at = "outputs[\(o)]"
            try checkName(output.name, at: at + ".name", allowDots: true)
            guard seen.insert(output.name).inserted else {
                throw fail(at + ".name", "duplicate output \"\(output.name)\"")
            }
            let derived = output.product != nil || output.task != nil || output.fusion != nil
            if derived, taskWidths[output.name] != nil {
                throw fail(at + ".name", "a derived output may not reuse the task name \"\(output.name)\"")
            }
            if let fusion = output.fusion {
                guard output.product == nil, output.task == nil, output.classIndex == nil else {
                    throw fail(at, "a fusion output has no product, task or class")
                }
                guard !fusion.terms.isEmpty else { throw fail(at + ".fusion.terms", "a fusion needs at least one term") }
                for (i, term) in fusion.terms.enumerated() {
                    let path = at + ".fusion.terms[\(i)]"
                    // Terms name outputs defined before this one (tasks, class outputs, products, earlier fusions).
                    guard let width = taskWidths[term.output] ?? (seen.contains(term.output) ? widths[term.output] : nil) else {
                        throw fail(
                            path + ".output",
                            "unknown output \"\(term.output)\" (a term names a task or an output listed before the fusion)")
                    }
                    guard width == 1 else {
                        throw fail(
                            path + ".output", "\"\(term.output)\" has \(width) values per example; a fusion combines one-value outputs")
                    }
                    for (name, value) in [("weight", term.weight), ("add", term.add ?? 0), ("min", term.min ?? 0), ("max", term.max ?? 0)] {
                        guard value.isFinite else { throw fail(path + "." + name, "must be finite") }
                    }
                    if let low = term.min, let high = term.max, low > high { throw fail(path, "min \(low) is above max \(high)") }
                }
                result.append(1)
                widths[output.name] = 1
                continue
            }
            switch (output.product, output.task) {
            case (.some, .some):
                throw fail(at, "an output is either a product or a class of a task, not both")
            case (.some(let product), nil):
                guard output.classIndex == nil else { throw fail(at + ".class", "a class needs \"task\", not \"product\"") }
                guard !product.isEmpty else { throw fail(at + ".product", "a product needs at least one task") }
                for factor in product {
                    guard let width = taskWidths[factor] ?? widths[factor] else {
                        throw fail(at + ".product", "unknown task \"\(factor)\"")
                    }
                    guard width == 1, factor != output.name else {
                        throw fail(
                            at + ".product",
                            "\"\(factor)\" has \(width) values per example; a product multiplies one-value outputs (pick a class "
                                + "with \"task\" and \"class\")"
                        )
                    }
                }
                result.append(1)
            case (nil, .some(let task)):
                guard let width = taskWidths[task] else { throw fail(at + ".task", "unknown task \"\(task)\"") }
                guard let index = output.classIndex else { throw fail(at + ".class", "a class output needs the class index") }
                guard width > 1 else {
                    throw fail(at + ".task", "task \"\(task)\" has one value per example; only a softmax task has classes")
                }
                guard index >= 0, index < width else {
                    throw fail(at + ".class", "class \(index) is outside 0..<\(width) of task \"\(task)\"")
                }
                result.append(1)
            case (nil, nil):
                guard output.classIndex == nil else { throw fail(at + ".class", "a class needs \"task\"") }
                guard let width = taskWidths[output.name] else {
                    throw fail(at + ".name", "\"\(output.name)\" is neither a task nor a product")
                }
                result.append(width)
            }
            widths[output.name] = result[o]
        }
        return result
    }

    /// Checks the part between input and towers; returns each tower's input width.
    mutating func architecture(_ a: Architecture, inputWidth: Int, tasks: Int) throws(ModelError) -> [Int] {
        let root = "architecture"
        func unused(_ fields: [(String, Bool)]) throws(ModelError) {
            for (field, present) in fields where present {
                throw fail("\(root).\(field)", "not used by a \(a.type.rawValue) architecture")
            }
        }
        switch a.type {
        case .sharedBottom, .esmm:
            try unused([
                ("experts", a.experts != nil), ("gate", a.gate != nil), ("gates", a.gates != nil), ("levels", a.levels != nil),
                ("bottoms", a.bottoms != nil), ("info_gates", a.infoGates != nil),
            ])
            if a.type == .esmm { try unused([("bottom", a.bottom != nil)]) }
            var width = inputWidth
            if let bottom = a.bottom { width = try mlp(bottom, path: "bottom", jsonPath: "\(root).bottom", width: inputWidth) }
            return Array(repeating: width, count: tasks)
        case .omoe, .mmoe:
            try unused([
                ("bottom", a.bottom != nil), ("levels", a.levels != nil), ("bottoms", a.bottoms != nil), ("info_gates", a.infoGates != nil),
            ])
            guard let experts = a.experts, !experts.isEmpty, experts.count <= SpecLimits.maxExperts else {
                throw fail("\(root).experts", "between 1 and \(SpecLimits.maxExperts) experts are needed")
            }
            let width =
                try self.experts(
                    experts, paths: experts.indices.map { "experts.\($0)" },
                    jsonPaths: experts.indices.map { "\(root).experts[\($0)]" }, width: inputWidth, at: "\(root).experts") ?? 0
            if a.type == .omoe {
                try unused([("gates", a.gates != nil)])
                guard let gate = a.gate else { throw fail("\(root).gate", "an omoe architecture needs its gate") }
                try self.gate(gate, path: "gate", jsonPath: "\(root).gate", width: inputWidth, experts: experts.count)
            } else {
                try unused([("gate", a.gate != nil)])
                guard let gates = a.gates, gates.count == tasks else {
                    throw fail("\(root).gates", "an mmoe architecture needs one gate per task (\(tasks))")
                }
                for (t, gate) in gates.enumerated() {
                    try self.gate(gate, path: "gates.\(t)", jsonPath: "\(root).gates[\(t)]", width: inputWidth, experts: experts.count)
                }
            }
            return Array(repeating: width, count: tasks)
        case .aitm:
            try unused([
                ("bottom", a.bottom != nil), ("experts", a.experts != nil), ("gate", a.gate != nil), ("gates", a.gates != nil),
                ("levels", a.levels != nil),
            ])
            guard tasks >= 2, let bottoms = a.bottoms, bottoms.count == tasks else {
                throw fail("\(root).bottoms", "an aitm architecture needs one bottom per task and at least two tasks (\(tasks))")
            }
            var width: Int?
            for (t, bottom) in bottoms.enumerated() {
                let out = try mlp(bottom, path: "bottoms.\(t)", jsonPath: "\(root).bottoms[\(t)]", width: inputWidth)
                if let width, width != out { throw fail("\(root).bottoms[\(t)]", "outputs \(out) values, the first bottom \(width)") }
                width = out
            }
            let d = width ?? 0
            guard let infoGates = a.infoGates, infoGates.count == tasks - 1 else {
                throw fail("\(root).info_gates", "an aitm architecture needs one info gate per task after the first (\(tasks - 1))")
            }
            for (t, gate) in infoGates.enumerated() {
                let out = try mlp(gate, path: "info_gates.\(t)", jsonPath: "\(root).info_gates[\(t)]", width: d)
                guard out == d else { throw fail("\(root).info_gates[\(t)]", "outputs \(out) values; the attention needs \(d)") }
                for part in TensorNames.attentionParts { require(TensorNames.attention(t, part), [d, d]) }
            }
            return Array(repeating: d, count: tasks)
        case .ple:
            try unused([
                ("bottom", a.bottom != nil), ("experts", a.experts != nil), ("gate", a.gate != nil), ("gates", a.gates != nil),
                ("bottoms", a.bottoms != nil), ("info_gates", a.infoGates != nil),
            ])
            guard let levels = a.levels, !levels.isEmpty, levels.count <= SpecLimits.maxLevels else {
                throw fail("\(root).levels", "between 1 and \(SpecLimits.maxLevels) levels are needed")
            }
            var taskWidths = Array(repeating: inputWidth, count: tasks)
            var sharedWidth = inputWidth
            for (l, level) in levels.enumerated() {
                let at = "\(root).levels[\(l)]"
                let path = "levels.\(l)"
                guard level.specificExperts.count == tasks else {
                    throw fail("\(at).specific_experts", "one list of experts per task (\(tasks)) is needed")
                }
                guard level.specificGates.count == tasks else {
                    throw fail("\(at).specific_gates", "one gate per task (\(tasks)) is needed")
                }
                let last = l == levels.count - 1
                if last, level.sharedGate != nil { throw fail("\(at).shared_gate", "the last level has no shared gate") }
                if !last, level.sharedGate == nil { throw fail("\(at).shared_gate", "every level but the last needs a shared gate") }
                let specificCount = level.specificExperts.reduce(0) { $0 + $1.count }
                guard specificCount + level.sharedExperts.count <= SpecLimits.maxExperts else {
                    throw fail(at, "more than \(SpecLimits.maxExperts) experts")
                }
                var expertWidth: Int?
                func merge(_ width: Int?, _ where_: String) throws(ModelError) {
                    guard let width else { return }
                    if let existing = expertWidth, existing != width {
                        throw fail(where_, "expert output width \(width) differs from the level's \(existing)")
                    }
                    expertWidth = width
                }
                for (t, experts) in level.specificExperts.enumerated() {
                    try merge(
                        try self.experts(
                            experts, paths: experts.indices.map { "\(path).specific_experts.\(t).\($0)" },
                            jsonPaths: experts.indices.map { "\(at).specific_experts[\(t)][\($0)]" }, width: taskWidths[t],
                            at: "\(at).specific_experts[\(t)]"), "\(at).specific_experts[\(t)]")
                }
                try merge(
                    try self.experts(
                        level.sharedExperts, paths: level.sharedExperts.indices.map { "\(path).shared_experts.\($0)" },
                        jsonPaths: level.sharedExperts.indices.map { "\(at).shared_experts[\($0)]" }, width: sharedWidth,
                        at: "\(at).shared_experts"), "\(at).shared_experts")
                for (t, gate) in level.specificGates.enumerated() {
                    let mixed = level.specificExperts[t].count + level.sharedExperts.count
                    guard mixed >= 1 else { throw fail("\(at).specific_gates[\(t)]", "the gate mixes no experts") }
                    try self.gate(
                        gate, path: "\(path).specific_gates.\(t)", jsonPath: "\(at).specific_gates[\(t)]", width: taskWidths[t],
                        experts: mixed)
                }
                if let gate = level.sharedGate {
                    try self.gate(
                        gate, path: "\(path).shared_gate", jsonPath: "\(at).shared_gate", width: sharedWidth,
                        experts: specificCount + level.sharedExperts.count)
                }
                guard let width = expertWidth else { throw fail(at, "the level has no experts") }
                taskWidths = Array(repeating: width, count: tasks)
                sharedWidth = width
            }
            return taskWidths
        }
    }
}
