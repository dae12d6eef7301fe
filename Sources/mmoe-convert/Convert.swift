import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoEImport
import MMoERuntime

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a checkpoint or model file to .mmoe or HDF5.",
        discussion: """
            The input format is detected from the file's bytes: torch.save archives (.pt/.pth),
            safetensors, .npz, Keras HDF5 weights (.h5, .weights.h5) and .keras archives, TF2
            checkpoints (the .index file), swift-mmoe .mmoe and HDF5; ONNX exports by their .onnx
            name (external data beside them). Checkpoints hold weights only: describe the model
            with --spec (a conversion spec, see Docs/CONVERTING.md); without one, torch-rechub and
            DeepCTR-Torch checkpoints are inferred (ONNX exports of them from their graph). The converter says
            what it inferred from the checkpoint, what defaults it assumed and what it ignored.
            The output is written atomically (temporary file, fsync, rename).

            Examples:
              mmoe-convert convert mmoe.pt --spec conversion.json -o mmoe.mmoe
              mmoe-convert convert mmoe.safetensors --spec conversion.json -o mmoe.h5
              mmoe-convert convert deepctr.h5 --spec conversion.json -o deepctr.mmoe
              mmoe-convert convert mmoe.onnx -o mmoe.mmoe
              mmoe-convert convert mmoe.mmoe -o small.mmoe --dtype bf16 --quantize-embeddings int8
            """)

    @Argument(help: "The file to convert.")
    var input: String

    @Option(name: .shortAndLong, help: "Output path.")
    var output: String

    @Option(name: .long, help: "Conversion spec (JSON) describing the source model.")
    var spec: String?

    @Option(
        name: .long, help: "Input format, when detection is not wanted: \(SourceFormat.allCases.map(\.rawValue).joined(separator: ", ")).")
    var from: String?

    @Option(name: .long, help: "Output format: mmoe or h5 (default: by the output's extension, else mmoe).")
    var to: String?

    @Option(name: .long, help: "Store floating-point weights as f32, f16 or bf16 (default: as in the source).")
    var dtype: String?

    @Option(name: .long, help: "Quantize embedding tables: int8 (row-wise, one f32 scale per row).")
    var quantizeEmbeddings: String?

    func validate() throws {
        try requireFile(input, "input")
        if let spec { try requireFile(spec, "conversion spec") }
        if let from, SourceFormat(rawValue: from) == nil { throw ValidationError("unknown --from '\(from)'") }
        if let to, to != "mmoe", to != "h5" { throw ValidationError("--to must be mmoe or h5") }
        if let dtype, !["f32", "f16", "bf16"].contains(dtype) { throw ValidationError("--dtype must be f32, f16 or bf16") }
        if let quantizeEmbeddings, quantizeEmbeddings != "int8" { throw ValidationError("--quantize-embeddings takes int8") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [input] + (spec.map { [$0] } ?? [])) { return }
        try reportingErrors {
            let terminal = isatty(STDERR_FILENO) != 0
            if terminal { printNote("reading \(input) ...") }
            var result = try ModelImporter.load(path: input, format: from.flatMap(SourceFormat.init(rawValue:)), conversionSpecPath: spec)
            printNote("source: \(result.source)")
            for note in result.notes { printNote("  \(note)") }
            if let dtype, let target = DType(rawValue: dtype) {
                result.tensors = try ModelTransforms.convertFloats(result.tensors, to: target)
            }
            if quantizeEmbeddings == "int8" {
                result.tensors = try ModelTransforms.quantizeEmbeddings(spec: result.spec, tensors: result.tensors)
            }
            let format = to ?? (output.lowercased().hasSuffix(".h5") || output.lowercased().hasSuffix(".hdf5") ? "h5" : "mmoe")
            // The written model is opened (mapped, its weights packed) to prove it works: a model
            // that could not be opened here is refused before anything is written.
            let total = result.tensors.names.reduce(0) { $0 + (result.tensors[$1]?.byteCount ?? 0) }
            if let reason = MemoryBudget.refusal(
                total.multipliedReportingOverflow(by: 2).partialValue, for: "opening the converted model (\(total) bytes of tensors)")
            {
                throw ImportError.memory(path: output, reason: reason + "; nothing was written")
            }
            if terminal { printNote("writing \(output) ...") }
            if format == "h5" {
                try HDF5Codec.write(spec: result.spec, tensors: result.tensors, to: output)
            } else {
                try ModelFileWriter.write(spec: result.spec, tensors: result.tensors, to: output)
            }
            // Prove the written file opens and compiles; a file the tool itself rejects is removed.
            do { _ = try loadModel(output) } catch {
                try? FileManager.default.removeItem(atPath: output)
                throw error
            }
            print(ModelSummary(spec: result.spec, tensors: result.tensors).text(title: "wrote \(output) (\(format))"))
        }
    }
}
