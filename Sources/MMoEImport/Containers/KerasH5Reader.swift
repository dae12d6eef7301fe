import Foundation
import MMoECore
import MMoEHDF5

/// Reads legacy Keras 2 HDF5 weights: `model.save_weights('x.h5')` (layers at the root) and
/// `model.save('x.h5')` (layers under `model_weights/`; `model_config` is never read).
///
/// Layer order comes from the root attribute `layer_names`, each layer's weights from its
/// `weight_names` attribute; a weight `expert_0/kernel0:0` of layer `expert_0` becomes the
/// tensor `expert_0/kernel0`. Layers without weights are skipped. Values are read as f32.
public enum KerasH5Reader {
    /// The variable names of a Keras 3 layer's `vars/<i>`, by the class part of its path.
    static func keras3Names(kind: String, count: Int) -> [String]? {
        switch kind {
        case "dnn": return count % 2 == 0 ? (0..<(count / 2)).map { "kernel\($0)" } + (0..<(count / 2)).map { "bias\($0)" } : nil
        case "dense": return count == 1 ? ["kernel"] : count == 2 ? ["kernel", "bias"] : nil
        case "embedding": return count == 1 ? ["embeddings"] : nil
        case "prediction_layer": return count == 1 ? ["global_bias"] : nil
        case "batch_normalization":
            return count == 4
                ? ["gamma", "beta", "moving_mean", "moving_variance"] : count == 2 ? ["moving_mean", "moving_variance"] : nil
        case "p_re_lu": return count == 1 ? ["alpha"] : nil
        case "dice": return count == 1 ? ["dice_alpha"] : nil
        default: return nil
        }
    }

    /// Keras 3 `.weights.h5`: groups by class (`layers/dnn_2/vars/0`), the real layer name in
    /// the `name` attribute of `vars`. Variables become `<layer name>/<variable>` as in Keras 2.
    ///
    /// Sub-layers a layer keeps in Python lists (DeepCTR's batch norms, PReLU and Dice) are
    /// saved nested under their owner, named by class and position in the list
    /// (`layers/dnn_2/bn_layers/batch_normalization_1/vars`, `.../activation_layers/dice/bn/vars`):
    /// they become `<owner>/<component>/<variable>` (`expert_0/batch_normalization_1/gamma`,
    /// `expert_0/dice/batch_normalization/moving_mean`), the names Keras 2 files give them.
    static func readKeras3(_ file: HDF5File, path: String) throws -> SourceCheckpoint {
        var tensors: [(order: Int, tensor: SourceTensor)] = []
        let datasets = try file.datasets(under: "/layers")
        var groups: [String] = []
        for dataset in datasets {
            guard let range = dataset.range(of: "/vars/", options: .backwards) else { continue }
            let group = String(dataset[..<range.lowerBound])
            if !groups.contains(group) { groups.append(group) }
        }
        // Nested groups sort after their owner's own variables, list positions in numeric order.
        groups.sort { keras3GroupOrder($0).lexicographicallyPrecedes(keras3GroupOrder($1)) }
        for group in groups {
            let vars = group + "/vars"
            guard let layer = try file.stringAttribute(vars, "name") else {
                throw ImportError.malformed(path: path, offset: nil, reason: "'\(vars)' has no name attribute")
            }
            var count = 0
            while file.exists("\(vars)/\(count)") { count += 1 }
            let components = group.split(separator: "/").map(String.init)
            let prefix: String
            let kind: String
            if components.count == 2 {
                prefix = layer
                kind = keras3Kind(components[1])
            } else {
                // `layers/<owner>/<list>/<component>[/<inner>]`: named under the owning layer.
                guard components.count >= 4, components.count <= 5 else {
                    throw ImportError.unsupported(
                        path: path, reason: "Keras 3 variables at '\(group)' (\(layer)) are nested deeper than a layer's list of sub-layers"
                    )
                }
                let ownerVars = "/" + components[0...1].joined(separator: "/") + "/vars"
                guard file.exists(ownerVars), let owner = try file.stringAttribute(ownerVars, "name") else {
                    throw ImportError.malformed(
                        path: path, offset: nil,
                        reason: "sub-layer '\(group)' (\(layer)) has no owning layer with variables at '\(ownerVars)'")
                }
                if components.count == 4 {
                    prefix = "\(owner)/\(components[3])"
                    kind = keras3Kind(components[3])
                } else {
                    // A sub-layer's own sub-layer: Dice's `bn` is a BatchNormalization.
                    let inner = components[4] == "bn" ? "batch_normalization" : components[4]
                    prefix = "\(owner)/\(components[3])/\(inner)"
                    kind = keras3Kind(inner)
                }
            }
            // Custom layers (keras-mmoe's MMoE, ...) keep their variables by position: var0, var1, ...
            let names = keras3Names(kind: kind, count: count) ?? (0..<count).map { "var\($0)" }
            for (index, variable) in names.enumerated() {
                let dataset = "\(vars)/\(index)"
                tensors.append((tensors.count, try floatTensor(file, dataset, named: "\(prefix)/\(variable)", path: path)))
            }
        }
        // Layer order: Keras 3 files are ordered by class path, so sort unnamed layers
        // (dense, dense_1, ...) by their numeric suffix as Keras 2 files list them; variables of
        // one layer keep the order read above.
        let ordered = tensors.sorted {
            let (a, b) = (layerOrder(String($0.tensor.name.prefix { $0 != "/" })), layerOrder(String($1.tensor.name.prefix { $0 != "/" })))
            return a != b ? a < b : $0.order < $1.order
        }
        return SourceCheckpoint(tensors: ordered.map(\.tensor), path: path, format: "keras3")
    }

