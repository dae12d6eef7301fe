import Foundation

/// The model description ("spec"): features, architecture, tasks and outputs.
///
/// It is data, stored as JSON in every model file and documented in `Docs/SPEC.md`. A spec
/// plus a `TensorStore` whose tensors pass `validate(tensors:)` is a complete model.
public struct ModelSpec: Codable, Sendable, Equatable {
    /// The value of `format` in every spec.
    public static let formatName = "mmoe-spec"
    /// The spec version this build writes and reads.
    public static let currentVersion = 1

    /// Always `"mmoe-spec"`.
    public var format: String
    /// Spec version (1).
    public var version: Int
    /// Free-form model name.
    public var name: String?
    /// Embedding tables; features refer to them by name (several features may share one).
    public var tables: [EmbeddingTable]
    /// Input features, by the names a batch uses.
    public var features: [Feature]
    /// Feature names in the order their vectors are concatenated into the model input.
    public var concat: [String]
    /// How the concatenated input becomes per-task representations.
    public var architecture: Architecture
    /// One entry per task (per tower), in tower order.
    public var tasks: [TaskHead]
    /// Named outputs in order: task outputs and derived products. Defaults to the tasks.
    public var outputs: [OutputSpec]?
    /// Free-form provenance (source framework, converter version, notes).
    public var metadata: [String: String]?

    /// A spec; `format` and `version` are filled in.
    public init(
        name: String? = nil, tables: [EmbeddingTable], features: [Feature], concat: [String]? = nil,
        architecture: Architecture, tasks: [TaskHead], outputs: [OutputSpec]? = nil,
        metadata: [String: String]? = nil
    ) {
        self.format = ModelSpec.formatName
        self.version = ModelSpec.currentVersion
        self.name = name
        self.tables = tables
        self.features = features
        self.concat = concat ?? features.map(\.name)
        self.architecture = architecture
        self.tasks = tasks
        self.outputs = outputs
        self.metadata = metadata
    }

    /// The features marked `"side": "user"` (given once per ranking request).
    public var userFeatures: Set<String> { Set(features.filter { $0.side == .user }.map(\.name)) }

    /// The outputs in order (the tasks when `outputs` is absent).
    public var resolvedOutputs: [OutputSpec] { outputs ?? tasks.map { OutputSpec(name: $0.name) } }

    enum CodingKeys: String, CodingKey {
        case format, version, name, tables, features, concat, architecture, tasks, outputs, metadata
    }

    // MARK: JSON

    /// Decodes and validates the structure of a spec (not its tensors).
    public static func decode(json: [UInt8]) throws(ModelError) -> ModelSpec {
        try decodeWithLayout(json: json).spec
    }

    /// `decode(json:)` that also returns the layout its structural check built.
    package static func decodeWithLayout(json: [UInt8]) throws(ModelError) -> (spec: ModelSpec, layout: ModelLayout) {
        let spec: ModelSpec
        do {
            spec = try JSONDecoder().decode(ModelSpec.self, from: Data(json))
        } catch let error as DecodingError {
            throw .malformedSpec(describe(error))
        } catch {
            throw .malformedSpec("\(error)")
        }
        guard spec.format == formatName, spec.version == currentVersion else {
            throw .unsupportedSpecVersion(format: spec.format, version: spec.version)
        }
        return (spec, try spec.validateStructure())
    }

    /// Canonical JSON (sorted keys): the same spec always gives the same bytes.
    public func encodedJSON(pretty: Bool = false) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        // Encoding plain structs of strings, numbers and arrays cannot fail.
        return (try? Array(encoder.encode(self))) ?? []
    }

    private static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let parts = context.codingPath.map { key in key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)" }
            let joined = parts.joined()
            return joined.isEmpty ? "(root)" : String(joined.drop { $0 == "." })
        }
        switch error {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        case .keyNotFound(let key, let context):
            let base = path(context)
            return "\(base == "(root)" ? "" : base + ".")\(key.stringValue): required key is missing"
        @unknown default:
            return "\(error)"
        }
    }
}

