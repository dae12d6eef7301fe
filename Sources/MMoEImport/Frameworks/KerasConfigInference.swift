import Foundation
import MMoECore

/// A DeepCTR conversion spec from a self-describing Keras file: the `model_config` attribute of
/// a full-model `.h5` (`model.save('x.h5')`) or the `config.json` of a `.keras` archive. Both
/// describe the functional graph: Input layers with names and shapes (in the model's input
/// order, which is the feature-column order), Embedding layers with vocabulary and dim and the
/// inputs they read, SequencePoolingLayers with their mode, the DNNs with hidden units,
/// activation and batch norm, and PredictionLayers with their task types. The JSON is read as
/// data; nothing in it (Lambda layers carry Python bytecode) is ever evaluated.
enum KerasConfigInference {
    /// Largest config read.
    static let maxBytes = 64 << 20

    /// One layer of the config: class, name, settings, and the (layer, node) pairs each of its
    /// call nodes reads.
    struct Layer {
        let className: String
        let name: String
        let config: [String: Any]
        let inbound: [[(layer: String, node: Int)]]
    }

    static func fail(_ path: String, _ reason: String) -> ImportError {
        .unsupported(path: path, reason: "the Keras model config: \(reason); pass --spec with a conversion spec")
    }

    /// The (layer, node) references in one inbound node, in Keras 2 (`[["item", 0, 0, {}]]`) and
    /// Keras 3 (`{"args": [{"config": {"keras_history": ["item", 0, 0]}}]}`) form.
    static func references(_ value: Any, into found: inout [(layer: String, node: Int)], depth: Int = 0) {
        guard depth < 32 else { return }
        if let array = value as? [Any] {
            if array.count >= 3, let name = array[0] as? String, let node = JSONObject.integer(array[1]),
                JSONObject.integer(array[2]) != nil
            {
                found.append((name, node))
                return
            }
            for item in array { references(item, into: &found, depth: depth + 1) }
        } else if let object = value as? [String: Any] {
            if let history = object["keras_history"] as? [Any], history.count >= 2, let name = history[0] as? String,
                let node = JSONObject.integer(history[1])
            {
                found.append((name, node))
                return
            }
            for key in object.keys.sorted() { references(object[key] as Any, into: &found, depth: depth + 1) }
        }
    }

