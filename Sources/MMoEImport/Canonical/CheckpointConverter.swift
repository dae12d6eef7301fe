import Foundation
import MMoECore

/// The tensors of a checkpoint by name, remembering which ones the conversion used so that
/// anything left over is reported (ignored with a note, or refused as a mismatch).
struct CheckpointKeys {
    let path: String
    /// The checkpoint's finer format label (`keras3`, ...).
    let format: String
    private(set) var tensors: [String: SourceTensor] = [:]
    private(set) var order: [String] = []
    private(set) var used = Set<String>()
    /// What an ONNX graph says beyond its parameters.
    let onnxFacts: OnnxFacts?
    /// The prefix removed from every name (an export wrapper's), if any.
    let removedPrefix: String
    /// A Keras file's model config (JSON), when it has one.
    let kerasConfig: [UInt8]?

    init(_ checkpoint: SourceCheckpoint, notes: inout [ImportNote]) {
        path = checkpoint.path
        format = checkpoint.format
        onnxFacts = checkpoint.onnxFacts
        kerasConfig = checkpoint.kerasConfig
        var stripped = 0
        // torch-rechub's ONNX helper wraps the model (`ONNXWrapper.model`): every parameter name
        // of such an export starts with `model.`.
        let parameters = checkpoint.tensors.map(\.name).filter { $0.contains(".") }
        let wrapped = format == "onnx" && !parameters.isEmpty && parameters.allSatisfy { $0.hasPrefix("model.") }
        removedPrefix = wrapped ? "model." : ""
        if wrapped {
            notes.append(
                ImportNote(
                    .ignored,
                    "removed the 'model.' prefix an export wrapper (torch-rechub's ONNXWrapper) gave \(parameters.count) parameters"))
        }
        for tensor in checkpoint.tensors {
            var name = tensor.name
            if wrapped, name.hasPrefix("model.") { name.removeFirst("model.".count) }
            if name.hasPrefix("module.") {
                name.removeFirst("module.".count)
                stripped += 1
            }
            tensors[name] = tensor
            order.append(name)
        }
        if stripped > 0 { notes.append(ImportNote(.ignored, "removed the 'module.' prefix (DataParallel) from \(stripped) keys")) }
    }

    func has(_ name: String) -> Bool { tensors[name] != nil }

    /// Takes a float tensor, checking its shape when given.
    mutating func take(_ name: String, shape: [Int]? = nil) throws(ImportError) -> Tensor {
        guard let source = tensors[name] else { throw .mismatch(path: path, reason: "the checkpoint has no tensor '\(name)'") }
        if let shape, source.shape != shape {
            throw .mismatch(path: path, reason: "tensor '\(name)' has shape \(source.shape), the model described needs \(shape)")
        }
        used.insert(name)
        do throws(ModelError) { return try source.modelTensor() } catch { throw .invalidModel(path: path, error) }
    }

    func shape(_ name: String) -> [Int]? { tensors[name]?.shape }

    /// Marks a key as deliberately unused.
    mutating func skip(_ name: String) { if tensors[name] != nil { used.insert(name) } }

    /// Counts `prefix<i>suffix` keys for i = 0, 1, ... until one is missing.
    func count(_ make: (Int) -> String) -> Int {
        var i = 0
        while has(make(i)) { i += 1 }
        return i
    }

    /// Refuses leftover keys except the known trainer leftovers, which get a note.
    func finish(notes: inout [ImportNote], model: String) throws(ImportError) {
        var counters = 0
        var lossWeights: [String] = []
        var constants = 0
        for name in order where !used.contains(name) {
            // BatchNorm's batch counter; an AveragedModel's (SWA/EMA) count of averaged steps.
            if name.hasSuffix("num_batches_tracked") || name == "n_averaged" { counters += 1; continue }
            // Exporter-made constants of an ONNX graph (epsilons, shapes), not parameters.
            if format == "onnx", onnxFacts?.unnamedParameters.contains(name) != true,
                name.hasPrefix("val_") || name.hasPrefix("onnx::") || name.hasPrefix("_val_") || !name.contains(".")
            {
                constants += 1
                continue
            }
            if name.hasPrefix("loss weight") || name.hasPrefix("loss_weight") { lossWeights.append(name); continue }
            throw .mismatch(
                path: path,
                reason:
                    "checkpoint tensor '\(name)' \(tensors[name].map { "\($0.shape)" } ?? "") is not part of the \(model) "
                    + "described by the conversion spec (check the counts and args)"
            )
        }
        if counters > 0 { notes.append(ImportNote(.ignored, "\(counters) training counters (BatchNorm num_batches_tracked, n_averaged)")) }
        if constants > 0 { notes.append(ImportNote(.ignored, "\(constants) constants the ONNX exporter stored as initializers")) }
        if !lossWeights.isEmpty { notes.append(ImportNote(.ignored, "trainer loss weights: \(lossWeights.joined(separator: ", "))")) }
    }
}