/// An embedding table: `vocab_size` rows of `dim` values.
public struct EmbeddingTable: Codable, Sendable, Equatable {
    /// Table name; also part of tensor names (`embeddings.<name>.weight`), so no `.` or `/`.
    public var name: String
    /// Number of rows (ids 0 ..< vocab_size).
    public var vocabSize: Int
    /// Row width.
    public var dim: Int

    /// A table.
    public init(name: String, vocabSize: Int, dim: Int) {
        self.name = name
        self.vocabSize = vocabSize
        self.dim = dim
    }

    enum CodingKeys: String, CodingKey {
        case name, dim
        case vocabSize = "vocab_size"
    }
}

/// What kind of input a feature is.
public enum FeatureKind: String, Codable, Sendable {
    /// Float values, `width` per example.
    case dense
    /// One id per example, looked up in a table.
    case sparse
    /// A padded list of ids per example, looked up and pooled.
    case sequence
}

/// Which side of a ranking request a feature describes.
public enum FeatureSide: String, Codable, Sendable {
    /// The same for every candidate of a request (given once).
    case user
    /// Different per candidate.
    case item
}

/// How a sequence feature's embeddings are reduced to one vector.
public enum Pooling: String, Codable, Sendable {
    /// Sum over non-padding positions.
    case sum
    /// Sum divided by (number of non-padding positions + `mean_epsilon`); 0 when all padding.
    case mean
    /// Elementwise maximum over non-padding positions; `empty_max_value` when all padding.
    case max
}

/// Raw values to ids for a sparse or sequence feature: a vocabulary (value i → id i + offset,
/// anything else → the out-of-vocabulary id) or a hash-bucket rule (FNV-1a 64 of the value's
/// UTF-8 bytes, modulo the bucket count, plus offset).
public struct Vocabulary: Codable, Sendable, Equatable {
    /// The known values in id order (integers are written as their decimal text).
    public var values: [String]?
    /// Hash buckets instead of a list.
    public var hashBuckets: Int?
    /// Added to the index (torch-rechub and DeepCTR examples: 1, keeping 0 for padding/unknown).
    public var offset: Int
    /// The id of values not in the list (default 0).
    public var oovID: Int

    /// A vocabulary list.
    public init(values: [String], offset: Int = 1, oovID: Int = 0) {
        self.values = values
        hashBuckets = nil
        self.offset = offset
        self.oovID = oovID
    }

    /// A hash-bucket rule.
    public init(hashBuckets: Int, offset: Int = 0) {
        values = nil
        self.hashBuckets = hashBuckets
        self.offset = offset
        oovID = 0
    }

    enum CodingKeys: String, CodingKey {
        case values, offset
        case hashBuckets = "hash_buckets"
        case oovID = "oov_id"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        values = try c.decodeIfPresent([String].self, forKey: .values)
        hashBuckets = try c.decodeIfPresent(Int.self, forKey: .hashBuckets)
        offset = try c.decodeIfPresent(Int.self, forKey: .offset) ?? (hashBuckets == nil ? 1 : 0)
        oovID = try c.decodeIfPresent(Int.self, forKey: .oovID) ?? 0
    }

    /// FNV-1a, 64 bits, of the UTF-8 bytes (the documented hash of hash buckets).
    public static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}

/// A fitted scaler of a dense feature, applied to raw values (one entry per column, or one for all).
public struct Scaler: Codable, Sendable, Equatable {
    /// Min-max to [0, 1] or standardisation.
    public enum Kind: String, Codable, Sendable {
        /// `(x − min) / (max − min)`.
        case minmax
        /// `(x − mean) / std`.
        case standard
    }

    /// The rule.
    public var kind: Kind
    /// min (minmax) or mean (standard) per column.
    public var shift: [Double]
    /// max − min (minmax) or std (standard) per column.
    public var scale: [Double]

    /// A scaler.
    public init(kind: Kind, shift: [Double], scale: [Double]) {
        self.kind = kind
        self.shift = shift
        self.scale = scale
    }
}

