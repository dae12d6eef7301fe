import MMoECore
import MMoEHDF5

/// Reads legacy Keras 2 HDF5 weights: `model.save_weights('x.h5')` (layers at the root) and
/// `model.save('x.h5')` (layers under `model_weights/`; `model_config` is never read).
///
/// Layer order comes from the root attribute `layer_names`, each layer's weights from its
/// `weight_names` attribute; a weight `expert_0/kernel0:0` of layer `expert_0` becomes the
/// tensor `expert_0/kernel0`. Layers without weights are skipped. Values are read as f32.
public enum KerasH5Reader {
    /// Reads the weights of every layer, in the file's layer order.
    public static func read(path: String) throws(ImportError) -> SourceCheckpoint {
        do {
            let file = try HDF5File(path: path)
            var root = "/"
            var names = try file.stringArrayAttribute("/", "layer_names")
            if names == nil, file.exists("/model_weights") {
                root = "/model_weights/"
                names = try file.stringArrayAttribute("/model_weights", "layer_names")
            }
            guard let layers = names else {
                if file.exists("/layers") || file.exists("/_layer_checkpoint_dependencies") {
                    throw ImportError.unsupported(path: path, reason: "Keras 3 .weights.h5 files are not read by this build yet; save with tf-keras (TF_USE_LEGACY_KERAS=1) as model.save_weights('model.h5')")
                }
                throw ImportError.malformed(path: path, offset: nil, reason: "no layer_names attribute: not a Keras HDF5 weights file")
            }
            var tensors: [SourceTensor] = []
            for layer in layers {
                guard !layer.isEmpty, !layer.contains("\0") else { throw ImportError.malformed(path: path, offset: nil, reason: "an empty layer name") }
                let group = root + layer
                guard file.exists(group) else { throw ImportError.malformed(path: path, offset: nil, reason: "layer '\(layer)' is listed but has no group") }
                let weights = try file.stringArrayAttribute(group, "weight_names") ?? []
                for weight in weights {
                    let dataset = group + "/" + weight
                    guard file.exists(dataset) else {
                        throw ImportError.malformed(path: path, offset: nil, reason: "layer '\(layer)' lists weight '\(weight)' but the dataset is missing")
                    }
                    let info = try file.info(dataset)
                    guard case .float = info.kind else {
                        throw ImportError.malformed(path: path, offset: nil, reason: "weight '\(weight)' of layer '\(layer)' is not a float array")
                    }
                    guard let count = Tensor.checkedElementCount(info.shape) else {
                        throw ImportError.malformed(path: path, offset: nil, reason: "weight '\(weight)' has an invalid shape \(info.shape)")
                    }
                    let limit = info.storageSize.multipliedReportingOverflow(by: HDF5Codec.maxExpansion).partialValue + (1 << 20)
                    guard count <= limit / 4 else {
                        throw ImportError.limitExceeded(path: path, what: "weight '\(weight)' of \(count) values from \(info.storageSize) stored bytes", limit: limit)
                    }
                    let bytes = try file.read(dataset, as: .f32, maxBytes: count * 4)
                    var name = weight.hasSuffix(":0") ? String(weight.dropLast(2)) : weight
                    if !name.hasPrefix(layer + "/") { name = layer + "/" + name }
                    tensors.append(SourceTensor(name: name, dtype: .f32, shape: info.shape, storage: ByteStorage(copying: bytes), byteOffset: 0))
                }
            }
            return SourceCheckpoint(tensors: tensors, path: path)
        } catch let error as ImportError {
            throw error
        } catch let error as HDF5Error {
            throw .hdf5(error)
        } catch {
            throw .malformed(path: path, offset: nil, reason: "\(error)")
        }
    }
}
