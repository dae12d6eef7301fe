import ArgumentParser
import Foundation
import MMoECore
import MMoEImport
import MMoEFormat
import MMoERuntime

struct Gates: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show how each task uses the experts.",
        discussion: """
            Runs the model on the inputs and prints, for every gate (per task; per level for PLE),
            the mean weight it gives each expert and its effective number of experts: the mean
            over examples of exp(entropy of the gate's weights), from 1 (always one expert) to the
            number of experts (uniform). --svg writes the same table as a heatmap.

            Example:
              mmoe-convert gates model.mmoe --inputs inputs.npz --svg gates.svg
            """)

    @Argument(help: "A .mmoe or HDF5 model.")
    var model: String

    @OptionGroup var runOptions: RunOptions

    @Option(name: .long, help: "Write an SVG heatmap here.")
    var svg: String?

    func validate() throws { try requireFile(model, "model") }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        try reportingErrors {
            let loaded = try loadModel(model)
            let prediction = try loaded.predict(try PredictionFiles.readInputs(runOptions.inputs, spec: loaded.spec), options: try runOptions.predictOptions(gates: true))
            guard !prediction.gates.isEmpty else {
                throw InputError(description: "\(model): a \(loaded.spec.architecture.type.rawValue) model has no gates")
            }
            let rows = max(prediction.batchSize, 1)
            var table: [(name: String, means: [Double], effective: Double)] = []
            for gate in prediction.gates {
                var means = [Double](repeating: 0, count: gate.experts)
                var effective = 0.0
                for r in 0..<prediction.batchSize {
                    var entropy = 0.0
                    for e in 0..<gate.experts {
                        let w = Double(gate.weights[r * gate.experts + e])
                        means[e] += w
                        if w > 0 { entropy -= w * log(w) }
                    }
                    effective += exp(entropy)
                }
                table.append((gate.name, means.map { $0 / Double(rows) }, effective / Double(rows)))
            }
            let width = max(8, table.map(\.name.count).max() ?? 0)
            let experts = table.map(\.means.count).max() ?? 0
            print("gate".padding(toLength: width, withPad: " ", startingAt: 0) + "  " + (0..<experts).map { "e\($0)".padding(toLength: 6, withPad: " ", startingAt: 0) }.joined(separator: " ") + "  effective")
            for row in table {
                let cells = row.means.map { String(format: "%.3f ", $0) }.joined(separator: " ")
                print(row.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + cells + String(repeating: " ", count: 7 * (experts - row.means.count)) + String(format: " %.2f", row.effective))
            }
            let note = loaded.spec.architecture.type == .ple ? "; a PLE task gate mixes its task's experts first, then the shared ones" : ""
            print("(\(prediction.batchSize) examples\(note))")
            if let svg {
                try FileIO.writeAtomically(path: svg) { (sink: inout FileSink) throws(FormatError) in try sink.write(Array(heatmap(table, experts: experts).utf8)) }
                print("wrote \(svg)")
            }
        }
    }

    func heatmap(_ table: [(name: String, means: [Double], effective: Double)], experts: Int) -> String {
        let cell = 56
        let left = 10 + 8 * (table.map(\.name.count).max() ?? 4)
        let top = 40
        let width = left + cell * experts + 110
        let height = top + cell * table.count + 30
        func escape(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" height=\"\(height)\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(left)\" y=\"16\" font-size=\"14\">mean gate weight per expert</text>\n"
        for e in 0..<experts {
            svg += "<text x=\"\(left + e * cell + cell / 2)\" y=\"\(top - 6)\" text-anchor=\"middle\">e\(e)</text>\n"
        }
        svg += "<text x=\"\(left + experts * cell + 10)\" y=\"\(top - 6)\">effective</text>\n"
        for (r, row) in table.enumerated() {
            let y = top + r * cell
            svg += "<text x=\"\(left - 8)\" y=\"\(y + cell / 2 + 4)\" text-anchor=\"end\">\(escape(row.name))</text>\n"
            for (e, value) in row.means.enumerated() {
                let shade = Int(255 - min(1, max(0, value)) * 200)
                svg += "<rect x=\"\(left + e * cell)\" y=\"\(y)\" width=\"\(cell - 2)\" height=\"\(cell - 2)\" fill=\"rgb(\(shade),\(shade),255)\"/>\n"
                svg += "<text x=\"\(left + e * cell + cell / 2)\" y=\"\(y + cell / 2 + 4)\" text-anchor=\"middle\" fill=\"\(value > 0.6 ? "white" : "black")\">\(String(format: "%.2f", value))</text>\n"
            }
            svg += "<text x=\"\(left + experts * cell + 10)\" y=\"\(y + cell / 2 + 4)\">\(String(format: "%.2f", row.effective))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }
}