    /// The class part of a Keras 3 path component (`batch_normalization_12` → `batch_normalization`).
    static func keras3Kind(_ component: String) -> String {
        String(component.reversed().drop { $0.isNumber }.reversed()).trimmingSuffix("_")
    }

    /// Sorts a Keras 3 variable group: numeric suffixes compared as numbers, a layer's own
    /// `vars` before its nested sub-layers.
    static func keras3GroupOrder(_ group: String) -> [String] {
        group.split(separator: "/").map { component in
            let digits = component.reversed().prefix { $0.isNumber }
            let stem = component.dropLast(digits.count)
            return String(stem) + String(repeating: "0", count: max(0, 8 - digits.count)) + String(digits.reversed())
        }
    }

    /// A float dataset as an f32 tensor, its logical size bounded by what the file stores.
    static func floatTensor(_ file: HDF5File, _ dataset: String, named name: String, path: String) throws -> SourceTensor {
        let info = try file.info(dataset)
        guard case .float = info.kind, let count = Tensor.checkedElementCount(info.shape) else {
            throw ImportError.malformed(path: path, offset: nil, reason: "'\(dataset)' (\(name)) is not a float array of a valid shape")
        }
        let limit = info.storageSize.multipliedReportingOverflow(by: HDF5Codec.maxExpansion).partialValue + (1 << 20)
        guard count <= limit / 4 else {
            throw ImportError.limitExceeded(
                path: path, what: "'\(dataset)' of \(count) values from \(info.storageSize) stored bytes", limit: limit)
        }
        let bytes = try file.read(dataset, as: .f32, maxBytes: count * 4)
        return SourceTensor(name: name, dtype: .f32, shape: info.shape, storage: ByteStorage(copying: bytes), byteOffset: 0)
    }

    /// A sort key putting `dense_10` after `dense_9` and keeping other names in name order.
    static func layerOrder(_ name: String) -> String {
        let layer = name.prefix { $0 != "/" }
        let digits = layer.reversed().prefix { $0.isNumber }
        guard !digits.isEmpty, layer.dropLast(digits.count).hasSuffix("_") else { return name }
        return String(layer.dropLast(digits.count)) + String(repeating: "0", count: max(0, 8 - digits.count)) + String(digits.reversed())
            + name.dropFirst(layer.count)
    }

    /// Largest `model.weights.h5` expanded from a `.keras` archive.
    public static let maxArchivedWeights = 4 << 30

    /// Reads the weights of every layer, in the file's layer order. A `.keras` archive (zip) is
    /// read through its `model.weights.h5` member; its `config.json` is never evaluated.
    public static func read(path: String) throws(ImportError) -> SourceCheckpoint {
        if let zip = try? ZipArchive(path: path) {
            guard let member = zip.entry("model.weights.h5") else {
                throw .malformed(path: path, offset: nil, reason: "a .keras archive without model.weights.h5")
            }
            let temporary = NSTemporaryDirectory() + "mmoe-keras-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).weights.h5"
            let bytes = try zip.data(member, limit: maxArchivedWeights)
            guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes)) else {
                throw .malformed(path: path, offset: nil, reason: "cannot write a temporary copy of model.weights.h5")
            }
            defer { try? FileManager.default.removeItem(atPath: temporary) }
            let checkpoint: SourceCheckpoint
            do { checkpoint = try read(path: temporary) } catch { throw error.relocated(from: temporary, to: path + ":model.weights.h5") }
            var archive = SourceCheckpoint(tensors: checkpoint.tensors, path: path, format: checkpoint.format)
            if let config = zip.entry("config.json") { archive.kerasConfig = try zip.data(config, limit: KerasConfigInference.maxBytes) }
            return archive
        }
        do {
            let file = try HDF5File(path: path)
            var root = "/"
            var names = try file.stringArrayAttribute("/", "layer_names")
            if names == nil, file.exists("/model_weights") {
                root = "/model_weights/"
                names = try file.stringArrayAttribute("/model_weights", "layer_names")
            }
            guard let layers = names else {
                if file.exists("/layers") { return try readKeras3(file, path: path) }
                throw ImportError.malformed(path: path, offset: nil, reason: "no layer_names attribute: not a Keras HDF5 weights file")
            }
            var tensors: [SourceTensor] = []
            for layer in layers {
                guard !layer.isEmpty, !layer.contains("\0") else {
                    throw ImportError.malformed(path: path, offset: nil, reason: "an empty layer name")
                }
                let group = root + layer
                guard file.exists(group) else {
                    throw ImportError.malformed(path: path, offset: nil, reason: "layer '\(layer)' is listed but has no group")
                }
                let weights = try file.stringArrayAttribute(group, "weight_names") ?? []
                for weight in weights {
                    let dataset = group + "/" + weight
                    guard file.exists(dataset) else {
                        throw ImportError.malformed(
                            path: path, offset: nil, reason: "layer '\(layer)' lists weight '\(weight)' but the dataset is missing")
                    }
                    var name = weight.hasSuffix(":0") ? String(weight.dropLast(2)) : weight
                    if !name.hasPrefix(layer + "/") { name = layer + "/" + name }
                    tensors.append(try floatTensor(file, dataset, named: name, path: path))
                }
            }
            var checkpoint = SourceCheckpoint(tensors: tensors, path: path, format: "keras2")
            // `model.save('x.h5')` describes the model in a JSON attribute (read as data only).
            if root == "/model_weights/", let config = try file.stringAttribute("/", "model_config") {
                checkpoint.kerasConfig = Array(config.utf8)
            }
            return checkpoint
        } catch let error as ImportError {
            throw error
        } catch let error as HDF5Error {
            throw .hdf5(error)
        } catch {
            throw .malformed(path: path, offset: nil, reason: "\(error)")
        }
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String { hasSuffix(suffix) ? String(dropLast(suffix.count)) : self }
}
