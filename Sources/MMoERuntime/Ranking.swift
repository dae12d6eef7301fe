import MMoECore
import Synchronization

/// The result of `Model.rank`: every candidate's outputs, the score it was ranked by, and the
/// order (best first).
public struct Ranking: Sendable {
    /// The outputs, one row per candidate in the order given.
    public let prediction: Prediction
    /// The output ranked by.
    public let scoreOutput: String
    /// Its value per candidate.
    public let scores: [Float]
    /// Candidate indices from the highest score to the lowest (ties by index, NaN last).
    public let order: [Int]
    /// Whether the user part was computed once (false: the user's features were repeated on
    /// every candidate row, on paths where the first layers cannot be split).
    public let sharedUserPart: Bool
}

/// How a model splits its first layers for requests with a given set of user features.
struct RankPlan: Sendable {
    /// (input plan index, column in the compact item input) of every item feature.
    let itemSelection: [(index: Int, column: Int)]
    /// The same for the user features, in the compact user input.
    let userSelection: [(index: Int, column: Int)]
    let itemWidth: Int
    let userWidth: Int
    /// Per first-layer step index: the multiply over item columns, and the user columns' weights
    /// (16-column panels `[panel][userWidth][16]`) to fold into its bias per request.
    let firstLayers: [Int: (item: GemmStep, user: [Float])]
}

/// One request's first layers: the item multiplies with the user part in their biases.
final class RankRequest: Sendable {
    let plan: RankPlan
    let steps: [Int: GemmStep]

    init(plan: RankPlan, steps: [Int: GemmStep]) {
        self.plan = plan
        self.steps = steps
    }
}

extension Step {
    /// The scratch buffers the step reads or writes.
    var buffers: [Int] { views.map(\.buffer) }
}

extension Model {
    /// Ranks candidates for one user: `user` holds the user-side features (one row each),
    /// `candidates` the others (one row per candidate). The user side is `userFeatures`, or the
    /// features the spec marks `"side": "user"`. Embedding lookups and pooling of the user's
    /// features, and their share of the first layers (`W_user · x_user`), are computed once per
    /// request and added to `W_item · X_items` for every candidate (on the packed float32 path;
    /// elsewhere the user row is repeated). Ranked by `output`, else the first fusion output,
    /// else the first one-value output.
    public func rank(
        user: [String: FeatureArray], candidates: [String: FeatureArray], userFeatures: Set<String>? = nil, by output: String? = nil,
        options: PredictOptions = PredictOptions()
    ) throws(PredictError) -> Ranking {
        let userSide = userFeatures ?? spec.userFeatures
        for name in userSide.sorted() where featureIndex[name] == nil { throw .unknownFeature(name) }
        let itemSide = Set(spec.features.map(\.name)).subtracting(userSide)
        let userChecked = try checkBatch(user, options: options, only: userSide)
        guard userSide.isEmpty || userChecked.rows == 1 else {
            let name = userSide.sorted().first ?? ""
            throw .wrongShape(
                feature: name, expected: "one row: the user's features are given once per request", actual: user[name]?.shape ?? [])
        }
        let candidatesChecked = try checkBatch(candidates, options: options, only: itemSide)
        let rows = candidatesChecked.rows
        let score = try scoreOutput(output)
        // Both batches' arrays in plan order, as their checks looked them up.
        var ordered = zip(candidatesChecked.ordered, userChecked.ordered).map { $0 ?? $1 }
        var shared = false
        let prediction: Prediction
        if !userSide.isEmpty, !itemSide.isEmpty, let plan = rankPlan(userSide: userSide) {
            let request = try makeRequest(plan, ordered: ordered, options: options)
            prediction = try execute(rows: rows, ordered: ordered, options: options, rank: request)
            shared = true
        } else {
            // Repeat the user's row on every candidate.
            for (index, plan) in inputs.enumerated() where userSide.contains(plan.feature.name) {
                guard let array = userChecked.ordered[index] else { throw .missingFeature(plan.feature.name) }
                ordered[index] = array.row(0).repeated(rows: rows)
            }
            prediction = try execute(rows: rows, ordered: ordered, options: options, rank: nil)
        }
        let scores = prediction[score] ?? []
        let order = scores.indices.sorted { a, b in
            let (x, y) = (scores[a], scores[b])
            if x.isNaN != y.isNaN { return y.isNaN }
            if x != y, !x.isNaN { return x > y }
            return a < b
        }
        return Ranking(prediction: prediction, scoreOutput: score, scores: scores, order: order, sharedUserPart: shared)
    }

