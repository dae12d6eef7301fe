import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoERuntime

/// Runs one parser of swift-mmoe on untrusted bytes, for the fuzzers (`FuzzTesting/`) and the
/// replay of past fuzzer findings in the test suite. Every outcome but a crash or a hang is
/// acceptable: hostile bytes must end in a typed error.
public enum ParserHarness {
    /// The parsers that can be exercised.
    public static let targets = [
        "mmoe", "hdf5", "torch", "safetensors", "npy", "npz", "csv", "conversion-spec", "model-spec", "tf-index", "keras", "keras-config",
        "onnx", "onnx-export",
    ]

    /// A small model whose spec the CSV target reads inputs for: ids, and raw values of a
    /// feature with a vocabulary.
    static let csvSpec: ModelSpec = {
        var words = Feature(name: "w", kind: .sequence, table: "t", maxLength: 3, pooling: .sum, paddingID: 0)
        words.vocabulary = Vocabulary(values: ["a", "b", "c"], offset: 1, oovID: 0)
        var scaled = Feature.dense("x")
        scaled.scaler = Scaler(kind: .standard, shift: [1], scale: [2])
        return ModelSpec(
            tables: [EmbeddingTable(name: "t", vocabSize: 10, dim: 2)],
            features: [
                .dense("d", width: 2), .sparse("s", table: "t"),
                Feature(name: "q", kind: .sequence, table: "t", maxLength: 4, pooling: .mean, paddingID: 0), words, scaled,
            ],
            architecture: Architecture(type: .sharedBottom, towers: [MLP(layers: [.linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y")])
    }()

    /// Parses `bytes` with `target`; file-based parsers write them to `scratch` + a suffix.
    /// `weights` names a checkpoint for the conversion-spec target. Returns whether the input
    /// was accepted.
    @discardableResult
    public static func run(_ target: String, _ bytes: UnsafeRawBufferPointer, scratch: String, weights: String) -> Bool {
        func file(_ suffix: String) -> String {
            let path = scratch + suffix
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
            return path
        }
        switch target {
        case "mmoe":
            guard let model = try? ModelFile(storage: ByteStorage(copying: Array(bytes)), path: "fuzz.mmoe", verifyChecksums: true).model()
            else {
                return false
            }
            _ = try? model.predict([:])
            return true
        case "hdf5":
            return (try? HDF5Codec.read(path: file(".h5"))) != nil
        case "torch":
            return (try? TorchArchiveReader.read(storage: ByteStorage(copying: Array(bytes)), path: "fuzz.pt")) != nil
        case "safetensors":
            return (try? SafetensorsReader.read(storage: ByteStorage(copying: Array(bytes)), path: "fuzz.safetensors")) != nil
        case "npy":
            guard let array = try? NumpyFormat.parse(bytes, path: "fuzz.npy") else { return false }
            _ = array.strings()
            _ = array.floats()
            return true
        case "npz":
            return (try? NumpyArchive.read(path: file(".npz"))) != nil
        case "csv":
            return (try? PredictionFiles.readCSV(file(".csv"), spec: csvSpec)) != nil
        case "conversion-spec":
            return (try? ModelImporter.load(path: weights, conversionSpecPath: file(".json"))) != nil
        case "tf-index":
            // The index alone, beside an empty data file: footer, blocks, entries, protos.
            let index = file(".index")
            _ = FileManager.default.createFile(atPath: scratch + ".data-00000-of-00001", contents: Data())
            return (try? TFCheckpointReader.read(path: index)) != nil
        case "keras":
            // The reader (Keras 2 layer lists, Keras 3 nested groups, the HDF5 pre-read scan),
            // then the conversion without a spec (a full-model file's config).
            let path = file(".h5")
            guard (try? KerasH5Reader.read(path: path)) != nil else { return false }
            _ = try? ModelImporter.load(path: path, format: .keras)
            return true
        case "keras-config":
            // A Keras model config (JSON) read as data into a DeepCTR conversion spec.
            var notes: [ImportNote] = []
            return (try? KerasConfigInference.infer(config: Array(bytes), path: "fuzz.json", notes: &notes)) != nil
        case "onnx":
            // The graph walk and parameter recovery, then the conversion without a spec (the
            // features, activations and heads read from the graph); external data may only
            // name files beside the scratch file.
            let path = file(".onnx")
            guard let (checkpoint, _) = try? OnnxReader.read(path: path) else { return false }
            _ = try? ModelImporter.load(path: path, format: .onnx)
            return !checkpoint.tensors.isEmpty
        case "onnx-export":
            // A file swift-mmoe exported: the spec from its metadata, tensors by canonical name,
            // then the model compiled and run on a random batch.
            let path = file(".onnx")
            guard let result = try? ModelImporter.load(path: path, format: .onnx),
                let model = try? Model(spec: result.spec, tensors: result.tensors)
            else { return false }
            _ = try? model.predict(PredictionFiles.randomBatch(result.spec, rows: 3, seed: 1))
            return true
        case "model-spec":
            return (try? ModelSpec.decode(json: Array(bytes))) != nil
        default:
            return false
        }
    }
}