    static func layers(_ bytes: [UInt8], path: String) throws(ImportError) -> (layers: [Layer], inputs: [String], outputs: [String]) {
        guard bytes.count <= maxBytes else { throw .limitExceeded(path: path, what: "Keras model config", limit: maxBytes) }
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: Data(bytes)) } catch { throw fail(path, "not valid JSON") }
        guard let root = parsed as? [String: Any], let config = root["config"] as? [String: Any], let list = config["layers"] as? [Any]
        else {
            throw fail(path, "no functional model (config.layers)")
        }
        var layers: [Layer] = []
        for item in list.prefix(100_000) {
            guard let layer = item as? [String: Any], let className = layer["class_name"] as? String else { continue }
            let settings = layer["config"] as? [String: Any] ?? [:]
            guard let name = layer["name"] as? String ?? settings["name"] as? String else { continue }
            var inbound: [[(layer: String, node: Int)]] = []
            for node in (layer["inbound_nodes"] as? [Any] ?? []).prefix(1024) {
                var found: [(layer: String, node: Int)] = []
                references(node, into: &found)
                inbound.append(found)
            }
            layers.append(Layer(className: className, name: name, config: settings, inbound: inbound))
        }
        func names(_ value: Any?) -> [String] {
            if let list = value as? [Any] {
                return list.compactMap { ($0 as? [Any])?.first as? String }
            }
            if let object = value as? [String: Any] { return object.keys.sorted().compactMap { (object[$0] as? [Any])?.first as? String } }
            return []
        }
        return (layers, names(config["input_layers"]), names(config["output_layers"]))
    }

    static func infer(config bytes: [UInt8], path: String, notes: inout [ImportNote]) throws(ImportError) -> ConversionSpec {
        let (layers, inputs, outputs) = try layers(bytes, path: path)
        guard !inputs.isEmpty, !outputs.isEmpty else { throw fail(path, "no input or output layers") }
        var byName: [String: Layer] = [:]
        for layer in layers { byName[layer.name] = layer }

        // Features, in the model's input order (DeepCTR builds one Input per feature column).
        var features: [[String: Any]] = []
        var described: [String] = []
        for input in inputs {
            guard let layer = byName[input], layer.className == "InputLayer" else {
                throw fail(path, "input '\(input)' is not an InputLayer")
            }
            let shape = (layer.config["batch_shape"] ?? layer.config["batch_input_shape"]) as? [Any] ?? []
            let dims = shape.dropFirst().map { JSONObject.integer($0) }
            let lookups = layers.filter { $0.className == "Embedding" }.flatMap { embedding in
                embedding.inbound.enumerated().filter { $0.element.contains { $0.layer == input } }.map { (embedding, $0.offset) }
            }
            guard let (embedding, node) = lookups.first else {
                guard dims.count == 1, let width = dims[0], width >= 1 else {
                    throw fail(path, "dense input '\(input)' has shape \(shape)")
                }
                features.append(["name": input, "kind": "dense", "dimension": width])
                described.append("\(input) (dense \(width))")
                continue
            }
            guard let vocab = JSONObject.integer(embedding.config["input_dim"]),
                let dim = JSONObject.integer(embedding.config["output_dim"])
            else {
                throw fail(path, "embedding '\(embedding.name)' has no input_dim/output_dim")
            }
            // DeepCTR names a SparseFeat's table `sparse_emb_<embedding_name>` and a
            // VarLenSparseFeat's `sparse_seq_emb_<feature>`; the importer resolves the same names.
            let embeddingName =
                embedding.name.hasPrefix("sparse_emb_") ? String(embedding.name.dropFirst("sparse_emb_".count)) : embedding.name
            var item: [String: Any] = ["name": input, "vocabulary_size": vocab, "embedding_dim": dim, "embedding_name": embeddingName]
            let pooling = layers.first {
                $0.className == "SequencePoolingLayer"
                    && $0.inbound.contains { $0.contains { $0.layer == embedding.name && $0.node == node } }
            }
            if let pooling {
                guard let mode = pooling.config["mode"] as? String, let length = dims.first ?? nil else {
                    throw fail(path, "sequence input '\(input)' has no pooling mode or length")
                }
                item["kind"] = "sequence"
                item["combiner"] = mode
                item["maxlen"] = length
                described.append("\(input) (sequence of \(length), \(mode), table \(embedding.name))")
            } else {
                item["kind"] = "sparse"
                described.append("\(input) (sparse, table \(embedding.name))")
            }
            features.append(item)
        }

        // The model class from the layer names DeepCTR gives.
        let names = Set(layers.map(\.name))
        func dnn(_ name: String) -> Layer? { byName[name].flatMap { $0.className == "DNN" ? $0 : nil } }
        let model: String
        if names.contains(where: { $0.hasPrefix("level_0_") }) {
            model = "PLE"
        } else if dnn("expert_0") != nil, names.contains(where: { $0.hasPrefix("gate_softmax_") }) {
            model = "MMOE"
        } else if outputs.count == 2, byName[outputs[1]]?.className == "Multiply" {
            model = "ESMM"
        } else if dnn("dnn") != nil, outputs.allSatisfy({ dnn("tower_\($0)") != nil }) {
            model = "SharedBottom"
        } else {
            throw fail(path, "not a DeepCTR multi-task model (MMOE, PLE, ESMM, SharedBottom)")
        }

        // Tasks from the prediction layers, in output order.
        var types: [String] = []
        for output in outputs {
            let task = byName[output]?.className == "PredictionLayer" ? byName[output]?.config["task"] as? String : "binary"
            types.append(task ?? "binary")
        }
        var args: [String: Any] = ["task_names": outputs, "task_types": types]
        func settings(_ layer: Layer?, units key: String) {
            guard let layer else { return }
            if let units = layer.config["hidden_units"] as? [Any] { args[key] = units.compactMap { JSONObject.integer($0) } }
            if args["dnn_activation"] == nil {
                var activation =
                    layer.config["activation"] as? String ?? (layer.config["activation"] as? [String: Any])?["class_name"] as? String
                if activation == "PReLU" { activation = "prelu" }
                if let activation { args["dnn_activation"] = activation.lowercased() }
            }
            if args["dnn_use_bn"] == nil, let bn = layer.config["use_bn"] as? Bool { args["dnn_use_bn"] = bn }
        }
        switch model {
        case "MMOE":
            args["num_experts"] =
                layers.filter { $0.className == "DNN" && $0.name.hasPrefix("expert_") && $0.name.dropFirst(7).allSatisfy(\.isNumber) }.count
            settings(dnn("expert_0"), units: "expert_dnn_hidden_units")
            settings(dnn("gate_\(outputs[0])"), units: "gate_dnn_hidden_units")
            settings(dnn("tower_\(outputs[0])"), units: "tower_dnn_hidden_units")
        case "PLE":
            var levels = 0
            while names.contains(where: { $0.hasPrefix("level_\(levels)_") }) { levels += 1 }
            args["num_levels"] = levels
            var specific = 0
            while dnn("level_0_task_\(outputs[0])_expert_specific_\(specific)") != nil { specific += 1 }
            var shared = 0
            while dnn("level_0_expert_shared_\(shared)") != nil { shared += 1 }
            args["specific_expert_num"] = specific
            args["shared_expert_num"] = shared
            settings(
                dnn("level_0_expert_shared_0") ?? dnn("level_0_task_\(outputs[0])_expert_specific_0"), units: "expert_dnn_hidden_units")
            settings(dnn("level_0_gate_specific_\(outputs[0])"), units: "gate_dnn_hidden_units")
            settings(dnn("tower_\(outputs[0])"), units: "tower_dnn_hidden_units")
        case "ESMM":
            settings(dnn("dnn"), units: "tower_dnn_hidden_units")
            args.removeValue(forKey: "task_types")
        default:
            settings(dnn("dnn"), units: "bottom_dnn_hidden_units")
            settings(dnn("tower_\(outputs[0])"), units: "tower_dnn_hidden_units")
        }
        notes.append(
            ImportNote(
                .inferred, "framework deepctr, model \(model) from the Keras model config (read as data; nothing in it is evaluated)"))
        notes.append(ImportNote(.inferred, "features from the model's inputs, in its input order: \(described.joined(separator: ", "))"))
        let argsText = args.keys.sorted().map { "\($0) \(args[$0].map { "\($0)" } ?? "")" }.joined(separator: ", ")
        notes.append(ImportNote(.inferred, "constructor arguments from the layers' configs: \(argsText)"))
        return try ConversionSpec(
            values: ["framework": "deepctr", "model": model, "args": args, "features": features],
            file: "(conversion spec inferred from the Keras model config)")
    }
}
