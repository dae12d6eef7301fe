import Foundation
import MMoECore

/// Models written by hand: the conversion spec carries a native spec (`Docs/SPEC.md`) and
/// rules mapping checkpoint keys to canonical names, with optional reshaping of stacked
/// tensors (experts kept as one `[E, in, out]` or `[in, units, E]` parameter).
///
/// ```
/// { "framework": "native", "spec": { ... },
///   "mapping": [ { "from": "^experts\\.(\\d+)\\.0\\.weight$", "to": "experts.$1.layers.0.weight" },
///                { "from": "^expert_kernel$", "to": "experts.{i}.layers.0.weight", "split_axis": 2, "transpose": true } ],
///   "ignore": [ "^optimizer\\." ] }
/// ```
/// A rule's steps apply in a fixed order: `squeeze` (drop unit axes), `permute` (reorder
/// axes), `split_axis` (one piece per index along that axis, named by `{i}`), `transpose`
/// (each 2-D piece). Every piece must have the shape the spec needs for its name, or the rule
/// is refused, naming it. A key that no rule matches keeps its name (it may already be canonical).
enum NativeMappingImporter {
    struct Rule {
        /// `mapping[i]` with its pattern, for errors.
        let label: String
        let pattern: NSRegularExpression
        let template: String
        let transpose: Bool
        let splitAxis: Int?
        let permute: [Int]?
        /// Unit axes to drop (`nil`: none; empty: every unit axis).
        let squeeze: [Int]?
    }

    /// A strided view of a tensor's elements (row-major source), reshaped without copying.
    struct View {
        var shape: [Int]
        var strides: [Int]
        var offset: Int
    }

    static func rules(_ conversion: ConversionSpec) throws(ImportError) -> [Rule] {
        var rules: [Rule] = []
        for (index, rule) in (try conversion.root.objects("mapping") ?? []).enumerated() {
            guard let from = try rule.string("from"), let to = try rule.string("to") else {
                throw rule.fail("from", "each rule needs from and to")
            }
            guard let regex = try? NSRegularExpression(pattern: from) else { throw rule.fail("from", "is not a valid regular expression") }
            var squeeze: [Int]?
            if rule.has("squeeze") {
                if let all = rule.values["squeeze"] as? Bool {
                    squeeze = all ? [] : nil
                } else {
                    squeeze = try rule.ints("squeeze")
                }
            }
            let splitAxis = try rule.int("split_axis")
            if splitAxis != nil, !to.contains("{i}") { throw rule.fail("to", "a rule with split_axis names its pieces with {i}") }
            rules.append(
                Rule(
                    label: "mapping[\(index)] ('\(from)')", pattern: regex, template: to, transpose: try rule.bool("transpose") ?? false,
                    splitAxis: splitAxis, permute: try rule.ints("permute"), squeeze: squeeze))
        }
        return rules
    }

    /// Applies a rule's squeeze, permute, split and transpose to `tensor`; returns the pieces'
    /// views (split index, view).
    static func pieces(of tensor: Tensor, rule: Rule, key: String, path: String) throws(ImportError) -> [(Int?, View)] {
        func fail(_ reason: String) -> ImportError { .mismatch(path: path, reason: "\(rule.label) on '\(key)' \(tensor.shape): \(reason)") }
        var strides = [Int](repeating: 1, count: tensor.shape.count)
        for axis in stride(from: tensor.shape.count - 2, through: 0, by: -1) { strides[axis] = strides[axis + 1] * tensor.shape[axis + 1] }
        var view = View(shape: tensor.shape, strides: strides, offset: 0)
        if let squeeze = rule.squeeze {
            let axes = squeeze.isEmpty ? view.shape.indices.filter { view.shape[$0] == 1 } : squeeze
            guard Set(axes).count == axes.count, axes.allSatisfy({ view.shape.indices.contains($0) && view.shape[$0] == 1 }) else {
                throw fail("squeeze \(squeeze) names an axis that is not of size 1")
            }
            let keep = view.shape.indices.filter { !axes.contains($0) }
            view = View(shape: keep.map { view.shape[$0] }, strides: keep.map { view.strides[$0] }, offset: 0)
        }
        if let permute = rule.permute {
            guard permute.sorted() == Array(view.shape.indices) else {
                throw fail("permute \(permute) is not an order of the \(view.shape.count) axes")
            }
            view = View(shape: permute.map { view.shape[$0] }, strides: permute.map { view.strides[$0] }, offset: 0)
        }
        var result: [(Int?, View)] = []
        if let axis = rule.splitAxis {
            guard view.shape.indices.contains(axis), view.shape.count >= 2 else {
                throw fail("split_axis \(axis) is not an axis of a tensor of rank >= 2")
            }
            let keep = view.shape.indices.filter { $0 != axis }
            for i in 0..<view.shape[axis] {
                result.append(
                    (
                        i,
                        View(
                            shape: keep.map { view.shape[$0] }, strides: keep.map { view.strides[$0] },
                            offset: view.offset + i * view.strides[axis])
                    ))
            }
        } else {
            result = [(nil, view)]
        }
        if rule.transpose {
            for index in result.indices {
                let piece = result[index].1
                guard piece.shape.count == 2 else { throw fail("transpose needs 2-D pieces, got \(piece.shape)") }
                result[index].1 = View(
                    shape: [piece.shape[1], piece.shape[0]], strides: [piece.strides[1], piece.strides[0]], offset: piece.offset)
            }
        }
        return result
    }

