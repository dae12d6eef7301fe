import ArgumentParser
import Foundation
import MMoECore
import MMoEImport
import MMoEFormat
import MMoERuntime

/// Options shared by the commands that run a model on an inputs file.
struct RunOptions: ParsableArguments {
    @Option(
        name: .long, help: "Inputs: .npz (one array per feature name) or .csv (header of feature names; sequences as space-separated ids).")
    var inputs: String

    @Option(name: .long, help: "Ids outside their table: 'error' (default) or 'row:N' to look up row N instead.")
    var unknownIds = "error"

    @Flag(name: .long, help: "Refuse NaN or infinite dense inputs (default: let them through, as the frameworks do).")
    var rejectNonFinite = false

    func predictOptions(gates: Bool) throws -> PredictOptions {
        var policy = UnknownIDPolicy.reject
        if unknownIds != "error" {
            guard unknownIds.hasPrefix("row:"), let row = Int(unknownIds.dropFirst(4)) else {
                throw ValidationError("--unknown-ids must be 'error' or 'row:N'")
            }
            policy = .useRow(row)
        }
        return PredictOptions(includeGates: gates, unknownIDs: policy, nonFinite: rejectNonFinite ? .reject : .propagate)
    }

    func validate() throws {
        try requireFile(inputs, "inputs file")
        _ = try predictOptions(gates: false)
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a model on an inputs file and write its outputs.",
        discussion: """
            Outputs are written as .npz (one float32 array per output name; with --gates also
            'gate.<name>' arrays [batch, experts]) or as .csv, chosen by the output's extension.

            Examples:
              mmoe-convert predict model.mmoe --inputs inputs.npz -o predictions.npz
              mmoe-convert predict model.mmoe --inputs batch.csv -o predictions.csv --gates
            """)

    @Argument(help: "A .mmoe or HDF5 model.")
    var model: String

    @OptionGroup var runOptions: RunOptions

    @Option(name: .shortAndLong, help: "Output file (.npz or .csv).")
    var output: String

    @Flag(name: .long, help: "Also write each gate's weights over its experts.")
    var gates = false

    func validate() throws { try requireFile(model, "model") }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        try reportingErrors {
            let loaded = try loadModel(model)
            let batch = try PredictionFiles.readInputs(runOptions.inputs, spec: loaded.spec)
            let prediction = try loaded.predict(batch, options: try runOptions.predictOptions(gates: gates))
            try PredictionFiles.writeOutputs(prediction, to: output)
            print(
                "wrote \(prediction.batchSize) rows of "
                    + "\(prediction.outputNames.joined(separator: ", "))\(gates ? " and \(prediction.gates.count) gates" : "") to \(output)"
            )
            for (feature, count) in prediction.unknownValues.sorted(by: { $0.key < $1.key }) {
                let oov = loaded.spec.features.first { $0.name == feature }?.vocabulary?.oovID ?? 0
                print("unknown values: \(count) of '\(feature)' not in its vocabulary (looked up as id \(oov))")
            }
        }
    }
}