/// One layer with its tensors, before it gets canonical names.
enum LayerPart {
    case linear(weight: Tensor, bias: Tensor?)
    case batchNorm(eps: Double, weight: Tensor?, bias: Tensor?, mean: Tensor, variance: Tensor)
    case plain(Layer)
    case prelu(Tensor)
    case dice(DiceVariant, eps: Double, alpha: Tensor, normalization: (weight: Tensor?, bias: Tensor?, mean: Tensor, variance: Tensor)?)
}

/// The widths of the linear layers among `parts` (the hidden dims plus any output layer).
func linearWidths(_ parts: [LayerPart]) -> [Int] {
    parts.compactMap { if case .linear(let weight, _) = $0 { weight.shape[0] } else { nil } }
}

/// Refuses a model whose layer widths disagree with the dims the conversion spec states.
func checkDims(_ stated: [Int]?, _ parts: [LayerPart], dropLast: Bool, what: String, path: String) throws(ImportError) {
    guard let stated else { return }
    var found = linearWidths(parts)
    if dropLast, !found.isEmpty { found.removeLast() }
    guard stated == found else {
        throw .mismatch(path: path, reason: "\(what): the conversion spec says hidden dims \(stated), the checkpoint has \(found)")
    }
}

/// Collects canonical tensors while MLPs are assembled.
struct CanonicalBuilder {
    var store = TensorStore()
    let path: String

    mutating func put(_ tensor: Tensor, _ name: String) throws(ImportError) {
        do throws(ModelError) { try store.insert(tensor, named: name) } catch { throw .invalidModel(path: path, error) }
    }

    /// Names the parts' tensors under `prefix` and returns the MLP.
    mutating func mlp(_ prefix: String, _ parts: [LayerPart]) throws(ImportError) -> MLP {
        var layers: [Layer] = []
        for (i, part) in parts.enumerated() {
            let name = { (p: String) in TensorNames.layer(prefix, i, p) }
            switch part {
            case .linear(let weight, let bias):
                guard weight.shape.count == 2 else {
                    throw .mismatch(path: path, reason: "\(prefix): a linear weight must be 2-D, got \(weight.shape)")
                }
                layers.append(.linear(units: weight.shape[0], bias: bias != nil))
                try put(weight, name("weight"))
                if let bias { try put(bias, name("bias")) }
            case .batchNorm(let eps, let weight, let bias, let mean, let variance):
                layers.append(.batchNorm(eps: eps, affine: weight != nil))
                if let weight, let bias {
                    try put(weight, name("weight"))
                    try put(bias, name("bias"))
                }
                try put(mean, name("running_mean"))
                try put(variance, name("running_var"))
            case .plain(let layer):
                layers.append(layer)
            case .prelu(let weight):
                layers.append(.prelu(channels: weight.elementCount))
                try put(weight, name("weight"))
            case .dice(let variant, let eps, let alpha, let normalization):
                layers.append(.dice(variant: variant, eps: eps))
                try put(alpha, name("alpha"))
                if let normalization {
                    if let weight = normalization.weight, let bias = normalization.bias {
                        try put(weight, name("weight"))
                        try put(bias, name("bias"))
                    }
                    try put(normalization.mean, name("running_mean"))
                    try put(normalization.variance, name("running_var"))
                }
            }
        }
        return MLP(layers: layers)
    }
}

/// Reads the raw tensors of a weights-only checkpoint (for `inspect` and conversion).
public enum CheckpointReading {
    /// The tensors of a torch.save, safetensors or .npz file, as stored.
    public static func read(path: String, format: SourceFormat, notes: inout [ImportNote]) throws(ImportError) -> SourceCheckpoint {
        try CheckpointConverter.readWeights(path: path, format: format, notes: &notes)
    }
}

