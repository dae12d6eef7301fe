// paired MODEL.mmoe BATCH THREADS SECONDS NAME=VALUE [NAME=VALUE ...]
//
// Loads MODEL twice: A as the environment is, B with the NAME=VALUE settings present while it
// loads (settings read when a model is loaded, such as MMOE_NO_BF16_HANDOFF=1). Then predicts
// one batch of random valid inputs with A and B alternately (A first, then B first) for
// SECONDS and prints each one's median and fastest call and the median of the per-pair time
// ratios A/B, which a shared machine's changes of speed affect far less than two separate runs:
// above 1, B is faster. Also prints the largest difference between A's and B's outputs.
import Foundation
import MMoE

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("paired: \(message)\n".utf8))
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 6, let rows = Int(arguments[2]), rows > 0, let threads = Int(arguments[3]), threads > 0,
    let seconds = Double(arguments[4]), seconds > 0
else { fail("usage: paired MODEL.mmoe BATCH THREADS SECONDS NAME=VALUE [NAME=VALUE ...]") }
let settings = arguments.dropFirst(5).map { argument -> (String, String) in
    let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
    guard parts.count == 2, !parts[0].isEmpty else { fail("'\(argument)' is not NAME=VALUE") }
    return (parts[0], parts[1])
}

let modelA: Model
let modelB: Model
do {
    modelA = try Model.open(path: arguments[1])
    for (name, value) in settings { setenv(name, value, 1) }
    modelB = try Model.open(path: arguments[1])
    for (name, _) in settings { unsetenv(name) }
} catch { fail("\(error)") }

// Random valid inputs (a fixed seed): uniform dense values in [-1, 1), ids within each table.
var state: UInt64 = 0x9E37_79B9_7F4A_7C15
@MainActor func next() -> UInt64 {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    return state >> 17
}
let vocabulary = Dictionary(modelA.spec.tables.map { ($0.name, UInt64($0.vocabSize)) }, uniquingKeysWith: { a, _ in a })
var batch: [String: FeatureArray] = [:]
for feature in modelA.spec.features {
    let size = max(vocabulary[feature.table ?? ""] ?? 1, 1)
    switch feature.kind {
    case .dense:
        let width = feature.width ?? 1
        batch[feature.name] = .floats((0..<(rows * width)).map { _ in Float(next() % 2000) / 1000 - 1 }, width: width)
    case .sparse:
        batch[feature.name] = .ids((0..<rows).map { _ in Int64(next() % size) })
    case .sequence:
        let length = feature.maxLength ?? 1
        batch[feature.name] = .sequences((0..<(rows * length)).map { _ in Int64(next() % size) }, length: length)
    }
}

ComputeThreads.set(threads)
let a: Prediction
let b: Prediction
do {
    a = try modelA.predict(batch)
    b = try modelB.predict(batch)
} catch { fail("\(error)") }
var difference: Float = 0
for name in a.outputNames {
    for (x, y) in zip(a[name] ?? [], b[name] ?? []) { difference = max(difference, abs(x - y)) }
}

var timesA: [Double] = []
var timesB: [Double] = []
var ratios: [Double] = []
let end = Date().addingTimeInterval(seconds)
var bFirst = false
while Date() < end || ratios.count < 5 {
    var times = [0.0, 0.0]
    for which in bFirst ? [1, 0] : [0, 1] {
        let start = DispatchTime.now().uptimeNanoseconds
        do { _ = try (which == 0 ? modelA : modelB).predict(batch) } catch { fail("\(error)") }
        times[which] = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }
    bFirst.toggle()
    timesA.append(times[0])
    timesB.append(times[1])
    ratios.append(times[0] / times[1])
}
func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }
func micros(_ seconds: Double) -> String { String(format: "%.1f us", seconds * 1e6) }
let setting = settings.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
print(
    "batch \(rows), \(threads) threads, \(ratios.count) pairs: A median \(micros(median(timesA))) (fastest "
        + "\(micros(timesA.min() ?? 0))), B [\(setting)] median \(micros(median(timesB))) (fastest \(micros(timesB.min() ?? 0))); "
        + "A/B time ratio median \(String(format: "%.3f", median(ratios))); largest output difference "
        + "\(String(format: "%.2e", Double(difference)))")
