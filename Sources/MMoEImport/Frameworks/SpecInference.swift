import MMoECore

/// Builds a conversion spec from a checkpoint alone, for `convert` without `--spec`.
///
/// The framework and model class come from characteristic keys, counts from the keys, each
/// embedding table becomes one sparse feature named after it, and the rest of the first
/// layer's input width becomes width-1 dense features (`dense_0`, ...), placed where the
/// framework concatenates dense values. Everything that cannot be known this way — sequence
/// features, shared tables, task types, activations without parameters, feature names — is
/// assumed, with a note, and a spec gives the real answer.
enum SpecInference {
    static func infer(keys: CheckpointKeys, path: String, notes: inout [ImportNote]) throws(ImportError) -> ConversionSpec {
        // Self-describing Keras files say what the model is.
        if let config = keys.kerasConfig { return try KerasConfigInference.infer(config: config, path: path, notes: &notes) }
        let names = keys.order
        func has(_ prefix: String) -> Bool { names.contains { $0.hasPrefix(prefix) } }
        let framework: String
        let model: String
        let tablePrefix: String
        let firstLayer: String
        if has("embedding.embed_dict.") {
            framework = "torch-rechub"
            tablePrefix = "embedding.embed_dict."
            if has("cgc_layers.") {
                (model, firstLayer) = ("PLE", "cgc_layers.0.experts_shared.0.mlp.0.weight")
            } else if has("tower_ctr.") {
                (model, firstLayer) = ("ESMM", "tower_ctr.mlp.0.weight")
            } else if has("bottom_mlp.") {
                (model, firstLayer) = ("SharedBottom", "bottom_mlp.mlp.0.weight")
            } else if has("experts.") && has("gates.") {
                (model, firstLayer) = ("MMOE", "experts.0.mlp.0.weight")
            } else {
                throw unknown(path)
            }
        } else if has("embedding_dict.") {
            framework = "deepctr-torch"
            tablePrefix = "embedding_dict."
            if has("specific_experts.") {
                (model, firstLayer) = ("PLE", "specific_experts.0.0.0.linears.0.weight")
            } else if has("ctr_dnn.") {
                (model, firstLayer) = ("ESMM", "ctr_dnn.linears.0.weight")
            } else if has("bottom_dnn.") {
                (model, firstLayer) = ("SharedBottom", "bottom_dnn.linears.0.weight")
            } else if has("expert_dnn.") {
                (model, firstLayer) = ("MMOE", "expert_dnn.0.linears.0.weight")
            } else {
                throw unknown(path)
            }
        } else {
            throw unknown(path)
        }
        notes.append(ImportNote(.inferred, "framework \(framework), model \(model) (from the checkpoint's key names)"))

        // An ONNX graph shows the features (and more); a checkpoint alone does not.
        if let facts = keys.onnxFacts, let graphFeatures = facts.features {
            if framework == "deepctr-torch", graphFeatures.allSatisfy({ $0.column != nil }) {
                return try fromPackedGraph(
                    graphFeatures, facts: facts, keys: keys, model: model, tablePrefix: tablePrefix, path: path, notes: &notes)
            }
            if framework == "torch-rechub", graphFeatures.allSatisfy({ $0.column == nil }) {
                return try fromGraph(
                    graphFeatures, facts: facts, keys: keys, model: model, tablePrefix: tablePrefix, path: path, notes: &notes)
            }
        }
        // Tables in checkpoint order: feature order for torch.save, alphabetical for safetensors.
        var features: [[String: Any]] = []
        var embeddingWidth = 0
        for name in names where name.hasPrefix(tablePrefix) && name.hasSuffix(".weight") {
            let table = String(name.dropFirst(tablePrefix.count).dropLast(".weight".count))
            guard let shape = keys.shape(name), shape.count == 2 else { continue }
            features.append(["name": table, "kind": "sparse", framework == "torch-rechub" ? "embed_dim" : "embedding_dim": shape[1]])
            embeddingWidth += shape[1]
        }
        guard let inputWidth = keys.shape(firstLayer)?.last else {
            throw ImportError.mismatch(path: path, reason: "cannot find \(firstLayer) to infer the input width; pass --spec")
        }
        let denseWidth = inputWidth - embeddingWidth
        guard denseWidth >= 0 else {
            throw ImportError.mismatch(
                path: path,
                reason:
                    "the first layer reads \(inputWidth) values but the tables give \(embeddingWidth): features share tables or "
                    + "are sequences; pass --spec to describe them"
            )
        }
        for d in 0..<denseWidth { features.append(["name": "dense_\(d)", "kind": "dense"]) }
        notes.append(
            ImportNote(
                .assumed,
                "one sparse feature per table (\(features.count - denseWidth)), named after the table, in the order the "
                    + "checkpoint lists them; no sequence features, no shared tables"
            ))
        if denseWidth > 0 {
            notes.append(
                ImportNote(
                    .assumed,
                    "\(denseWidth) dense features of width 1 named dense_0 ... dense_\(denseWidth - 1) (the rest of the input "
                        + "width \(inputWidth))"
                ))
        }

        var values: [String: Any] = ["framework": framework, "model": model, "features": features]
        if model != "ESMM" {
            let towerKey = framework == "torch-rechub" ? "towers.%d.mlp.0.weight" : "tower_dnn_final_layer.%d.weight"
            var count = 0
            while keys.has(towerKey.replacingOccurrences(of: "%d", with: String(count))) { count += 1 }
            values["tasks"] = (0..<count).map { ["name": "task\($0)", "type": "binary"] }
            notes.append(ImportNote(.assumed, "\(count) binary tasks (sigmoid heads) named task0 ...; a regression task needs --spec"))
        }
        // Activations that have no parameters cannot be seen; the frameworks' default is relu.
        notes.append(ImportNote(.assumed, "relu wherever a layer's activation has no parameters (the frameworks' default)"))
        return try ConversionSpec(values: values, file: "(inferred conversion spec)")
    }

