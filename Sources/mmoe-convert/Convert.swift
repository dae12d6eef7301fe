import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoEImport
import MMoERuntime

struct Convert: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a checkpoint or model file to .mmoe, HDF5 or ONNX.",
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
              mmoe-convert convert mmoe.mmoe -o mmoe.onnx --opset 17 --triton model_repository

            ONNX output (by the .onnx extension or --to onnx): standard operators only, a dynamic
            batch axis, one named input per feature (int64 [N] ids, int64 [N, L] padded
            sequences, float32 [N, W] dense), one output per model output; batch norm folded;
            the spec kept as metadata so the file converts back without a spec. --triton DIR
            also writes DIR/<name>/config.pbtxt and DIR/<name>/1/model.onnx.
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

    @Option(name: .long, help: "Output format: mmoe, h5 or onnx (default: by the output's extension, else mmoe).")
    var to: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Add a fused ranking score output: 'sum:ctr=1,ctcvr=2', 'product:ctr=1,ctcvr=0.5', or a JSON object or file.",
            discussion:
                "JSON: {\"name\": \"score\", \"kind\": \"weighted_sum\"|\"weighted_product\", \"terms\": [{\"output\", "
                + "\"weight\", \"add\", \"min\", \"max\"}]}."
        ))
    var fusion: String?

    @Option(
        name: .long,
        help: "FEATURE=FILE: store the raw value -> id vocabulary of a sparse or sequence feature (JSON list, .npy, text or CSV).")
    var vocab: [String] = []

    @Option(name: .long, help: "With --vocab: id of the first listed value (default 1: 0 stays padding/unknown).")
    var vocabOffset = 1

    @Option(name: .long, help: "With --vocab: id of values not in the vocabulary.")
    var oovId = 0

    @Option(name: .long, help: "FEATURE=N: map raw values to N hash buckets (FNV-1a 64).")
    var hashBuckets: [String] = []

    @Option(
        name: .long,
        help: "FEATURE=minmax:MIN:MAX or FEATURE=standard:MEAN:STD (comma-separated per column): the dense feature's fitted scaler.")
    var scaler: [String] = []

    @Option(name: .long, help: "Mark these comma-separated features \"side\": \"user\" (given once per ranking request).")
    var userFeatures: String?

    @Option(name: .long, help: "ONNX operator set, 13 to 21.")
    var opset = 17

    @Option(name: .long, help: "With ONNX output: also write a Triton model repository entry under this folder.")
    var triton: String?

    @Option(name: .long, help: "With --triton: the model's name in the repository (default: the output's base name).")
    var tritonName: String?

    @Option(name: .long, help: "With --triton: max_batch_size in config.pbtxt.")
    var tritonMaxBatch = 4096

    @Option(name: .long, help: "Store floating-point weights as f32, f16 or bf16 (default: as in the source).")
    var dtype: String?

    @Option(name: .long, help: "Quantize embedding tables: int8 (row-wise, one f32 scale per row).")
    var quantizeEmbeddings: String?

    func validate() throws {
        try requireFile(input, "input")
        if let spec { try requireFile(spec, "conversion spec") }
        if let from, SourceFormat(rawValue: from) == nil { throw ValidationError("unknown --from '\(from)'") }
        if let to, !["mmoe", "h5", "onnx"].contains(to) { throw ValidationError("--to must be mmoe, h5 or onnx") }
        guard OnnxExporter.opsets.contains(opset) else { throw ValidationError("--opset must be between 13 and 21") }
        guard tritonMaxBatch >= 1 else { throw ValidationError("--triton-max-batch must be at least 1") }
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
            for note in try Preprocessing.apply(
                to: &result.spec, vocab: vocab, offset: vocabOffset, oovID: oovId, hashBuckets: hashBuckets, scalers: scaler)
            {
                printNote("  preprocessing: \(note)")
            }
            if let userFeatures {
                let names = Set(userFeatures.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
                for name in names.sorted() where !result.spec.features.contains(where: { $0.name == name }) {
                    throw ValidationError("--user-features: '\(printable(name))' is not a feature of the model")
                }
                for i in result.spec.features.indices {
                    result.spec.features[i].side = names.contains(result.spec.features[i].name) ? .user : nil
                }
                printNote("  user side: \(names.sorted().joined(separator: ", "))")
            }
            if let fusion {
                let (name, value) = try FusionText.parse(fusion)
                var outputs = result.spec.resolvedOutputs.filter { $0.name != name }
                outputs.append(OutputSpec(name: name, fusion: value))
                result.spec.outputs = outputs
                do { _ = try result.spec.validate(tensors: result.tensors) } catch let error as ModelError {
                    throw ValidationError("--fusion: \(error)")
                }
                printNote("  fusion: \(name) = \(FusionText.describe(value))")
            }
            if quantizeEmbeddings == "int8" {
                result.tensors = try ModelTransforms.quantizeEmbeddings(spec: result.spec, tensors: result.tensors)
            }
            let lower = output.lowercased()
            let format = to ?? (lower.hasSuffix(".h5") || lower.hasSuffix(".hdf5") ? "h5" : lower.hasSuffix(".onnx") ? "onnx" : "mmoe")
            if format == "onnx" {
                try writeONNX(result)
                return
            }
            guard triton == nil else { throw ValidationError("--triton needs ONNX output") }
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

    /// Writes the ONNX file (and its external data, and the Triton entry), then proves it
    /// converts back: the file is read with the ONNX importer and compared with the source model.
    func writeONNX(_ result: ImportResult) throws {
        let dataName = (output as NSString).lastPathComponent + ".data"
        let export = try OnnxExporter.export(
            spec: result.spec, tensors: result.tensors, options: OnnxExportOptions(opset: opset, externalDataName: dataName))
        var written = [output]
        if let data = export.externalData {
            let dataPath = ((output as NSString).deletingLastPathComponent as NSString).appendingPathComponent(dataName)
            try FileIO.writeAtomically(path: dataPath) { (sink: inout FileSink) throws(FormatError) in try sink.write(data) }
            written.append(dataPath)
        }
        try FileIO.writeAtomically(path: output) { (sink: inout FileSink) throws(FormatError) in try sink.write(export.model) }
        // Round trip: the export must import back to a model that opens.
        do {
            let back = try ModelImporter.load(path: output, format: .onnx)
            _ = try Model(spec: back.spec, tensors: back.tensors)
        } catch {
            for path in written { try? FileManager.default.removeItem(atPath: path) }
            throw error
        }
        print("wrote \(output) (onnx, opset \(opset)\(export.externalData != nil ? ", external data \(dataName)" : ""))")
        if let triton {
            let name = tritonName ?? ((output as NSString).lastPathComponent as NSString).deletingPathExtension
            let folder = (triton as NSString).appendingPathComponent(name)
            let version = (folder as NSString).appendingPathComponent("1")
            try FileManager.default.createDirectory(atPath: version, withIntermediateDirectories: true)
            let config = TritonConfig.text(name: name, spec: result.spec, maxBatchSize: tritonMaxBatch)
            try FileIO.writeAtomically(path: (folder as NSString).appendingPathComponent("config.pbtxt")) {
                (sink: inout FileSink) throws(FormatError) in try sink.write(Array(config.utf8))
            }
            try FileIO.writeAtomically(path: (version as NSString).appendingPathComponent("model.onnx")) {
                (sink: inout FileSink) throws(FormatError) in try sink.write(export.model)
            }
            if let data = export.externalData {
                try FileIO.writeAtomically(path: (version as NSString).appendingPathComponent(dataName)) {
                    (sink: inout FileSink) throws(FormatError) in try sink.write(data)
                }
            }
            print("wrote \(folder)/config.pbtxt and \(folder)/1/model.onnx (Triton, onnxruntime backend)")
        }
    }
}

/// A Triton Inference Server model configuration for an exported model.
enum TritonConfig {
    static func text(name: String, spec: ModelSpec, maxBatchSize: Int) -> String {
        func quoted(_ s: String) -> String {
            "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        var text = "name: \(quoted(name))\nbackend: \"onnxruntime\"\nmax_batch_size: \(maxBatchSize)\n"
        // Dims exclude the batch axis (Triton adds it with max_batch_size > 0); one value per
        // example is dims [1] reshaped to a scalar, so the model sees [N].
        let inputs = spec.features.map { feature -> String in
            let (type, dims): (String, String)
            switch feature.kind {
            case .dense: (type, dims) = ("TYPE_FP32", "[ \(feature.width ?? 1) ]")
            case .sparse: (type, dims) = ("TYPE_INT64", "[ 1 ]\n    reshape: { shape: [ ] }")
            case .sequence: (type, dims) = ("TYPE_INT64", "[ -1 ]")
            }
            return "  {\n    name: \(quoted(feature.name))\n    data_type: \(type)\n    dims: \(dims)\n  }"
        }
        let widths = (try? spec.validateStructure().outputWidths) ?? []
        let outputs = spec.resolvedOutputs.enumerated().map { o, output -> String in
            let width = widths.indices.contains(o) ? widths[o] : 1
            let dims = width == 1 ? "[ 1 ]\n    reshape: { shape: [ ] }" : "[ \(width) ]"
            return "  {\n    name: \(quoted(output.name))\n    data_type: TYPE_FP32\n    dims: \(dims)\n  }"
        }
        text += "input [\n" + inputs.joined(separator: ",\n") + "\n]\n"
        text += "output [\n" + outputs.joined(separator: ",\n") + "\n]\n"
        text += "dynamic_batching {\n  max_queue_delay_microseconds: 100\n}\n"
        text += "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
        return text
    }
}