/// Converts a checkpoint plus a conversion spec into a model.
enum CheckpointConverter {
    static func readWeights(path: String, format: SourceFormat, notes: inout [ImportNote]) throws(ImportError) -> SourceCheckpoint {
        switch format {
        case .torch:
            let (checkpoint, readNotes) = try TorchArchiveReader.read(path: path)
            notes += readNotes
            return checkpoint
        case .safetensors:
            return try SafetensorsReader.read(path: path)
        case .keras:
            return try KerasH5Reader.read(path: path)
        case .tfCheckpoint:
            let checkpoint = try TFCheckpointReader.read(path: path)
            if checkpoint.trainingState > 0 {
                notes.append(
                    ImportNote(
                        .ignored,
                        "training state: \(checkpoint.trainingState) optimizer variables and counters (Adam slots, iteration, "
                            + "learning rate, save_counter)"
                    ))
            }
            return checkpoint
        case .onnx:
            let (checkpoint, readNotes) = try OnnxReader.read(path: path)
            notes += readNotes
            return checkpoint
        case .npz:
            var tensors: [SourceTensor] = []
            let arrays = try NumpyArchive.read(path: path)
            for name in arrays.keys.sorted() {
                guard let array = arrays[name] else { continue }
                let dtype: SourceDType
                switch array.descr {
                case "<f4": dtype = .f32
                case "<f8": dtype = .f64
                case "<f2": dtype = .f16
                case "<i8": dtype = .i64
                case "<i4": dtype = .i32
                default: throw .unsupported(path: path, reason: "array '\(name)' has dtype \(array.descr)")
                }
                tensors.append(
                    SourceTensor(name: name, dtype: dtype, shape: array.shape, storage: ByteStorage(copying: array.data), byteOffset: 0))
            }
            return SourceCheckpoint(tensors: tensors, path: path)
        default:
            throw .unsupported(path: path, reason: "importing \(format) files is not supported by this build yet")
        }
    }

    /// Framework constructor arguments accepted in `args` that change nothing at inference.
    static let trainingOnlyArgs = [
        "dnn_dropout", "dropout", "l2_reg_embedding", "l2_reg_dnn", "l2_reg_linear", "seed", "init_std", "device", "gpus", "task_types",
    ]

    static func convert(path: String, format: SourceFormat, conversionSpecPath: String?) throws(ImportError) -> ImportResult {
        var notes: [ImportNote] = []
        let checkpoint = try readWeights(path: path, format: format, notes: &notes)
        var keys = CheckpointKeys(checkpoint, notes: &notes)
        let conversion: ConversionSpec
        let userSpec = conversionSpecPath != nil
        if let conversionSpecPath {
            conversion = try ConversionSpec(path: conversionSpecPath)
        } else {
            conversion = try SpecInference.infer(keys: keys, path: path, notes: &notes)
        }
        let conversionSpecPath = conversionSpecPath ?? "(inferred conversion spec)"
        let spec: ModelSpec
        var builder = CanonicalBuilder(path: path)
        switch conversion.framework {
        case "torch-rechub", "torch_rechub", "rechub":
            var importer = RechubImporter(conversion: conversion, path: path)
            spec = try importer.build(keys: &keys, builder: &builder, notes: &notes)
        case "deepctr-torch", "deepctr_torch":
            var importer = DeepCTRTorchImporter(conversion: conversion, path: path)
            spec = try importer.build(keys: &keys, builder: &builder, notes: &notes)
        case "deepctr", "deepctr-tf", "deepctr_tf":
            var importer = DeepCTRImporter(conversion: conversion, path: path)
            spec = try importer.build(keys: &keys, builder: &builder, notes: &notes)
        case "keras-mmoe", "keras_mmoe":
            var importer = KerasMMoEImporter(conversion: conversion, path: path)
            spec = try importer.build(keys: &keys, builder: &builder, notes: &notes)
        case "native", "plain", "pytorch", "torch":
            spec = try NativeMappingImporter.build(conversion: conversion, keys: &keys, builder: &builder, notes: &notes, path: path)
        default:
            throw .unsupported(
                path: conversionSpecPath,
                reason: "framework '\(conversion.framework)' is not supported (torch-rechub, deepctr-torch, deepctr, keras-mmoe, native)")
        }
        if userSpec {
            // Constructor arguments that only matter while training.
            conversion.args.acceptUnused(CheckpointConverter.trainingOnlyArgs)
            let unused = try conversion.checkUnknownKeys()
            if !unused.isEmpty {
                notes.append(ImportNote(.ignored, "training-only settings in the conversion spec: \(unused.joined(separator: ", "))"))
            }
        }
        try keys.finish(notes: &notes, model: conversion.model.isEmpty ? "model" : conversion.model)
        try checkHeads(spec, against: keys.onnxFacts, path: path, conversionSpecPath: conversionSpecPath)
        try checkPReLUs(spec, against: keys.onnxFacts, path: path)
        do throws(ModelError) {
            try spec.validate(tensors: builder.store)
        } catch {
            throw .invalidModel(path: path, error)
        }
        return ImportResult(spec: spec, tensors: builder.store, notes: notes, source: format)
    }