/// One input feature.
public struct Feature: Codable, Sendable, Equatable {
    /// The name a batch uses for this feature.
    public var name: String
    /// Dense, sparse or sequence.
    public var kind: FeatureKind
    /// Dense only: values per example (default 1).
    public var width: Int?
    /// Sparse and sequence: the table looked up.
    public var table: String?
    /// Sequence only: the longest list accepted.
    public var maxLength: Int?
    /// Sequence only: how positions are reduced (default sum).
    public var pooling: Pooling?
    /// Sequence only: the id that marks padding (excluded from pooling), or absent when every
    /// position counts (torch-rechub's default).
    public var paddingID: Int?
    /// Sequence/mean only: added to the count before dividing (DeepCTR: 1e-8; default 0).
    public var meanEpsilon: Double?
    /// Sequence/max only: the value when every position is padding (default 0).
    public var emptyMaxValue: Double?
    /// Ranking: `user` when the feature is given once per request (`Model.rank`); absent or `item` otherwise.
    public var side: FeatureSide?
    /// Sparse and sequence: how raw values become ids (absent: ids are given).
    public var vocabulary: Vocabulary?
    /// Dense: the fitted scaler applied to raw values (absent: values are used as given).
    public var scaler: Scaler?

    /// A feature.
    public init(
        name: String, kind: FeatureKind, width: Int? = nil, table: String? = nil, maxLength: Int? = nil,
        pooling: Pooling? = nil, paddingID: Int? = nil, meanEpsilon: Double? = nil, emptyMaxValue: Double? = nil
    ) {
        self.name = name
        self.kind = kind
        self.width = width
        self.table = table
        self.maxLength = maxLength
        self.pooling = pooling
        self.paddingID = paddingID
        self.meanEpsilon = meanEpsilon
        self.emptyMaxValue = emptyMaxValue
    }

    /// A dense feature.
    public static func dense(_ name: String, width: Int = 1) -> Feature { Feature(name: name, kind: .dense, width: width) }
    /// A sparse feature.
    public static func sparse(_ name: String, table: String) -> Feature { Feature(name: name, kind: .sparse, table: table) }

    enum CodingKeys: String, CodingKey {
        case name, kind, width, table, pooling, side, vocabulary, scaler
        case maxLength = "max_length"
        case paddingID = "padding_id"
        case meanEpsilon = "mean_epsilon"
        case emptyMaxValue = "empty_max_value"
    }
}

/// The three incompatible "Dice" activations found in the wild.
public enum DiceVariant: String, Codable, Sendable {
    /// DeepCTR (TF): non-affine batch norm with moving statistics, per-unit alpha.
    case deepctr
    /// DeepCTR-Torch: affine `BatchNorm1d`, per-unit alpha.
    case deepctrTorch = "deepctr_torch"
    /// torch-rechub: per-row statistics over the feature axis, scalar alpha, no running stats.
    case rechub
}

/// One layer of an MLP. JSON: an object whose `type` says which.
public enum Layer: Codable, Sendable, Equatable {
    /// `y = x W^T (+ b)`; tensors `weight [units, in]`, `bias [units]`.
    case linear(units: Int, bias: Bool)
    /// Inference batch norm; tensors `running_mean`, `running_var`, and when affine `weight`, `bias`.
    case batchNorm(eps: Double, affine: Bool)
    /// Layer norm over the feature axis; tensors `weight`, `bias` when affine.
    case layerNorm(eps: Double, affine: Bool)
    /// `max(x, 0)`.
    case relu
    /// `x` for x ≥ 0, `slope·x` otherwise.
    case leakyRelu(slope: Double)
    /// PReLU; tensor `weight [channels]` with channels 1 (scalar) or the width.
    case prelu(channels: Int)
    /// Logistic sigmoid.
    case sigmoid
    /// Hyperbolic tangent.
    case tanh
    /// GELU, exact (erf) or the tanh approximation.
    case gelu(tanhApproximation: Bool)
    /// `x·sigmoid(x)`.
    case silu
    /// Identity (an explicit "linear" activation).
    case identity
    /// Dice; tensors per variant (see `Docs/SPEC.md`).
    case dice(variant: DiceVariant, eps: Double)
    /// Dropout: identity at inference; the rate is kept for the record.
    case dropout(rate: Double?)

