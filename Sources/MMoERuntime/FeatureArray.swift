import MMoECore

/// One input feature's values for a batch.
///
/// Dense features take `float32` arrays of shape `[B]` (width 1) or `[B, width]`; sparse
/// features take `int64` ids of shape `[B]` or `[B, 1]`; sequence features take `int64` ids
/// of shape `[B, L]` with `1 ≤ L ≤ max_length`, padded with the feature's `padding_id`.
public struct FeatureArray: Sendable, Equatable {
    /// The values, row-major.
    public enum Values: Sendable, Equatable {
        /// Float values (dense features).
        case float32([Float])
        /// Ids (sparse and sequence features).
        case int64([Int64])
        /// Raw values of a sparse or sequence feature with a vocabulary or hash buckets; in a
        /// sequence the empty string is padding.
        case strings([String])

        /// Number of values.
        public var count: Int {
            switch self {
            case .float32(let values): values.count
            case .int64(let values): values.count
            case .strings(let values): values.count
            }
        }

        /// `float32` or `int64`.
        public var dtypeName: String {
            switch self {
            case .float32: "float32"
            case .int64: "int64"
            case .strings: "string"
            }
        }
    }

    /// The values.
    public var values: Values
    /// The shape, batch first.
    public var shape: [Int]

    /// Values with an explicit shape (checked when predicting).
    public init(values: Values, shape: [Int]) {
        self.values = values
        self.shape = shape
    }

    /// Dense values, `[B]` when `width` is 1, else `[B, width]`.
    public static func floats(_ values: [Float], width: Int = 1) -> FeatureArray {
        let rows = width > 0 ? values.count / width : 0
        return FeatureArray(values: .float32(values), shape: width == 1 ? [rows] : [rows, width])
    }

    /// One id per example, shape `[B]`.
    public static func ids(_ values: [Int64]) -> FeatureArray {
        FeatureArray(values: .int64(values), shape: [values.count])
    }

    /// Example `index` alone (batch size 1).
    public func row(_ index: Int) -> FeatureArray {
        let per = shape.first.map { $0 > 0 ? values.count / $0 : 0 } ?? 0
        let range = (index * per)..<((index + 1) * per)
        let rowShape = [1] + shape.dropFirst()
        switch values {
        case .float32(let v): return FeatureArray(values: .float32(Array(v[range])), shape: rowShape)
        case .int64(let v): return FeatureArray(values: .int64(Array(v[range])), shape: rowShape)
        case .strings(let v): return FeatureArray(values: .strings(Array(v[range])), shape: rowShape)
        }
    }

    /// Every example repeated `rows` times in order (a one-example array repeated gives `rows` copies).
    public func repeated(rows: Int) -> FeatureArray {
        var newShape = shape
        if newShape.isEmpty { newShape = [0] }
        newShape[0] = rows * max(shape.first ?? 1, 1)
        switch values {
        case .float32(let v): return FeatureArray(values: .float32((0..<rows).flatMap { _ in v }), shape: newShape)
        case .int64(let v): return FeatureArray(values: .int64((0..<rows).flatMap { _ in v }), shape: newShape)
        case .strings(let v): return FeatureArray(values: .strings((0..<rows).flatMap { _ in v }), shape: newShape)
        }
    }

    /// Padded id lists, shape `[B, length]`.
    public static func sequences(_ values: [Int64], length: Int) -> FeatureArray {
        FeatureArray(values: .int64(values), shape: [length > 0 ? values.count / length : 0, length])
    }
}

/// What to do with ids outside a table.
public enum UnknownIDPolicy: Sendable, Equatable {
    /// Throw `PredictError.idOutOfRange` (the default).
    case reject
    /// Look up this row instead (it must exist in every table that a lookup falls back in).
    case useRow(Int)
}

/// What to do with NaN or infinite dense inputs.
public enum NonFinitePolicy: Sendable, Equatable {
    /// Let them flow through the arithmetic (the frameworks' behaviour; the default).
    case propagate
    /// Throw `PredictError.nonFiniteInput`.
    case reject
}