    /// A torch-rechub conversion spec from an exported graph: the features are the graph's
    /// inputs (kind from type and rank, table from the lookup, pooling from what follows it,
    /// padding id from the mask comparison, order from the concatenation), activations from
    /// the nodes of each MLP's activation module, task types from the sigmoids on the output.
    static func fromGraph(
        _ graphFeatures: [OnnxFacts.Feature], facts: OnnxFacts, keys: CheckpointKeys, model: String, tablePrefix: String, path: String,
        notes: inout [ImportNote]
    ) throws(ImportError) -> ConversionSpec {
        var features: [[String: Any]] = []
        var described: [String] = []
        for feature in graphFeatures {
            var item: [String: Any] = ["name": feature.name, "kind": feature.kind]
            if let table = feature.table {
                guard let (owner, shape) = tableOwner(table, keys: keys, tablePrefix: tablePrefix) else {
                    throw ImportError.mismatch(
                        path: path,
                        reason: "input '\(feature.name)' looks up '\(table)', which is not a torch-rechub embedding table; pass --spec")
                }
                item["vocab_size"] = shape[0]
                item["embed_dim"] = shape[1]
                var text = "\(feature.name) (\(feature.kind)"
                if owner != feature.name {
                    item["shared_with"] = owner
                    text += ", table of \(owner)"
                }
                if feature.kind == "sequence" {
                    item["pooling"] = feature.pooling ?? "sum"
                    text += ", \(feature.pooling ?? "sum") pooling"
                    if let length = feature.maxLength { item["max_length"] = length }
                    if let padding = feature.paddingID {
                        item["padding_idx"] = padding
                        text += ", padding \(padding)"
                    }
                }
                described.append(text + ")")
            } else {
                guard feature.width == 1 else {
                    throw ImportError.mismatch(
                        path: path,
                        reason:
                            "input '\(feature.name)' holds \(feature.width) dense values; torch-rechub dense features have one; pass --spec"
                    )
                }
                described.append("\(feature.name) (dense)")
            }
            features.append(item)
        }
        notes.append(
            ImportNote(
                .inferred,
                "features from the graph's inputs, in the order the model concatenates them: \(described.joined(separator: ", "))"))

        func activation(_ module: String) -> String? { facts.activations[keys.removedPrefix + module] }
        func params(_ module: String) -> [String: Any] { activation(module).map { ["activation": $0] } ?? [:] }
        var values: [String: Any] = ["framework": "torch-rechub", "model": model, "features": features]
        var args: [String: Any] = [:]
        var seen: [String] = []
        switch model {
        case "MMOE": args["expert_params"] = params("experts.0.mlp.2"); seen.append("experts.0.mlp.2")
        case "PLE":
            args["expert_params"] = params("cgc_layers.0.experts_shared.0.mlp.2"); seen.append("cgc_layers.0.experts_shared.0.mlp.2")
        case "SharedBottom": args["bottom_params"] = params("bottom_mlp.mlp.2"); seen.append("bottom_mlp.mlp.2")
        default:
            args["ctr_params"] = params("tower_ctr.mlp.2")
            args["cvr_params"] = params("tower_cvr.mlp.2")
            seen += ["tower_ctr.mlp.2", "tower_cvr.mlp.2"]
        }
        if model != "ESMM" {
            let count = keys.count { "towers.\($0).mlp.0.weight" }
            args["tower_params_list"] = (0..<count).map { params("towers.\($0).mlp.2") }
            seen += (0..<count).map { "towers.\($0).mlp.2" }
            values["tasks"] = graphTasks(count: count, facts: facts, notes: &notes)
        }
        values["args"] = args
        let found = seen.compactMap { module in activation(module).map { "\(module) \($0)" } }
        if !found.isEmpty { notes.append(ImportNote(.inferred, "activations from the graph: \(found.joined(separator: ", "))")) }
        return try ConversionSpec(values: values, file: "(conversion spec inferred from the ONNX graph)")
    }