    enum CodingKeys: String, CodingKey {
        case type, units, bias, eps, affine, slope, channels, approximate, variant, rate
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        switch type {
        case "linear":
            self = .linear(units: try c.decode(Int.self, forKey: .units), bias: try c.decodeIfPresent(Bool.self, forKey: .bias) ?? true)
        case "batch_norm":
            self = .batchNorm(
                eps: try c.decode(Double.self, forKey: .eps), affine: try c.decodeIfPresent(Bool.self, forKey: .affine) ?? true)
        case "layer_norm":
            self = .layerNorm(
                eps: try c.decode(Double.self, forKey: .eps), affine: try c.decodeIfPresent(Bool.self, forKey: .affine) ?? true)
        case "relu": self = .relu
        case "leaky_relu": self = .leakyRelu(slope: try c.decodeIfPresent(Double.self, forKey: .slope) ?? 0.01)
        case "prelu": self = .prelu(channels: try c.decodeIfPresent(Int.self, forKey: .channels) ?? 1)
        case "sigmoid": self = .sigmoid
        case "tanh": self = .tanh
        case "gelu":
            let approximate = try c.decodeIfPresent(String.self, forKey: .approximate) ?? "none"
            guard approximate == "none" || approximate == "tanh" else {
                throw DecodingError.dataCorruptedError(
                    forKey: .approximate, in: c, debugDescription: "gelu approximate must be \"none\" or \"tanh\", got \"\(approximate)\"")
            }
            self = .gelu(tanhApproximation: approximate == "tanh")
        case "silu": self = .silu
        case "identity": self = .identity
        case "dice":
            self = .dice(variant: try c.decode(DiceVariant.self, forKey: .variant), eps: try c.decode(Double.self, forKey: .eps))
        case "dropout": self = .dropout(rate: try c.decodeIfPresent(Double.self, forKey: .rate))
        default:
            throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "unknown layer type \"\(type)\"")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(typeName, forKey: .type)
        switch self {
        case .linear(let units, let bias):
            try c.encode(units, forKey: .units)
            try c.encode(bias, forKey: .bias)
        case .batchNorm(let eps, let affine), .layerNorm(let eps, let affine):
            try c.encode(eps, forKey: .eps)
            try c.encode(affine, forKey: .affine)
        case .leakyRelu(let slope): try c.encode(slope, forKey: .slope)
        case .prelu(let channels): try c.encode(channels, forKey: .channels)
        case .gelu(let tanh): try c.encode(tanh ? "tanh" : "none", forKey: .approximate)
        case .dice(let variant, let eps):
            try c.encode(variant, forKey: .variant)
            try c.encode(eps, forKey: .eps)
        case .dropout(let rate): try c.encodeIfPresent(rate, forKey: .rate)
        case .relu, .sigmoid, .tanh, .silu, .identity: break
        }
    }

    /// The JSON `type` of this layer.
    public var typeName: String {
        switch self {
        case .linear: "linear"
        case .batchNorm: "batch_norm"
        case .layerNorm: "layer_norm"
        case .relu: "relu"
        case .leakyRelu: "leaky_relu"
        case .prelu: "prelu"
        case .sigmoid: "sigmoid"
        case .tanh: "tanh"
        case .gelu: "gelu"
        case .silu: "silu"
        case .identity: "identity"
        case .dice: "dice"
        case .dropout: "dropout"
        }
    }
}

/// A multi-layer perceptron: layers applied in order (any order of norm and activation).
public struct MLP: Codable, Sendable, Equatable {
    /// The layers, first applied first.
    public var layers: [Layer]
    /// An MLP.
    public init(layers: [Layer]) { self.layers = layers }
}

