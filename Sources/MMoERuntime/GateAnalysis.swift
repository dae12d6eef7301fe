import Foundation
import MMoECore

/// Which experts each gate of a model mixes, level by level, with the experts named as the
/// model names them.
///
/// MMoE and OMoE have one level whose experts are `e0`, `e1`, …; every gate mixes all of
/// them. PLE level l has task t's specific experts `<task>.<j>` (tasks in order), then the
/// shared experts `shared.<k>`; task t's gate mixes its own experts then the shared ones,
/// the shared gate mixes every expert of the level in that order.
public struct GateLayout: Sendable, Equatable {
    /// One level of experts.
    public struct Level: Sendable, Equatable {
        /// Level index (0 for MMoE and OMoE).
        public let index: Int
        /// Expert names, the columns of the level's report.
        public let experts: [String]
    }

    /// One gate.
    public struct Gate: Sendable, Equatable {
        /// Gate name as `Prediction.gates` names it: `<task>`, `shared` (OMoE), `level<l>.<task>`, `level<l>.shared`.
        public let name: String
        /// The level whose experts it mixes.
        public let level: Int
        /// The experts it mixes, in mixing order, as indices into the level's `experts`.
        public let columns: [Int]
    }

    /// Levels in order.
    public let levels: [Level]
    /// Gates in the order `predict` reports them.
    public let gates: [Gate]

    /// The layout of `spec`'s gates; nil for architectures without gates (shared-bottom, ESMM, AITM).
    public init?(spec: ModelSpec) {
        let a = spec.architecture
        let tasks = spec.tasks.map(\.name)
        switch a.type {
        case .mmoe, .omoe:
            let count = a.experts?.count ?? 0
            levels = [Level(index: 0, experts: (0..<count).map { "e\($0)" })]
            let names = a.type == .omoe ? ["shared"] : tasks
            gates = names.map { Gate(name: $0, level: 0, columns: Array(0..<count)) }
        case .ple:
            var levels: [Level] = []
            var gates: [Gate] = []
            for (l, level) in (a.levels ?? []).enumerated() {
                var experts: [String] = []
                var specific: [[Int]] = []
                for (t, list) in level.specificExperts.enumerated() {
                    let name = t < tasks.count ? tasks[t] : "task\(t)"
                    specific.append(list.indices.map { experts.count + $0 })
                    experts += list.indices.map { "\(name).\($0)" }
                }
                let shared = level.sharedExperts.indices.map { experts.count + $0 }
                experts += level.sharedExperts.indices.map { "shared.\($0)" }
                levels.append(Level(index: l, experts: experts))
                for (t, own) in specific.enumerated() where t < tasks.count {
                    gates.append(Gate(name: "level\(l).\(tasks[t])", level: l, columns: own + shared))
                }
                if level.sharedGate != nil {
                    gates.append(Gate(name: "level\(l).shared", level: l, columns: Array(experts.indices)))
                }
            }
            self.levels = levels
            self.gates = gates
        case .sharedBottom, .esmm, .aitm:
            return nil
        }
    }
}

/// What one gate does over a set of examples.
public struct GateStatistics: Sendable, Codable, Equatable {
    /// Gate name (`Prediction.gates` naming).
    public let name: String
    /// Level whose experts it mixes.
    public let level: Int
    /// The experts it mixes, in mixing order.
    public let experts: [String]
    /// Mean weight per mixed expert, in `experts` order.
    public let meanWeights: [Double]
    /// Share of examples for which each mixed expert has the largest weight.
    public let topExpertShare: [Double]
    /// Share of examples whose top expert takes more than `polarisedAbove` of the weight.
    public let polarisedShare: Double
    /// Quantiles of the per-example effective number of experts, exp(entropy).
    public let effectiveExperts: Quantiles
    /// Counts of examples by the top expert's weight, in `histogramBins` equal bins over [0, 1].
    public let topWeightHistogram: [Int]

    enum CodingKeys: String, CodingKey {
        case name, level, experts
        case meanWeights = "mean_weights"
        case topExpertShare = "top_expert_share"
        case polarisedShare = "polarised_share"
        case effectiveExperts = "effective_experts"
        case topWeightHistogram = "top_weight_histogram"
    }
}

/// Quantiles of a per-example quantity.
public struct Quantiles: Sendable, Codable, Equatable {
    /// Mean over examples.
    public let mean: Double
    /// Smallest value.
    public let min: Double
    /// 10th percentile.
    public let p10: Double
    /// 25th percentile.
    public let p25: Double
    /// Median.
    public let p50: Double
    /// 75th percentile.
    public let p75: Double
    /// 90th percentile.
    public let p90: Double
    /// Largest value.
    public let max: Double