    /// An exported graph shows which output columns pass through a sigmoid: a conversion spec
    /// that calls such a task regression (or a raw column binary) would convert a different
    /// model, so it is refused, naming the task. ESMM's derived outputs and graphs whose output
    /// is not one column per task are not checked.
    static func checkHeads(_ spec: ModelSpec, against facts: OnnxFacts?, path: String, conversionSpecPath: String) throws(ImportError) {
        guard let sigmoids = facts?.sigmoidOutputs, spec.architecture.type != .esmm, sigmoids.count == spec.tasks.count else { return }
        for (task, hasSigmoid) in zip(spec.tasks, sigmoids) {
            switch (task.head, hasSigmoid) {
            case (.sigmoid, false), (.identity, true):
                throw .mismatch(
                    path: conversionSpecPath,
                    reason:
                        "task '\(task.name)' is \(task.head == .sigmoid ? "binary (sigmoid)" : "regression (no sigmoid)") "
                        + "in the conversion spec, "
                        + "but the graph's output column \(spec.tasks.firstIndex { $0.name == task.name } ?? 0) "
                        + "\(hasSigmoid ? "passes through a sigmoid" : "has no sigmoid") (\(path))"
                )
            default:
                continue
            }
        }
    }

    /// A graph's PReLU nodes must all have become PReLU layers: a slope the conversion could
    /// not place would otherwise leave a ReLU (or nothing) where the graph has a PReLU.
    static func checkPReLUs(_ spec: ModelSpec, against facts: OnnxFacts?, path: String) throws(ImportError) {
        guard let facts, !facts.preluSlopes.isEmpty else { return }
        let layers = spec.mlpPaths.reduce(0) { count, item in
            count + item.mlp.layers.filter { if case .prelu = $0 { true } else { false } }.count
        }
        guard layers >= facts.preluSlopes.count else {
            throw .mismatch(
                path: path,
                reason:
                    "the graph has \(facts.preluSlopes.count) PRelu nodes but only \(layers) became PReLU layers (slopes: "
                    + "\(facts.preluSlopes.sorted().prefix(6).joined(separator: ", "))); name them with a conversion spec's mapping"
            )
        }
    }

    /// A table name derived from a checkpoint key owner ('.' and '/' are not allowed).
    static func tableName(_ owner: String) -> String {
        String(owner.map { $0 == "." || $0 == "/" ? "_" : $0 })
    }

    /// Tables, spec features and embedding tensors shared by the torch frameworks.
    struct InputConvention {
        /// Checkpoint key of a table owner's weight.
        let tableKey: (String) -> String
        /// The owner of a feature's table.
        let owner: (SourceFeature) -> String
        let defaultPooling: String
        /// Padding id when the feature does not name one.
        let defaultPadding: Int?
        let meanEpsilon: Double
        let emptyMax: Double
        let defaultMaxLength: Int
    }

