import ArgumentParser
import Foundation
import MMoECore
import MMoEImport
import MMoEFormat
import MMoERuntime

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare a model's outputs with expected outputs, or check stored checksums.",
        discussion: """
            With --inputs and --expected: runs the model and reports, per output, the largest
            absolute and relative error and the worst row. An element passes when
            |got - expected| <= atol + rtol * |expected|. Exit 0 when every element passes, 1
            otherwise. With --checksums: recomputes every tensor checksum of a .mmoe file.

            Examples:
              mmoe-convert verify model.mmoe --inputs inputs.npz --expected outputs.npz
              mmoe-convert verify model.mmoe --inputs inputs.npz --expected outputs.npz --atol 1e-6 --rtol 0
              mmoe-convert verify model.mmoe --checksums
            """)

    @Argument(help: "A .mmoe or HDF5 model.")
    var model: String

    @Option(name: .long, help: "Inputs (.npz or .csv).")
    var inputs: String?

    @Option(name: .long, help: "Expected outputs (.npz or .csv, one array/column per output name).")
    var expected: String?

    @Option(name: .long, help: "Absolute tolerance.")
    var atol: Double = 1e-5

    @Option(name: .long, help: "Relative tolerance.")
    var rtol: Double = 1e-4

    @Flag(name: .long, help: "Check every stored tensor checksum instead.")
    var checksums = false

    func validate() throws {
        try requireFile(model, "model")
        if checksums { return }
        guard let inputs, let expected else { throw ValidationError("give --inputs and --expected, or --checksums") }
        try requireFile(inputs, "inputs file")
        try requireFile(expected, "expected outputs file")
        guard atol >= 0, rtol >= 0 else { throw ValidationError("tolerances must be >= 0") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        var passed = true
        try reportingErrors {
            if checksums {
                do {
                    let file = try ModelFile(path: model)
                    try file.verifyChecksums()
                    print("\(model): header and \(file.entries.count) tensor checksums OK")
                } catch let error as FormatError {
                    if case .tensorChecksumMismatch = error {
                        print("\(model): FAILED: \(error.description)")
                        passed = false
                        return
                    }
                    throw error
                }
                return
            }
            guard let inputs, let expected else { return }
            let loaded = try loadModel(model)
            let prediction = try loaded.predict(try PredictionFiles.readInputs(inputs, spec: loaded.spec))
            let wanted = try PredictionFiles.readExpectedArrays(expected)
            var compared = 0
            var skipped: [String] = []
            print("output        max_abs_err   max_rel_err   worst_row   result")
            for name in prediction.outputNames {
                guard let expectedArray = wanted[name] else {
                    skipped.append(name)
                    continue
                }
                let want = expectedArray.values
                let got = prediction.outputs[name] ?? []
                let shape = prediction.shape(of: name) ?? [prediction.batchSize]
                // [N] and [N, 1] are the same one-value output; class probabilities compare shape for shape.
                let sameShape = expectedArray.shape == shape || (shape.count == 1 && expectedArray.shape == shape + [1])
                guard sameShape, want.count == got.count else {
                    throw InputError(
                        description: "\(expected): output '\(name)' has shape \(expectedArray.shape), the model produced \(shape)")
                }
                let width = max(1, shape.count == 2 ? shape[1] : 1)
                compared += 1
                var maxAbs = 0.0
                var maxRel = 0.0
                var worst = 0
                var worstExcess = -Double.infinity
                var ok = true
                for i in 0..<got.count {
                    let g = Double(got[i])
                    let w = Double(want[i])
                    let error = abs(g - w)
                    let bad = !(error <= atol + rtol * abs(w)) || g.isNaN != w.isNaN
                    if g.isNaN && w.isNaN { continue }
                    maxAbs = max(maxAbs, error.isNaN ? .infinity : error)
                    maxRel = max(maxRel, abs(w) > 0 ? error / abs(w) : (error > 0 ? .infinity : 0))
                    let excess = error - (atol + rtol * abs(w))
                    if excess > worstExcess || excess.isNaN { worstExcess = excess; worst = i }
                    if bad { ok = false }
                }
                if !ok { passed = false }
                let column = name.padding(toLength: max(12, name.count), withPad: " ", startingAt: 0)
                let worstRow = String(worst / width)
                print(
                    "\(column)  \(String(format: "%.3e", maxAbs))     \(String(format: "%.3e", maxRel))     "
                        + "\(worstRow.padding(toLength: 9, withPad: " ", startingAt: 0))   \(ok ? "ok" : "FAIL")"
                )
            }
            if !skipped.isEmpty, compared > 0 {
                print("not in \(expected), not compared: \(skipped.joined(separator: ", "))")
            }
            guard compared > 0 else {
                throw InputError(
                    description: "\(expected) has none of the model's outputs (\(prediction.outputNames.joined(separator: ", ")))")
            }
            print(passed ? "PASS: \(compared) outputs within atol \(atol), rtol \(rtol)" : "FAIL: outside atol \(atol), rtol \(rtol)")
        }
        if !passed { throw ExitCode(ExitCodes.verificationFailed) }
    }
}