    /// The tensor a view describes: the source itself when nothing moved, else a row-major copy.
    static func materialize(_ view: View, of tensor: Tensor, path: String) throws(ImportError) -> Tensor {
        var contiguous = [Int](repeating: 1, count: view.shape.count)
        for axis in stride(from: view.shape.count - 2, through: 0, by: -1) {
            contiguous[axis] = contiguous[axis + 1] * view.shape[axis + 1]
        }
        let width = tensor.dtype.byteWidth
        do throws(ModelError) {
            if view.strides == contiguous || view.shape.reduce(1, *) <= 1 {
                return try Tensor(
                    dtype: tensor.dtype, shape: view.shape, storage: tensor.storage, byteOffset: tensor.byteOffset + view.offset * width)
            }
            let bytes = copyStrided(tensor.rawBytes, shape: view.shape, strides: view.strides, offset: view.offset, itemSize: width)
            return try Tensor(dtype: tensor.dtype, shape: view.shape, bytes: bytes)
        } catch { throw .invalidModel(path: path, error) }
    }

    static func build(
        conversion: ConversionSpec, keys: inout CheckpointKeys, builder: inout CanonicalBuilder, notes: inout [ImportNote], path: String
    ) throws(ImportError) -> ModelSpec {
        guard let specObject = try conversion.root.object("spec") else {
            throw conversion.root.fail("spec", "a native conversion needs the model spec")
        }
        // The native spec is read whole by the model spec's own (strict) decoder.
        conversion.root.ledger.takeWhole("spec")
        var spec: ModelSpec
        do {
            let data = try JSONSerialization.data(withJSONObject: specObject.values)
            spec = try ModelSpec.decode(json: Array(data))
        } catch let error as ModelError {
            throw .invalidModel(path: conversion.file, error)
        } catch {
            throw conversion.root.fail("spec", "cannot be read: \(error.localizedDescription)")
        }
        let rules = try rules(conversion)
        var ignore: [NSRegularExpression] = []
        for pattern in try conversion.root.strings("ignore") ?? [] {
            guard let regex = try? NSRegularExpression(pattern: pattern) else {
                throw conversion.root.fail("ignore", "'\(pattern)' is not a valid regular expression")
            }
            ignore.append(regex)
        }
        var required: [String: [Int]] = [:]
        do throws(ModelError) {
            for requirement in try spec.validateStructure().requirements { required[requirement.name] = requirement.shape }
        } catch { throw .invalidModel(path: conversion.file, error) }
        for table in spec.tables {
            required[TensorNames.embedding(table.name)] = [table.vocabSize, table.dim]
            required[TensorNames.embeddingScale(table.name)] = [table.vocabSize]
            required[TensorNames.embeddingOffset(table.name)] = [table.vocabSize]
        }
        var ignored: [String] = []
        for key in keys.order {
            let range = NSRange(key.startIndex..., in: key)
            if ignore.contains(where: { $0.firstMatch(in: key, range: range) != nil }) {
                keys.skip(key)
                ignored.append(key)
                continue
            }
            guard let rule = rules.first(where: { $0.pattern.firstMatch(in: key, range: range) != nil }) else {
                // Already canonical; anything else is reported as a leftover.
                if required[key] != nil { try builder.put(try keys.take(key), key) }
                continue
            }
            let target = rule.pattern.stringByReplacingMatches(in: key, range: range, withTemplate: rule.template)
            let tensor = try keys.take(key)
            for (index, view) in try pieces(of: tensor, rule: rule, key: key, path: path) {
                let name = index.map { target.replacingOccurrences(of: "{i}", with: String($0)) } ?? target
                if let shape = required[name], shape != view.shape {
                    throw .mismatch(
                        path: path,
                        reason:
                            "\(rule.label) on '\(key)' \(tensor.shape) gives '\(name)' of shape \(view.shape), the spec needs "
                            + "\(shape) (check split_axis, permute and transpose)"
                    )
                }
                try builder.put(try materialize(view, of: tensor, path: path), name)
            }
        }
        if !ignored.isEmpty {
            notes.append(
                ImportNote(
                    .ignored,
                    "\(ignored.count) keys matched 'ignore': "
                        + "\(ignored.prefix(5).joined(separator: ", "))\(ignored.count > 5 ? ", ..." : "")"
                ))
        }
        if keys.format == "onnx" { spec = try foldedNorms(spec, builder: &builder, notes: &notes, path: path) }
        return spec
    }