    static func buildInputs(
        _ features: [SourceFeature], convention: InputConvention, keys: inout CheckpointKeys, builder: inout CanonicalBuilder,
        notes: inout [ImportNote], path: String
    ) throws(ImportError) -> (tables: [EmbeddingTable], features: [Feature]) {
        guard !features.isEmpty else { throw .mismatch(path: path, reason: "the conversion spec lists no features") }
        var tables: [EmbeddingTable] = []
        var tableByOwner: [String: String] = [:]
        var specFeatures: [Feature] = []
        for feature in features {
            if feature.kind == .dense {
                specFeatures.append(.dense(feature.name, width: feature.dim ?? 1))
                continue
            }
            let owner = convention.owner(feature)
            if tableByOwner[owner] == nil {
                let key = convention.tableKey(owner)
                guard let shape = keys.shape(key), shape.count == 2 else {
                    throw .mismatch(path: path, reason: "feature '\(feature.name)': no 2-D embedding table '\(key)' in the checkpoint")
                }
                if let vocab = feature.vocabSize, vocab != shape[0] {
                    throw .mismatch(
                        path: path, reason: "feature '\(feature.name)': vocab_size \(vocab) but table '\(key)' has \(shape[0]) rows")
                }
                if let dim = feature.dim, dim != shape[1] {
                    throw .mismatch(
                        path: path, reason: "feature '\(feature.name)': embedding dim \(dim) but table '\(key)' has \(shape[1]) columns")
                }
                if feature.vocabSize == nil || feature.dim == nil {
                    notes.append(ImportNote(.inferred, "table '\(owner)': vocab \(shape[0]), dim \(shape[1]) from the checkpoint"))
                }
                var name = tableName(owner)
                while tables.contains(where: { $0.name == name }) { name += "_" }
                tables.append(EmbeddingTable(name: name, vocabSize: shape[0], dim: shape[1]))
                tableByOwner[owner] = name
                try builder.put(try keys.take(key), TensorNames.embedding(name))
            }
            let table = tableByOwner[owner] ?? owner
            if feature.kind == .sparse {
                specFeatures.append(.sparse(feature.name, table: table))
                continue
            }
            guard feature.lengthName == nil else {
                throw .unsupported(
                    path: path,
                    reason:
                        "feature '\(feature.name)': sequences with a separate length feature are not supported yet; use masking "
                        + "(padding id)"
                )
            }
            let poolingName = feature.pooling ?? convention.defaultPooling
            guard let pooling = Pooling(rawValue: poolingName) else {
                throw .unsupported(
                    path: path, reason: "feature '\(feature.name)': pooling '\(poolingName)' is not supported (sum, mean, max)")
            }
            if feature.pooling == nil {
                notes.append(ImportNote(.assumed, "feature '\(feature.name)': pooling \(poolingName) (framework default)"))
            }
            let maxLength = feature.maxLength ?? convention.defaultMaxLength
            if feature.maxLength == nil { notes.append(ImportNote(.assumed, "feature '\(feature.name)': max_length \(maxLength)")) }
            specFeatures.append(
                Feature(
                    name: feature.name, kind: .sequence, table: table, maxLength: maxLength, pooling: pooling,
                    paddingID: feature.paddingIndex ?? convention.defaultPadding,
                    meanEpsilon: pooling == .mean ? convention.meanEpsilon : nil,
                    emptyMaxValue: pooling == .max ? convention.emptyMax : nil))
        }
        return (tables, specFeatures)
    }

    /// Refuses a count argument of the conversion spec that disagrees with the checkpoint.
    static func checkCount(_ args: JSONObject, _ key: String, _ found: Int, path: String) throws(ImportError) {
        if let given = try args.int(key), given != found {
            throw .mismatch(path: path, reason: "\(key) is \(given) in the conversion spec but the checkpoint has \(found)")
        }
    }

    /// DeepCTR's ESMM naming (both ports): `task_names` = (ctr, ctcvr); the tasks are ctr and
    /// cvr, the outputs ctr and ctcvr = ctr × cvr.
    static func esmmTasks(_ given: [String]?, conversion: ConversionSpec) throws(ImportError) -> (
        tasks: [(name: String, head: HeadKind)], outputs: [OutputSpec]
    ) {
        let names = given ?? ["ctr", "ctcvr"]
        guard names.count == 2 else { throw .mismatch(path: conversion.file, reason: "ESMM has two task names (ctr, ctcvr)") }
        let cvrName = names.contains("cvr") ? "cvr_task" : "cvr"
        return (
            [(names[0], .sigmoid), (cvrName, .sigmoid)],
            [OutputSpec(name: names[0]), OutputSpec(name: names[1], product: [names[0], cvrName])]
        )
    }

    /// Task heads from the spec's `tasks` (or framework args).
    static func tasks(_ conversion: ConversionSpec, names: [String]?, types: [String]?, count: Int?, path: String) throws(ImportError) -> [(
        name: String, head: HeadKind
    )] {
        var result: [(String, HeadKind)] = []
        func head(_ type: String) throws(ImportError) -> HeadKind {
            switch type.lowercased() {
            case "binary", "classification", "classfication", "sigmoid": return .sigmoid
            case "regression", "identity": return .identity
            default: throw .unsupported(path: conversion.file, reason: "task type '\(type)' (binary/classification or regression)")
            }
        }
        if !conversion.tasks.isEmpty {
            for (i, task) in conversion.tasks.enumerated() {
                result.append((try task.string("name") ?? "task\(i)", try head(try task.string("type") ?? "binary")))
            }
        } else if let types {
            for (i, type) in types.enumerated() { result.append((names?[safe: i] ?? "task\(i)", try head(type))) }
        } else if let names {
            result = names.map { ($0, .sigmoid) }
        } else if let count {
            result = (0..<count).map { ("task\($0)", .sigmoid) }
        }
        guard !result.isEmpty else { throw .mismatch(path: conversion.file, reason: "no tasks: list them under \"tasks\"") }
        return result
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