    /// A DeepCTR-Torch conversion spec from an exported graph: the features are the column
    /// ranges the graph slices out of the packed input (lookups make sparse and sequence
    /// features, other slices dense ones), named after their tables (`dense_<column>` for
    /// dense values); the activation from the first expert's nodes, task types from the
    /// sigmoids on the output.
    static func fromPackedGraph(
        _ columns: [OnnxFacts.Feature], facts: OnnxFacts, keys: CheckpointKeys, model: String, tablePrefix: String, path: String,
        notes: inout [ImportNote]
    ) throws(ImportError) -> ConversionSpec {
        var features: [[String: Any]] = []
        var described: [String] = []
        var taken = Set<String>()
        for feature in columns {
            let column = feature.column ?? 0
            guard let table = feature.table else {
                let name = "dense_\(column)"
                features.append(["name": name, "kind": "dense", "dimension": feature.width])
                described.append("\(name) (dense x\(feature.width), column \(column))")
                continue
            }
            guard let (owner, shape) = tableOwner(table, keys: keys, tablePrefix: tablePrefix) else {
                throw ImportError.mismatch(
                    path: path,
                    reason: "columns from \(column) look up '\(table)', which is not a DeepCTR-Torch embedding table; pass --spec")
            }
            let name = taken.insert(owner).inserted ? owner : "\(owner)_\(column)"
            taken.insert(name)
            var item: [String: Any] = ["name": name, "kind": feature.kind, "vocabulary_size": shape[0], "embedding_dim": shape[1]]
            if name != owner { item["embedding_name"] = owner }
            var text = "\(name) (\(feature.kind), column \(column)"
            if name != owner { text += ", table \(owner)" }
            if feature.kind == "sequence" {
                item["maxlen"] = feature.maxLength ?? 1
                item["combiner"] = feature.pooling ?? "sum"
                text += ", \(feature.maxLength ?? 1) ids, \(feature.pooling ?? "sum") pooling"
            }
            features.append(item)
            described.append(text + ")")
        }
        notes.append(
            ImportNote(
                .inferred,
                "features from the column ranges the graph slices out of its packed input, in column order: "
                    + "\(described.joined(separator: ", "))"
            ))
        notes.append(
            ImportNote(
                .assumed,
                "feature names: the table's name, or table_column when a table serves several features, dense_column for dense values"))

        var values: [String: Any] = ["framework": "deepctr-torch", "model": model, "features": features]
        var args: [String: Any] = [:]
        let firstActivation: String
        switch model {
        case "PLE": firstActivation = "specific_experts.0.0.0.activation_layers.0"
        case "ESMM": firstActivation = "ctr_dnn.activation_layers.0"
        case "SharedBottom": firstActivation = "bottom_dnn.activation_layers.0"
        default: firstActivation = "expert_dnn.0.activation_layers.0"
        }
        if let activation = facts.activations[keys.removedPrefix + firstActivation] {
            args["dnn_activation"] = activation
            notes.append(ImportNote(.inferred, "dnn_activation \(activation) (from \(firstActivation))"))
        }
        if model != "ESMM" {
            let count = keys.count { "tower_dnn_final_layer.\($0).weight" }
            values["tasks"] = graphTasks(count: count, facts: facts, notes: &notes)
        }
        values["args"] = args
        return try ConversionSpec(values: values, file: "(conversion spec inferred from the ONNX graph)")
    }

    /// The feature owning a looked-up table (`[model.]embedding_dict.item.weight` → `item`) and
    /// the table's shape, when it is one of the framework's tables.
    static func tableOwner(_ table: String, keys: CheckpointKeys, tablePrefix: String) -> (String, [Int])? {
        var key = table
        if !keys.removedPrefix.isEmpty, key.hasPrefix(keys.removedPrefix) { key.removeFirst(keys.removedPrefix.count) }
        guard key.hasPrefix(tablePrefix), key.hasSuffix(".weight"), let shape = keys.shape(key), shape.count == 2 else { return nil }
        return (String(key.dropFirst(tablePrefix.count).dropLast(".weight".count)), shape)
    }

    /// `count` tasks named task0 ...: binary where a sigmoid produces the output column,
    /// regression where none does (binary for all when the graph does not say).
    static func graphTasks(count: Int, facts: OnnxFacts, notes: inout [ImportNote]) -> [[String: Any]] {
        let heads = facts.sigmoidOutputs.flatMap { $0.count == count ? $0 : nil }
        if let heads {
            notes.append(
                ImportNote(
                    .inferred,
                    "\(count) tasks named task0 ...: "
                        + heads.enumerated().map { "task\($0.offset) \($0.element ? "binary (sigmoid)" : "regression")" }.joined(
                            separator: ", ")))
        } else {
            notes.append(ImportNote(.assumed, "\(count) binary tasks (sigmoid heads) named task0 ..."))
        }
        return (0..<count).map { ["name": "task\($0)", "type": heads?[$0] == false ? "regression" : "binary"] }
    }

    static func unknown(_ path: String) -> ImportError {
        .unsupported(
            path: path,
            reason:
                "the checkpoint's keys do not match a known framework model; pass --spec with a conversion spec (see Docs/CONVERTING.md)")
    }
}
