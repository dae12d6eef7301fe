import MMoECore
import MMoEFormat
import MMoEHDF5

/// The kinds of file `mmoe-convert` reads.
public enum SourceFormat: String, Sendable, CaseIterable, CustomStringConvertible {
    /// swift-mmoe native format.
    case mmoe
    /// swift-mmoe HDF5 layout.
    case h5
    /// Keras HDF5 weights (legacy `.h5` or Keras 3 `.weights.h5`).
    case keras
    /// `torch.save` zip archive.
    case torch
    /// safetensors.
    case safetensors
    /// NumPy `.npz` archive of named arrays.
    case npz
    /// ONNX model.
    case onnx
    /// TensorFlow checkpoint (`.index` + `.data-*`).
    case tfCheckpoint = "tf-checkpoint"

    public var description: String { rawValue }

    /// Detects the format from the file's bytes (not its name).
    public static func detect(path: String) throws(ImportError) -> SourceFormat {
        let storage: ByteStorage
        do throws(FormatError) { storage = try FileIO.map(path: path) } catch { throw .io(error) }
        let bytes = storage.bytes
        let head = Array(bytes.prefix(16))
        if head.starts(with: ModelFileLayout.magic) { return .mmoe }
        if head.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) {
            if let file = try? HDF5File(path: path), (try? file.stringAttribute("/", "mmoe_format")) == HDF5Codec.formatName { return .h5 }
            return .keras
        }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x50, 0x4B, 0x05, 0x06]) {
            let zip = try ZipArchive(storage: storage, path: path)
            if zip.entries.contains(where: { $0.name.hasSuffix("data.pkl") }) { return .torch }
            if zip.entries.contains(where: { $0.name == "model.weights.h5" }) { return .keras }
            if !zip.entries.isEmpty, zip.entries.allSatisfy({ $0.name.hasSuffix(".npy") }) { return .npz }
            throw .unsupported(path: path, reason: "a ZIP archive that is neither a torch.save file, an .npz nor a .keras file")
        }
        if head.count >= 9, head[8] == UInt8(ascii: "{") {
            let length = head[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            if length >= 2, length <= UInt64(bytes.count - 8) { return .safetensors }
        }
        if bytes.count >= 48, Array(bytes.suffix(8)) == [0x57, 0xFB, 0x80, 0x8B, 0x24, 0x75, 0x47, 0xDB] { return .tfCheckpoint }
        if path.hasSuffix(".onnx") { return .onnx }
        if head.starts(with: [0x80]) {
            throw .unsupported(
                path: path,
                reason:
                    "a legacy (pre-1.6, non-zip) torch.save file; re-save it with a recent torch: torch.save(model.state_dict(), "
                    + "'model.pt')"
            )
        }
        throw .unsupported(path: path, reason: "unknown file format (pass --from to name it)")
    }
}

/// A note the converter prints: what it inferred, assumed, ignored.
public struct ImportNote: Sendable, Equatable, CustomStringConvertible {
    /// The note's category.
    public enum Kind: String, Sendable {
        /// Read from the checkpoint.
        case inferred
        /// A default taken because neither spec nor checkpoint said.
        case assumed
        /// Present in the checkpoint but not part of the model.
        case ignored
    }
    /// Category.
    public let kind: Kind
    /// Text.
    public let message: String

    /// A note.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// What an importer produces: a model plus notes.
public struct ImportResult: Sendable {
    /// The model description.
    public var spec: ModelSpec
    /// Canonical tensors.
    public var tensors: TensorStore
    /// What was inferred, assumed and ignored.
    public var notes: [ImportNote]
    /// Source format.
    public var source: SourceFormat

    /// A result.
    public init(spec: ModelSpec, tensors: TensorStore, notes: [ImportNote], source: SourceFormat) {
        self.spec = spec
        self.tensors = tensors
        self.notes = notes
        self.source = source
    }
}

/// Loads any supported model file into (spec, canonical tensors).
public enum ModelImporter {
    /// Imports `path`. Formats that hold only weights need a conversion spec.
    public static func load(path: String, format requested: SourceFormat? = nil, conversionSpecPath: String? = nil) throws(ImportError)
        -> ImportResult
    {
        let format: SourceFormat
        if let requested { format = requested } else { format = try SourceFormat.detect(path: path) }
        switch format {
        case .mmoe:
            do throws(FormatError) {
                let file = try ModelFile(path: path)
                return ImportResult(spec: file.spec, tensors: file.tensors, notes: [], source: .mmoe)
            } catch {
                throw .io(error)
            }
        case .h5:
            do throws(HDF5Error) {
                let (spec, tensors) = try HDF5Codec.read(path: path)
                return ImportResult(spec: spec, tensors: tensors, notes: [], source: .h5)
            } catch {
                throw .hdf5(error)
            }
        case .onnx where conversionSpecPath == nil:
            if let result = try OnnxRoundTrip.load(path: path) { return result }
            return try CheckpointConverter.convert(path: path, format: format, conversionSpecPath: nil)
        default:
            // Without a conversion spec the framework, model and features are inferred from the
            // checkpoint's keys where possible (with notes on every assumption).
            return try CheckpointConverter.convert(path: path, format: format, conversionSpecPath: conversionSpecPath)
        }
    }
}