/// Options of one `predict` call.
public struct PredictOptions: Sendable, Equatable {
    /// Also return the softmax gate weights of every gate.
    public var includeGates: Bool
    /// Handling of ids outside their table.
    public var unknownIDs: UnknownIDPolicy
    /// Handling of NaN and infinity in dense inputs.
    public var nonFinite: NonFinitePolicy

    /// Options; the defaults reject bad ids and let non-finite values through.
    public init(includeGates: Bool = false, unknownIDs: UnknownIDPolicy = .reject, nonFinite: NonFinitePolicy = .propagate) {
        self.includeGates = includeGates
        self.unknownIDs = unknownIDs
        self.nonFinite = nonFinite
    }
}

/// The weights one gate gave its experts, per example: `[batch, experts]` row-major.
public struct GateWeights: Sendable, Equatable {
    /// Gate name: `<task>` (MMoE/OMoE), `level<l>.<task>` or `level<l>.shared` (PLE).
    public let name: String
    /// Experts mixed, in mixing order.
    public let experts: Int
    /// Weights, row-major `[batch, experts]`.
    public let weights: [Float]

    /// Gate weights (from `predict`, or stored ones to analyse with `GateReport`).
    public init(name: String, experts: Int, weights: [Float]) {
        self.name = name
        self.experts = experts
        self.weights = weights
    }
}

/// The result of `predict`: per output, one value per example, or C class probabilities per
/// example for a softmax task (row-major `[batch, C]`).
public struct Prediction: Sendable, Equatable {
    /// Number of examples.
    public let batchSize: Int
    /// Output names in the spec's order.
    public let outputNames: [String]
    /// Values per output name, row-major `[batchSize, width]`.
    public let outputs: [String: [Float]]
    /// Values per example of each output (1, or the classes of a softmax task).
    public let widths: [String: Int]
    /// Gate weights in plan order (empty unless requested).
    public let gates: [GateWeights]
    /// Raw values not in their feature's vocabulary (looked up as its out-of-vocabulary id), per feature.
    public var unknownValues: [String: Int] = [:]

    /// The values of one output.
    public subscript(output: String) -> [Float]? { outputs[output] }

    /// The shape of one output: `[batchSize]`, or `[batchSize, C]` for class probabilities.
    public func shape(of output: String) -> [Int]? {
        guard let width = widths[output] else { return nil }
        return width == 1 ? [batchSize] : [batchSize, width]
    }
}

/// Why a batch was rejected. Every case names the feature (and row where it applies).
public enum PredictError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A feature of the spec is absent from the batch.
    case missingFeature(String)
    /// The batch has a feature the spec does not know.
    case unknownFeature(String)
    /// Float values given for ids, or ids for floats.
    case wrongDType(feature: String, expected: String, actual: String)
    /// The shape does not fit the feature.
    case wrongShape(feature: String, expected: String, actual: [Int])
    /// Features disagree about the batch size.
    case inconsistentBatch(feature: String, rows: Int, expected: Int)
    /// An id outside its table (or a negative id).
    case idOutOfRange(feature: String, row: Int, position: Int?, id: Int64, vocabSize: Int)
    /// NaN or infinity in a dense input, with `nonFinite: .reject`.
    case nonFiniteInput(feature: String, row: Int, column: Int)
    /// An option cannot be applied to this model.
    case invalidOption(String)

    public var description: String {
        switch self {
        case .missingFeature(let name): "feature '\(name)' is missing from the batch"
        case .unknownFeature(let name): "the model has no feature '\(name)'"
        case .wrongDType(let feature, let expected, let actual):
            "feature '\(feature)' must be \(expected), got \(actual)"
        case .wrongShape(let feature, let expected, let actual):
            "feature '\(feature)' must have shape \(expected), got \(actual)"
        case .inconsistentBatch(let feature, let rows, let expected):
            "feature '\(feature)' has \(rows) rows, other features have \(expected)"
        case .idOutOfRange(let feature, let row, let position, let id, let vocab):
            "feature '\(feature)' row \(row)\(position.map { " position \($0)" } ?? ""): id \(id) is outside its table (0..<\(vocab))"
        case .nonFiniteInput(let feature, let row, let column):
            "feature '\(feature)' row \(row) column \(column) is not finite"
        case .invalidOption(let reason): "invalid predict option: \(reason)"
        }
    }
}