    /// The output to rank by.
    func scoreOutput(_ requested: String?) throws(PredictError) -> String {
        let widths = Dictionary(zip(outputs.map(\.name), outputWidths), uniquingKeysWith: { a, _ in a })
        if let requested {
            guard widths[requested] == 1 else {
                throw .invalidOption(
                    "rank by '\(requested)': \(widths[requested] == nil ? "no such output" : "not one value per candidate")")
            }
            return requested
        }
        if let fusion = outputs.first(where: { $0.fusion != nil }) { return fusion.name }
        guard let first = outputs.first(where: { widths[$0.name] == 1 }) else {
            throw .invalidOption("the model has no one-value output to rank by")
        }
        return first.name
    }

    /// The split of the first layers for this user side, compiled once per side and cached;
    /// nil when the path cannot split them (BLAS, bf16 weights, a first layer that is not a
    /// multiply of the whole input).
    func rankPlan(userSide: Set<String>) -> RankPlan? {
        let key = userSide.sorted().joined(separator: "\u{0}")
        if let cached = rankPlans.withLock({ $0[key] }) { return cached }
        let plan = compileRankPlan(userSide: userSide)
        rankPlans.withLock { $0[key] = plan }
        return plan
    }

    private func compileRankPlan(userSide: Set<String>) -> RankPlan? {
        guard kernel.isPacked else { return nil }
        let inputBuffer = inputView.buffer
        var firstLayers: [Int: (item: GemmStep, user: [Float])] = [:]
        var itemSelection: [(index: Int, column: Int)] = []
        var userSelection: [(index: Int, column: Int)] = []
        var itemColumns: [Int] = []
        var userColumns: [Int] = []
        for (index, plan) in inputs.enumerated() {
            let columns = Array(plan.column..<(plan.column + plan.width))
            if userSide.contains(plan.feature.name) {
                userSelection.append((index, userColumns.count))
                userColumns += columns
            } else {
                itemSelection.append((index, itemColumns.count))
                itemColumns += columns
            }
        }
        let k = inputView.width
        for (index, step) in steps.enumerated() where step.buffers.contains(inputBuffer) {
            guard case .gemm(let gemm) = step, gemm.input == inputView, !gemm.packed.isEmpty, !gemm.packedBF16, !gemm.vnni else {
                return nil
            }
            let panels = (gemm.output.width + 15) / 16
            // The item columns' panels packed in place (aligned, as the kernels read them).
            let item = PackedWeights(zeros: max(panels * 16 * itemColumns.count, 1))
            var user = [Float](repeating: 0, count: max(panels * 16 * userColumns.count, 1))
            gemm.packed.withUnsafeBufferPointer { packed in
                item.withUnsafeMutableBytes { raw in
                    let itemPanels = raw.bindMemory(to: Float.self)
                    for p in 0..<panels {
                        for (j, column) in itemColumns.enumerated() {
                            for c in 0..<16 { itemPanels[(p * itemColumns.count + j) * 16 + c] = packed[(p * k + column) * 16 + c] }
                        }
                        for (j, column) in userColumns.enumerated() {
                            for c in 0..<16 { user[(p * userColumns.count + j) * 16 + c] = packed[(p * k + column) * 16 + c] }
                        }
                    }
                }
            }
            var replacement = gemm
            replacement.input = View(buffer: inputBuffer, column: 0, width: itemColumns.count)
            replacement.packed = item
            firstLayers[index] = (replacement, user)
        }
        return RankPlan(
            itemSelection: itemSelection, userSelection: userSelection, itemWidth: itemColumns.count, userWidth: userColumns.count,
            firstLayers: firstLayers)
    }

    /// The user's compact input, then each first layer's bias plus `W_user · x_user`.
    private func makeRequest(_ plan: RankPlan, ordered: [FeatureArray?], options: PredictOptions) throws(PredictError) -> RankRequest {
        let userRow = UnsafeMutablePointer<Float>.allocate(capacity: max(plan.userWidth, 1))
        defer { userRow.deallocate() }
        let rowScratch = UnsafeMutablePointer<Float>.allocate(capacity: max(maxTableDim(), 1))
        defer { rowScratch.deallocate() }
        try assembleInput(
            start: 0, rows: 1, batch: ordered, options: options, into: userRow, ld: plan.userWidth, rowScratch: rowScratch,
            selection: plan.userSelection)
        var steps: [Int: GemmStep] = [:]
        for (index, layer) in plan.firstLayers {
            var step = layer.item
            let n = step.output.width
            let panels = (n + 15) / 16
            var bias = step.bias.isEmpty ? [Float](repeating: 0, count: n) : step.bias
            let width = plan.userWidth
            layer.user.withUnsafeBufferPointer { weights in
                bias.withUnsafeMutableBufferPointer { out in
                    for p in 0..<panels {
                        let columns = min(16, n - p * 16)
                        for j in 0..<width {
                            let x = userRow[j]
                            let base = (p * width + j) * 16
                            for c in 0..<columns { out[p * 16 + c] += x * weights[base + c] }
                        }
                    }
                }
            }
            step.bias = bias
            steps[index] = step
        }
        return RankRequest(plan: plan, steps: steps)
    }
}
