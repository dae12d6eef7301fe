import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEImport
import MMoERuntime

struct Rank: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rank candidates for one user: the user's features once, the candidates' as rows.",
        discussion: """
            --user is a JSON object of the user's features: a number (dense value or sparse id)
            or a list (dense values of a wide feature, or the ids of a sequence). --candidates
            is an .npz or CSV of the other features, one row per candidate. The user side is
            --user-features, else the features the model marks "side": "user". The runtime
            computes the user's embeddings and share of the first layers once per request.
            Ranked by --by, else the model's fusion output (convert --fusion), else its first
            one-value output. Prints the top candidates (row index, score, every output).

            Examples:
              mmoe-convert rank model.mmoe --user user.json --candidates items.csv --top 50
              mmoe-convert rank model.mmoe --user user.json --candidates items.npz --user-features user_id,age --json
            """)

    @Argument(help: "A .mmoe or HDF5 model.")
    var model: String

    @Option(name: .long, help: "The user's features (JSON object).")
    var user: String

    @Option(name: .long, help: "The candidates' features (.npz or .csv).")
    var candidates: String

    @Option(name: .long, help: "Comma-separated user-side features (default: the model's \"side\": \"user\" features).")
    var userFeatures: String?

    @Option(name: .long, help: "The output to rank by.")
    var by: String?

    @Option(name: .long, help: "How many candidates to print.")
    var top = 50

    @Flag(name: .long, help: "Print one JSON object.")
    var json = false

    @Option(name: .shortAndLong, help: "Also write every candidate's outputs and score here (.npz or .csv).")
    var output: String?

    func validate() throws {
        try requireFile(model, "model")
        try requireFile(user, "user features")
        try requireFile(candidates, "candidates")
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        try reportingErrors {
            let loaded = try loadModel(model)
            let side = userFeatures.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            let userSide = side ?? loaded.spec.userFeatures
            let userArrays = try UserFeatures.read(user, spec: loaded.spec, side: userSide)
            let itemSpec = loaded.spec.features.filter { !userSide.contains($0.name) }
            var spec = loaded.spec
            spec.features = itemSpec
            let items = try PredictionFiles.readInputs(candidates, spec: spec)
            let ranking = try loaded.rank(user: userArrays, candidates: items, userFeatures: userSide, by: by)
            let shown = Array(ranking.order.prefix(top))
            let names = ranking.prediction.outputNames.filter { ranking.prediction.widths[$0] == 1 }
            if json {
                let rows: [[String: Any]] = shown.enumerated().map { rank, index in
                    var row: [String: Any] = ["rank": rank + 1, "candidate": index, "score": Double(ranking.scores[index])]
                    for name in names { row[name] = Double(ranking.prediction[name]?[index] ?? .nan) }
                    return row
                }
                let object: [String: Any] = [
                    "score_output": ranking.scoreOutput, "candidates": ranking.prediction.batchSize, "top": rows,
                    "user_part_shared": ranking.sharedUserPart,
                ]
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print("rank  candidate  \(ranking.scoreOutput)  " + names.filter { $0 != ranking.scoreOutput }.joined(separator: "  "))
                for (rank, index) in shown.enumerated() {
                    let others = names.filter { $0 != ranking.scoreOutput }.map {
                        String(format: "%.6f", ranking.prediction[$0]?[index] ?? .nan)
                    }
                    print(String(format: "%-5d %-10d %.6f  ", rank + 1, index, ranking.scores[index]) + others.joined(separator: "  "))
                }
                print(
                    "(\(ranking.prediction.batchSize) candidates; user part "
                        + "\(ranking.sharedUserPart ? "computed once" : "repeated per row"))"
                )
            }
            if let output { try PredictionFiles.writeOutputs(ranking.prediction, to: output) }
        }
    }
}

/// The user's features from a JSON object.
enum UserFeatures {
    static func read(_ path: String, spec: ModelSpec, side: Set<String>) throws -> [String: FeatureArray] {
        let bytes = try FileIO.readAll(path: path, limit: 16 << 20)
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            throw InputError(description: "\(path): not a JSON object of feature values")
        }
        var result: [String: FeatureArray] = [:]
        for (name, value) in object {
            guard let feature = spec.features.first(where: { $0.name == name }) else {
                throw InputError(description: "\(path): '\(printable(name))' is not a feature of the model")
            }
            guard side.contains(name) else {
                throw InputError(
                    description:
                        "\(path): '\(printable(name))' is not a user-side feature (give it with the candidates, or in --user-features)")
            }
            let numbers: [Double]
            if let list = value as? [Any] {
                numbers = try list.map { item in
                    guard let n = item as? NSNumber, !(item is Bool) else {
                        throw InputError(description: "\(path): feature '\(printable(name))' holds a non-numeric value")
                    }
                    return n.doubleValue
                }
            } else if let n = value as? NSNumber, !(value is Bool) {
                numbers = [n.doubleValue]
            } else {
                throw InputError(description: "\(path): feature '\(printable(name))' must be a number or a list of numbers")
            }
            switch feature.kind {
            case .dense:
                result[name] = .floats(numbers.map { Float($0) }, width: numbers.count)
            case .sparse, .sequence:
                let ids = try numbers.map { v -> Int64 in
                    guard v == v.rounded(), abs(v) < 9e15 else {
                        throw InputError(description: "\(path): feature '\(printable(name))' holds \(v), which is not an id")
                    }
                    return Int64(v)
                }
                if feature.kind == .sparse {
                    guard ids.count == 1 else { throw InputError(description: "\(path): sparse feature '\(printable(name))' takes one id") }
                    result[name] = .ids(ids)
                } else {
                    guard !ids.isEmpty else { throw InputError(description: "\(path): sequence feature '\(printable(name))' is empty") }
                    guard ids.count <= feature.maxLength ?? Int.max else {
                        throw InputError(
                            description:
                                "\(path): sequence feature '\(printable(name))' holds \(ids.count) ids; it takes at most "
                                + "\(feature.maxLength ?? 0)"
                        )
                    }
                    result[name] = .sequences(ids, length: ids.count)
                }
            }
        }
        return result
    }
}
