import MMoECore
import MMoERuntime
import MMoETestSupport
import Testing

@Suite("Bad batches get typed errors")
struct BatchErrorTests {
    let spec = SampleSpecs.mmoe
    let model: Model
    let batch: [String: FeatureArray]

    init() throws {
        model = try Model(spec: spec, tensors: try randomTensors(for: spec, seed: 3))
        batch = randomBatch(for: spec, rows: 4, seed: 4)
    }

    func expectError(_ expected: PredictError, _ change: (inout [String: FeatureArray]) -> Void, options: PredictOptions = PredictOptions())
    {
        var bad = batch
        change(&bad)
        #expect(throws: expected) { _ = try model.predict(bad, options: options) }
    }

    @Test func missingAndUnknown() {
        expectError(.missingFeature("price")) { $0["price"] = nil }
        expectError(.unknownFeature("prize")) { $0["prize"] = .floats([1, 2, 3, 4]) }
    }

    @Test func dtypesAndShapes() {
        expectError(.wrongDType(feature: "user_id", expected: "int64", actual: "float32")) { $0["user_id"] = .floats([1, 2, 3, 4]) }
        expectError(.wrongDType(feature: "price", expected: "float32", actual: "int64")) { $0["price"] = .ids([1, 2, 3, 4]) }
        expectError(.wrongShape(feature: "context", expected: "[B, 3]", actual: [6, 2])) {
            $0["context"] = .floats([Float](repeating: 0, count: 12), width: 2)
        }
        expectError(.wrongShape(feature: "hist sum", expected: "[B, L] with 1 <= L <= 4", actual: [4, 5])) {
            $0["hist sum"] = .sequences([Int64](repeating: 1, count: 20), length: 5)
        }
        expectError(.wrongShape(feature: "price", expected: "3 values", actual: [4])) {
            $0["price"] = FeatureArray(values: .float32([1, 2, 3]), shape: [4])
        }
        expectError(.inconsistentBatch(feature: "item_id", rows: 3, expected: 4)) { $0["item_id"] = .ids([1, 2, 3]) }
    }

    @Test func idsOutOfRange() throws {
        expectError(.idOutOfRange(feature: "user_id", row: 2, position: nil, id: 11, vocabSize: 11)) {
            $0["user_id"] = .ids([0, 1, 11, 2])
        }
        expectError(.idOutOfRange(feature: "hist_mean", row: 1, position: 2, id: -4, vocabSize: 17)) {
            $0["hist_mean"] = .sequences([1, 2, 3, 1, 2, -4, 0, 0, 0, 5, 5, 5], length: 3)
        }
        // With a fallback row the same batch predicts, and equals the batch with that row.
        var bad = batch
        bad["user_id"] = .ids([0, 1, 11, 2])
        var fixed = batch
        fixed["user_id"] = .ids([0, 1, 0, 2])
        let fallback = try model.predict(bad, options: PredictOptions(unknownIDs: .useRow(0)))
        #expect(fallback == (try model.predict(fixed)))
        expectError(
            .invalidOption("fallback row 99 is outside table 'user' (0..<11)"), { _ in }, options: PredictOptions(unknownIDs: .useRow(99)))
    }

    @Test func nonFinite() throws {
        var bad = batch
        bad["context"] = .floats([0, 0, 0, 0, .nan, 0, 0, 0, 0, 0, 0, 0], width: 3)
        #expect(throws: PredictError.nonFiniteInput(feature: "context", row: 1, column: 1)) {
            _ = try model.predict(bad, options: PredictOptions(nonFinite: .reject))
        }
        let propagated = try model.predict(bad)
        #expect(propagated["ctr"]?[1].isNaN == true)
        #expect(propagated["ctr"]?[0].isNaN == false)
    }

    @Test func emptyBatch() throws {
        var empty: [String: FeatureArray] = [:]
        for (name, array) in batch {
            var shape = array.shape
            shape[0] = 0
            switch array.values {
            case .float32: empty[name] = FeatureArray(values: .float32([]), shape: shape)
            case .int64: empty[name] = FeatureArray(values: .int64([]), shape: shape)
            case .strings: empty[name] = FeatureArray(values: .strings([]), shape: shape)
            }
        }
        let prediction = try model.predict(empty)
        #expect(prediction.batchSize == 0)
        #expect(prediction["ctr"] == [])
    }
}