/// The family of architectures a spec describes.
public enum ArchitectureType: String, Codable, Sendable {
    /// One bottom MLP (optional), one tower per task.
    case sharedBottom = "shared_bottom"
    /// Towers straight on the shared input; products of task outputs as derived outputs.
    case esmm
    /// N experts, one softmax gate shared by all tasks.
    case omoe
    /// N experts, one softmax gate per task.
    case mmoe
    /// Progressive layered extraction (CGC levels).
    case ple
    /// Adaptive information transfer (AITM, Xi et al. KDD 2021): one bottom per task; from the
    /// second task on, an info gate on the previous task's representation and an attention over
    /// (this task's representation, that info) replace this task's representation.
    case aitm
}

/// One PLE / CGC level.
public struct PLELevel: Codable, Sendable, Equatable {
    /// Per task, its own experts (read the task's input).
    public var specificExperts: [[MLP]]
    /// Shared experts (read the shared input).
    public var sharedExperts: [MLP]
    /// Per task, a gate over its own experts followed by the shared experts.
    public var specificGates: [MLP]
    /// A gate over all experts (every task's specific experts in task order, then the shared
    /// ones) producing the next level's shared input. Present on every level but the last.
    public var sharedGate: MLP?

    /// A level.
    public init(specificExperts: [[MLP]], sharedExperts: [MLP], specificGates: [MLP], sharedGate: MLP?) {
        self.specificExperts = specificExperts
        self.sharedExperts = sharedExperts
        self.specificGates = specificGates
        self.sharedGate = sharedGate
    }

    enum CodingKeys: String, CodingKey {
        case specificExperts = "specific_experts"
        case sharedExperts = "shared_experts"
        case specificGates = "specific_gates"
        case sharedGate = "shared_gate"
    }
}

/// The architecture: which fields are used depends on `type` (see `Docs/SPEC.md`).
public struct Architecture: Codable, Sendable, Equatable {
    /// Which member of the family.
    public var type: ArchitectureType
    /// shared_bottom: the bottom MLP (absent: towers read the input).
    public var bottom: MLP?
    /// omoe, mmoe: the experts.
    public var experts: [MLP]?
    /// omoe: the single gate.
    public var gate: MLP?
    /// mmoe: one gate per task.
    public var gates: [MLP]?
    /// ple: the levels.
    public var levels: [PLELevel]?
    /// aitm: one bottom MLP per task, all with the same output width d.
    public var bottoms: [MLP]?
    /// aitm: one info-gate MLP (d → d) per task after the first, on the previous task's
    /// representation. Each is followed by the attention transfer `aits.<t-1>` (query, key and
    /// value weights `[d, d]`, no bias).
    public var infoGates: [MLP]?
    /// One tower per task.
    public var towers: [MLP]

    /// An architecture.
    public init(
        type: ArchitectureType, bottom: MLP? = nil, experts: [MLP]? = nil, gate: MLP? = nil, gates: [MLP]? = nil,
        levels: [PLELevel]? = nil, bottoms: [MLP]? = nil, infoGates: [MLP]? = nil, towers: [MLP]
    ) {
        self.type = type
        self.bottom = bottom
        self.experts = experts
        self.gate = gate
        self.gates = gates
        self.levels = levels
        self.bottoms = bottoms
        self.infoGates = infoGates
        self.towers = towers
    }

    enum CodingKeys: String, CodingKey {
        case type, bottom, experts, gate, gates, levels, bottoms, towers
        case infoGates = "info_gates"
    }
}

/// How a tower's output becomes the task's prediction.
public enum HeadKind: String, Codable, Sendable {
    /// `sigmoid(logit + bias)`; tower width 1.
    case sigmoid
    /// `logit + bias` (regression); tower width 1.
    case identity
    /// Probability of class 1 of a 2-way softmax; tower width 2; output `[N]`. Kept so that
    /// files written before `softmax` read the same; importers now write `softmax`.
    case softmax2
    /// Class probabilities `softmax(logits)`; tower width C >= 2; output `[N, C]`, as the
    /// frameworks return it. A class output (`OutputSpec.task` + `classIndex`) picks one column.
    case softmax
}

