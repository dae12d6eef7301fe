// rank-stdin MODEL.mmoe [TOP]
//
// Reads one JSON object per line on stdin: the first line the user's features, each further
// line one candidate's features (numbers, or lists of numbers for wide dense features and id
// sequences). Ranks the candidates with `Model.rank` (the user's features are the first line's
// keys) and prints the best TOP as "rank<TAB>candidate<TAB>score".
import Foundation
import MMoE

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("rank-stdin: \(message)\n".utf8))
    exit(2)
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else { fail("usage: rank-stdin MODEL.mmoe [TOP] < requests.jsonl") }
let top = arguments.count > 2 ? Int(arguments[2]) ?? 10 : 10

let model: Model
do { model = try Model.open(path: arguments[1]) } catch { fail("\(error)") }

var lines: [[String: Any]] = []
while let line = readLine() {
    guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
    guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        fail("line \(lines.count + 1) is not a JSON object")
    }
    lines.append(object)
}
guard let userLine = lines.first, lines.count > 1 else { fail("give the user's features, then at least one candidate") }

/// One feature's values for `rows` objects, as the model's spec wants them.
func column(_ feature: Feature, _ objects: [[String: Any]]) -> FeatureArray {
    let values: [[Double]] = objects.enumerated().map { index, object in
        switch object[feature.name] {
        case let n as NSNumber: return [n.doubleValue]
        case let list as [NSNumber]: return list.map(\.doubleValue)
        default: fail("object \(index + 1) has no numeric '\(feature.name)'")
        }
    }
    switch feature.kind {
    case .dense: return .floats(values.flatMap { $0.map(Float.init) }, width: feature.width ?? 1)
    case .sparse: return .ids(values.map { Int64($0.first ?? 0) })
    case .sequence:
        let length = values.map(\.count).max() ?? 1
        let padding = Double(feature.paddingID ?? 0)
        return .sequences(values.flatMap { $0 + Array(repeating: padding, count: length - $0.count) }.map { Int64($0) }, length: length)
    }
}

let userSide = Set(userLine.keys)
var user: [String: FeatureArray] = [:]
var candidates: [String: FeatureArray] = [:]
for feature in model.spec.features {
    if userSide.contains(feature.name) {
        user[feature.name] = column(feature, [userLine])
    } else {
        candidates[feature.name] = column(feature, Array(lines.dropFirst()))
    }
}
do {
    let ranking = try model.rank(user: user, candidates: candidates, userFeatures: userSide)
    for (rank, index) in ranking.order.prefix(top).enumerated() {
        print("\(rank + 1)\t\(index)\t\(ranking.scores[index])")
    }
} catch {
    fail("\(error)")
}
