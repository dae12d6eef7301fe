import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEImport
import MMoERuntime

struct Gates: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show which experts each task really uses.",
        discussion: """
            Runs the model on the inputs and reports every gate (per task; per level for PLE)
            against the real experts of its level, named as the model names them (MMoE/OMoE:
            e0, e1, ...; PLE: <task>.<j> and shared.<k>); '-' marks experts a gate does not mix.
            Per gate: the mean weight per expert, the per-example effective number of experts
            exp(-sum w ln w) as quantiles (1 = one expert takes all, E = even over E), the share
            of examples whose top expert takes more than 0.9 (polarised), a histogram of the
            top weight; experts whose mean weight over the gates mixing them is below
            --unused-below are listed as unused. --by FEATURE repeats the report for the most
            frequent values of a sparse feature. --json prints everything (schema in Docs/CLI.md).

            Examples:
              mmoe-convert gates model.mmoe --inputs inputs.npz --svg gates.svg
              mmoe-convert gates model.mmoe --inputs inputs.npz --by user_segment --html gates.html
              mmoe-convert gates model.mmoe --inputs inputs.npz --json > gates.json
            """)

    @Argument(help: "A .mmoe or HDF5 model.")
    var model: String

    @OptionGroup var runOptions: RunOptions

    @Option(name: .long, help: "Write an SVG (one panel per level, colour legend, top-weight histograms) here.")
    var svg: String?

    @Option(name: .long, help: "Write one self-contained HTML page with every panel and table here.")
    var html: String?

    @Flag(name: .long, help: "Print the report as JSON instead of tables.")
    var json = false

    @Option(name: .long, help: "Also report the gates per value of this sparse feature.")
    var by: String?

    @Option(name: .long, help: "With --by: how many of the most frequent values to report.")
    var topValues = 5

    @Option(name: .long, help: "Mean weight below which an expert is reported as unused.")
    var unusedBelow = 0.05

    func validate() throws {
        try requireFile(model, "model")
        guard topValues >= 1, topValues <= 1000 else { throw ValidationError("--top-values must be between 1 and 1000") }
        guard unusedBelow >= 0, unusedBelow <= 1 else { throw ValidationError("--unused-below must be between 0 and 1") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        try reportingErrors {
            let loaded = try loadModel(model)
            let batch = try PredictionFiles.readInputs(runOptions.inputs, spec: loaded.spec)
            guard let layout = GateLayout(spec: loaded.spec) else {
                throw InputError(description: "\(model): a \(loaded.spec.architecture.type.rawValue) model has no gates")
            }
            let prediction = try loaded.predict(batch, options: try runOptions.predictOptions(gates: true))
            let report = GateReport(layout: layout, gates: prediction.gates, unusedBelow: unusedBelow)
            var slices: [(value: Int64, report: GateReport)] = []
            if let by {
                slices = try slice(by: by, batch: batch, spec: loaded.spec).map { value, rows in
                    (value, GateReport(layout: layout, gates: prediction.gates, rows: rows, unusedBelow: unusedBelow))
                }
            }
            let title = "Gates of \((model as NSString).lastPathComponent)"
            if json {
                let document = GatesDocument(
                    model: printable(model), architecture: loaded.spec.architecture.type.rawValue, report: report, unusedBelow: unusedBelow,
                    by: by.map { feature in
                        GatesDocument.Slices(feature: feature, values: slices.map { .init(value: $0.value, report: $0.report) })
                    })
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(document), as: UTF8.self))
            } else {
                print(GatesRendering.table(report), terminator: "")
                print(
                    "(\(report.examples) examples; effective experts = exp(entropy) per example; polarised = top expert > "
                        + "\(GateReport.polarisedAbove))"
                )
                let unused = report.unused.map {
                    "\(report.levels.count > 1 ? "level \($0.level) " : "")\($0.expert) (\(String(format: "%.3f", $0.meanWeight)))"
                }
                print("unused experts (mean weight < \(unusedBelow)): \(unused.isEmpty ? "none" : unused.joined(separator: ", "))")
                for slice in slices {
                    print("\n\(by ?? "") = \(slice.value) (\(slice.report.examples) examples)")
                    print(GatesRendering.table(slice.report), terminator: "")
                }
            }
            if let svg {
                let text = GatesRendering.svg(report, title: title)
                try FileIO.writeAtomically(path: svg) { (sink: inout FileSink) throws(FormatError) in try sink.write(Array(text.utf8)) }
                if !json { print("wrote \(svg)") }
            }
            if let html {
                let text = GatesRendering.html(report, title: title, slices: slices, feature: by)
                try FileIO.writeAtomically(path: html) { (sink: inout FileSink) throws(FormatError) in try sink.write(Array(text.utf8)) }
                if !json { print("wrote \(html)") }
            }
        }
    }

    /// Rows per value of a sparse feature, the `topValues` most frequent values first (ties by value).
    func slice(by feature: String, batch: [String: FeatureArray], spec: ModelSpec) throws -> [(Int64, [Int])] {
        guard let declared = spec.features.first(where: { $0.name == feature }) else {
            throw InputError(
                description:
                    "--by \(printable(feature)): the model has no such feature (features: "
                    + "\(spec.features.map(\.name).joined(separator: ", ")))"
            )
        }
        guard declared.kind == .sparse, let array = batch[feature], case .int64(let ids) = array.values, ids.count == array.shape[0] else {
            throw InputError(
                description:
                    "--by \(printable(feature)): a \(declared.kind.rawValue) feature; slices need a sparse feature (one id per example)")
        }
        var rows: [Int64: [Int]] = [:]
        for (r, id) in ids.enumerated() { rows[id, default: []].append(r) }
        return rows.sorted { $0.value.count != $1.value.count ? $0.value.count > $1.value.count : $0.key < $1.key }.prefix(topValues).map {
            ($0.key, $0.value)
        }
    }
}

/// The document `gates --json` prints (schema in Docs/CLI.md).
struct GatesDocument: Encodable {
    struct Definitions: Encodable {
        let effectiveExperts =
            "exp(-sum_k w_k ln w_k) per example: 1 when one expert takes all the weight, E when it is spread evenly over E"
        let polarisedAbove = GateReport.polarisedAbove
        let histogramBins = GateReport.histogramBins
        let unusedBelow: Double

        enum CodingKeys: String, CodingKey {
            case effectiveExperts = "effective_experts"
            case polarisedAbove = "polarised_above"
            case histogramBins = "histogram_bins"
            case unusedBelow = "unused_below"
        }
    }

    struct Slice: Encodable {
        let value: Int64
        let report: GateReport
    }

    struct Slices: Encodable {
        let feature: String
        let values: [Slice]
    }

    let schema = "mmoe-gates/1"
    let model: String
    let architecture: String
    let definitions: Definitions
    let report: GateReport
    let by: Slices?

    init(model: String, architecture: String, report: GateReport, unusedBelow: Double, by: Slices?) {
        self.model = model
        self.architecture = architecture
        definitions = Definitions(unusedBelow: unusedBelow)
        self.report = report
        self.by = by
    }
}