/// One task: its head and output name.
public struct TaskHead: Codable, Sendable, Equatable {
    /// Output name.
    public var name: String
    /// Head kind.
    public var head: HeadKind
    /// Whether a learned bias `heads.<t>.bias [1]` is added to the logit (DeepCTR's PredictionLayer).
    public var predictionBias: Bool

    /// A task.
    public init(name: String, head: HeadKind = .sigmoid, predictionBias: Bool = false) {
        self.name = name
        self.head = head
        self.predictionBias = predictionBias
    }

    enum CodingKeys: String, CodingKey {
        case name, head
        case predictionBias = "prediction_bias"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        head = try c.decodeIfPresent(HeadKind.self, forKey: .head) ?? .sigmoid
        predictionBias = try c.decodeIfPresent(Bool.self, forKey: .predictionBias) ?? false
    }
}

/// A ranking score fused from one-value outputs.
public struct Fusion: Codable, Sendable, Equatable {
    /// How the terms combine.
    public enum Kind: String, Codable, Sendable {
        /// `Σ_t weight_t · clip(output_t)`.
        case weightedSum = "weighted_sum"
        /// `Π_t (add_t + clip(output_t))^weight_t`.
        case weightedProduct = "weighted_product"
    }

    /// One term.
    public struct Term: Codable, Sendable, Equatable {
        /// A one-value output (task, class output, product) defined before the fusion.
        public var output: String
        /// Its weight (exponent for a product).
        public var weight: Double
        /// Added before raising to the weight (products only; default 0).
        public var add: Double?
        /// The output is clipped to [min, max] first (each optional).
        public var min: Double?
        /// Upper clip.
        public var max: Double?

        /// A term.
        public init(output: String, weight: Double, add: Double? = nil, min: Double? = nil, max: Double? = nil) {
            self.output = output
            self.weight = weight
            self.add = add
            self.min = min
            self.max = max
        }
    }

    /// Sum or product.
    public var kind: Kind
    /// The terms, in order.
    public var terms: [Term]

    /// A fusion.
    public init(kind: Kind, terms: [Term]) {
        self.kind = kind
        self.terms = terms
    }

    /// The fused value of one example (`value(output)` gives each term's output).
    public func apply(_ value: (String) -> Double) -> Double {
        var result = kind == .weightedSum ? 0.0 : 1.0
        for term in terms {
            var v = value(term.output)
            if let low = term.min { v = Swift.max(v, low) }
            if let high = term.max { v = Swift.min(v, high) }
            switch kind {
            case .weightedSum: result += term.weight * v
            case .weightedProduct: result *= Foundation.pow((term.add ?? 0) + v, term.weight)
            }
        }
        return result
    }
}

/// A named output: a task's prediction, one class of a softmax task (`task` + `class`), the
/// product of one-value outputs (ESMM's pCTCVR), or a fused ranking score (`fusion`).
public struct OutputSpec: Codable, Sendable, Equatable {
    /// Output name; without `product` or `task` it names a task.
    public var name: String
    /// Names whose values are multiplied: tasks with one value per example, or class outputs.
    public var product: [String]?
    /// A softmax task whose class `classIndex` this output is (`[N]`), e.g. the positive class.
    public var task: String?
    /// The class column of `task`.
    public var classIndex: Int?
    /// A ranking score fused from earlier one-value outputs.
    public var fusion: Fusion?

    /// An output.
    public init(name: String, product: [String]? = nil, task: String? = nil, classIndex: Int? = nil, fusion: Fusion? = nil) {
        self.name = name
        self.product = product
        self.task = task
        self.classIndex = classIndex
        self.fusion = fusion
    }

    enum CodingKeys: String, CodingKey {
        case name, product, task, fusion
        case classIndex = "class"
    }
}