    /// Quantiles of `values` (linear interpolation between order statistics, like NumPy's default).
    public init(_ values: [Double]) {
        let sorted = values.sorted()
        func at(_ q: Double) -> Double {
            guard !sorted.isEmpty else { return .nan }
            let position = q * Double(sorted.count - 1)
            let lower = Int(position.rounded(.down))
            let upper = Swift.min(lower + 1, sorted.count - 1)
            return sorted[lower] + (sorted[upper] - sorted[lower]) * (position - Double(lower))
        }
        mean = sorted.isEmpty ? .nan : sorted.reduce(0, +) / Double(sorted.count)
        min = at(0)
        p10 = at(0.1)
        p25 = at(0.25)
        p50 = at(0.5)
        p75 = at(0.75)
        p90 = at(0.9)
        max = at(1)
    }
}

/// An expert the gates hardly use.
public struct UnusedExpert: Sendable, Codable, Equatable {
    /// Level of the expert.
    public let level: Int
    /// Expert name within its level.
    public let expert: String
    /// Its mean weight over every gate that mixes it and every example.
    public let meanWeight: Double

    enum CodingKeys: String, CodingKey {
        case level, expert
        case meanWeight = "mean_weight"
    }
}

/// The gate analysis of one set of examples.
public struct GateReport: Sendable, Codable, Equatable {
    /// Examples analysed.
    public let examples: Int
    /// Per level, the expert names (the report's columns).
    public let levels: [[String]]
    /// One entry per gate.
    public let gates: [GateStatistics]
    /// Experts whose mean weight over all gates mixing them is below `unusedBelow`.
    public let unused: [UnusedExpert]

    /// Top weight above which an example counts as polarised.
    public static let polarisedAbove = 0.9
    /// Bins of `topWeightHistogram`.
    public static let histogramBins = 10

    /// Analyses the gate weights of `prediction` (made with `includeGates`) for the rows
    /// `rows` (all rows when nil).
    public init(layout: GateLayout, gates weights: [GateWeights], rows: [Int]? = nil, unusedBelow: Double) {
        let byName = Dictionary(weights.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var statistics: [GateStatistics] = []
        var sums = layout.levels.map { [Double](repeating: 0, count: $0.experts.count) }
        var counts = layout.levels.map { [Int](repeating: 0, count: $0.experts.count) }
        var examples = 0
        for gate in layout.gates {
            guard let weight = byName[gate.name], weight.experts == gate.columns.count, gate.level < layout.levels.count else { continue }
            let e = weight.experts
            let available = e > 0 ? weight.weights.count / e : 0
            let selected = rows ?? Array(0..<available)
            examples = selected.count
            var mean = [Double](repeating: 0, count: e)
            var top = [Double](repeating: 0, count: e)
            var effective: [Double] = []
            effective.reserveCapacity(selected.count)
            var histogram = [Int](repeating: 0, count: GateReport.histogramBins)
            var polarised = 0
            for r in selected where r >= 0 && r < available {
                var entropy = 0.0
                var best = 0
                var bestWeight = -Double.infinity
                for k in 0..<e {
                    let w = Double(weight.weights[r * e + k])
                    mean[k] += w
                    if w > 0 { entropy -= w * Foundation.log(w) }
                    if w > bestWeight {
                        bestWeight = w
                        best = k
                    }
                }
                top[best] += 1
                effective.append(Foundation.exp(entropy))
                if bestWeight > GateReport.polarisedAbove { polarised += 1 }
                let bin = Swift.min(GateReport.histogramBins - 1, Swift.max(0, Int(bestWeight * Double(GateReport.histogramBins))))
                histogram[bin] += 1
            }
            let n = Double(Swift.max(selected.count, 1))
            mean = mean.map { $0 / n }
            for (k, column) in gate.columns.enumerated() {
                sums[gate.level][column] += mean[k]
                counts[gate.level][column] += 1
            }
            statistics.append(
                GateStatistics(
                    name: gate.name, level: gate.level, experts: gate.columns.map { layout.levels[gate.level].experts[$0] },
                    meanWeights: mean, topExpertShare: top.map { $0 / n }, polarisedShare: Double(polarised) / n,
                    effectiveExperts: Quantiles(effective), topWeightHistogram: histogram))
        }
        var unused: [UnusedExpert] = []
        for level in layout.levels {
            for (k, expert) in level.experts.enumerated() where counts[level.index][k] > 0 {
                let mean = sums[level.index][k] / Double(counts[level.index][k])
                if mean < unusedBelow { unused.append(UnusedExpert(level: level.index, expert: expert, meanWeight: mean)) }
            }
        }
        self.examples = examples
        levels = layout.levels.map(\.experts)
        gates = statistics
        self.unused = unused
    }
}