    /// Batch norms of the spec whose parameters an ONNX exporter folded into the linear layer
    /// before them (none of them is in the graph) become identities: mean 0, variance 1,
    /// eps 0 (scale 1, shift 0, exactly), which compute what the folded graph computes.
    static func foldedNorms(_ spec: ModelSpec, builder: inout CanonicalBuilder, notes: inout [ImportNote], path: String) throws(ImportError)
        -> ModelSpec
    {
        var spec = spec
        var folded = 0
        var failure: ImportError?
        func fold(_ prefix: String, _ mlp: inout MLP) {
            for (i, layer) in mlp.layers.enumerated() {
                guard failure == nil, case .batchNorm(_, let affine) = layer else { continue }
                let names = ["running_mean", "running_var"] + (affine ? ["weight", "bias"] : [])
                guard names.allSatisfy({ builder.store[TensorNames.layer(prefix, i, $0)] == nil }), i > 0,
                    case .linear(let units, _) = mlp.layers[i - 1]
                else { continue }
                let values: [String: Float] = ["running_mean": 0, "running_var": 1, "weight": 1, "bias": 0]
                do throws(ImportError) {
                    for name in names {
                        let bytes = [Float](repeating: values[name] ?? 0, count: units).withUnsafeBytes { Array($0) }
                        let tensor: Tensor
                        do throws(ModelError) { tensor = try Tensor(dtype: .f32, shape: [units], bytes: bytes) } catch {
                            throw .invalidModel(path: path, error)
                        }
                        try builder.put(tensor, TensorNames.layer(prefix, i, name))
                    }
                } catch { failure = error }
                mlp.layers[i] = .batchNorm(eps: 0, affine: affine)
                folded += 1
            }
        }
        spec.architecture.forEachMLP(fold)
        if let failure { throw failure }
        if folded > 0 {
            notes.append(
                ImportNote(
                    .inferred,
                    "\(folded) batch norms of the spec are not in the graph (the exporter folded them into their linear layers); "
                        + "they convert as identities"
                ))
        }
        return spec
    }

    static func transposed(_ tensor: Tensor, name: String) throws(ImportError) -> Tensor {
        guard tensor.shape.count == 2 else {
            throw .mismatch(path: name, reason: "transpose needs a 2-D tensor, '\(name)' has shape \(tensor.shape)")
        }
        let rows = tensor.shape[0]
        let columns = tensor.shape[1]
        let width = tensor.dtype.byteWidth
        let source = tensor.rawBytes
        var bytes = [UInt8](repeating: 0, count: source.count)
        for r in 0..<rows {
            for c in 0..<columns {
                for b in 0..<width { bytes[(c * rows + r) * width + b] = source[(r * columns + c) * width + b] }
            }
        }
        do throws(ModelError) { return try Tensor(dtype: tensor.dtype, shape: [columns, rows], bytes: bytes) } catch {
            throw .invalidModel(path: name, error)
        }
    }
}
