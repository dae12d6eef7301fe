import MMoECore

/// Reading back an ONNX file that swift-mmoe wrote: the spec from metadata `mmoe.spec`, the
/// tensors from the initializers of the same (canonical) names.
enum OnnxRoundTrip {
    /// The model, or nil when the file carries no `mmoe.spec` (an export by another tool).
    static func load(path: String) throws(ImportError) -> ImportResult? {
        let graph = try OnnxGraph.read(path: path)
        guard let json = graph.metadata[OnnxExporter.specKey] else { return nil }
        try OnnxReader.checkOperators(graph, path: path)
        let spec: ModelSpec
        do throws(ModelError) { spec = try ModelSpec.decode(json: Array(json.utf8)) } catch { throw .invalidModel(path: path, error) }
        var tensors = TensorStore()
        var names = spec.tables.map { TensorNames.embedding($0.name) }
        do throws(ModelError) {
            names += try spec.validateStructure().requirements.map(\.name)
        } catch {
            throw .invalidModel(path: path, error)
        }
        for table in spec.tables {
            for name in [TensorNames.embeddingScale(table.name), TensorNames.embeddingOffset(table.name)] where graph.constants[name] != nil
            {
                names.append(name)
            }
        }
        for name in names {
            guard let source = graph.constants[name] else {
                throw .mismatch(path: path, reason: "the spec in the file's metadata needs '\(name)', which is not among its initializers")
            }
            do throws(ModelError) {
                if source.dtype == .i8 {
                    tensors.set(
                        try Tensor(dtype: .i8, shape: source.shape, storage: source.storage, byteOffset: source.byteOffset), named: name)
                } else {
                    tensors.set(try source.modelTensor(), named: name)
                }
            } catch {
                throw .invalidModel(path: path, error)
            }
        }
        do throws(ModelError) { _ = try spec.validate(tensors: tensors) } catch { throw .invalidModel(path: path, error) }
        let note = ImportNote(.inferred, "model and tensor names from the file's 'mmoe.spec' metadata (written by swift-mmoe)")
        return ImportResult(spec: spec, tensors: tensors, notes: [note], source: .onnx)
    }
}
