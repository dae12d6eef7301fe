import MMoECore
import MMoETestSupport
import Testing

@testable import MMoERuntime

@Suite("Ranking: one user, many candidates")
struct RankingTests {
    static let userSide: Set<String> = ["user_id", "hist sum", "context"]

    /// The request's halves of a random batch: the user's features from row 0, the rest as candidates.
    static func request(_ spec: ModelSpec, rows: Int, seed: UInt64) -> (
        user: [String: FeatureArray], candidates: [String: FeatureArray], full: [String: FeatureArray]
    ) {
        var batch = randomBatch(for: spec, rows: rows, seed: seed)
        var user: [String: FeatureArray] = [:]
        for name in userSide {
            guard let array = batch[name] else { continue }
            user[name] = array.row(0)
            batch[name] = array.row(0).repeated(rows: rows)
        }
        let candidates = batch.filter { !userSide.contains($0.key) }
        return (user, candidates, batch)
    }

    @Test(
        "rank equals a plain batch with the user's row repeated, on every sample architecture and kernel path",
        arguments: KernelPath.allCases)
    func equalsBatch(path: KernelPath) throws {
        guard path.runsHere else { return }
        for sample in SampleSpecs.all {
            let model = try Model(spec: sample.spec, tensors: try randomTensors(for: sample.spec, seed: 3), kernel: path)
            for rows in [1, 7, 300] {
                let (user, candidates, full) = Self.request(sample.spec, rows: rows, seed: UInt64(rows))
                let ranking = try model.rank(user: user, candidates: candidates, userFeatures: Self.userSide)
                let batch = try model.predict(full)
                #expect(ranking.prediction.outputNames == batch.outputNames)
                for name in batch.outputNames {
                    let (got, want) = (ranking.prediction[name] ?? [], batch[name] ?? [])
                    #expect(got.count == want.count)
                    for i in 0..<min(got.count, want.count) {
                        #expect(
                            abs(got[i] - want[i]) <= 1e-6 * max(1, abs(want[i])),
                            "\(sample.name) \(path) \(name)[\(i)]: \(got[i]) vs \(want[i])")
                    }
                }
                // Best first; the score is the fusion output where the model has one.
                let scores = ranking.scores
                #expect(ranking.order.count == rows)
                for (a, b) in zip(ranking.order, ranking.order.dropFirst()) { #expect(scores[a] >= scores[b]) }
                if sample.spec.resolvedOutputs.contains(where: { $0.fusion != nil }) { #expect(ranking.scoreOutput == "score") }
                // The user part is shared on the packed float32 paths where no first layer reads the input otherwise.
                if path.isPacked, sample.name == "mmoe" || sample.name == "esmm" || sample.name == "aitm" {
                    #expect(ranking.sharedUserPart, "\(sample.name) \(path)")
                }
            }
        }
    }

    @Test("bad requests name the feature: two user rows, a missing user feature, a user feature among the candidates, a bad score output")
    func errors() throws {
        let spec = SampleSpecs.mmoe
        let model = try Model(spec: spec, tensors: try randomTensors(for: spec, seed: 3))
        var (user, candidates, _) = Self.request(spec, rows: 5, seed: 1)
        #expect(throws: PredictError.inconsistentBatch(feature: "context", rows: 2, expected: 1)) {
            var two = user
            two["context"] = .floats([Float](repeating: 0, count: 6), width: 3)
            _ = try model.rank(user: two, candidates: candidates, userFeatures: Self.userSide)
        }
        #expect(
            throws: PredictError.wrongShape(
                feature: "context", expected: "one row: the user's features are given once per request", actual: [2, 3])
        ) {
            let two = user.mapValues { $0.repeated(rows: 2) }
            _ = try model.rank(user: two, candidates: candidates, userFeatures: Self.userSide)
        }
        #expect(throws: PredictError.missingFeature("user_id")) {
            var missing = user
            missing["user_id"] = nil
            _ = try model.rank(user: missing, candidates: candidates, userFeatures: Self.userSide)
        }
        #expect(throws: PredictError.unknownFeature("context")) {
            var extra = candidates
            extra["context"] = .floats([Float](repeating: 0, count: 15), width: 3)
            _ = try model.rank(user: user, candidates: extra, userFeatures: Self.userSide)
        }
        #expect(throws: PredictError.unknownFeature("nope")) {
            _ = try model.rank(user: user, candidates: candidates, userFeatures: Self.userSide.union(["nope"]))
        }
        #expect(throws: PredictError.invalidOption("rank by 'nope': no such output")) {
            _ = try model.rank(user: user, candidates: candidates, userFeatures: Self.userSide, by: "nope")
        }
        // The spec's own user side: "side": "user".
        var sided = spec
        for i in sided.features.indices where Self.userSide.contains(sided.features[i].name) { sided.features[i].side = .user }
        let model2 = try Model(spec: sided, tensors: try randomTensors(for: spec, seed: 3))
        candidates = candidates.filter { !Self.userSide.contains($0.key) }
        #expect(try model2.rank(user: user, candidates: candidates).prediction.batchSize == 5)
    }
}
