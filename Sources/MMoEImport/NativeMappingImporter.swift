import Foundation
import MMoECore

/// Models written by hand: the conversion spec carries a native spec (`Docs/SPEC.md`) and
/// rules mapping checkpoint keys to canonical names, with optional transpose and splitting of
/// stacked tensors (experts kept as one `[E, in, out]` parameter).
///
/// ```
/// { "framework": "native", "spec": { ... },
///   "mapping": [ { "from": "^experts\\.(\\d+)\\.0\\.weight$", "to": "experts.$1.layers.0.weight" },
///                { "from": "^expert_w$", "to": "experts.{i}.layers.0.weight", "split_axis": 0, "transpose": true } ],
///   "ignore": [ "^optimizer\\." ] }
/// ```
/// A key that no rule matches keeps its name (it may already be canonical).
enum NativeMappingImporter {
    struct Rule {
        let pattern: NSRegularExpression
        let template: String
        let transpose: Bool
        let splitAxis: Int?
    }

    static func build(
        conversion: ConversionSpec, keys: inout CheckpointKeys, builder: inout CanonicalBuilder, notes: inout [ImportNote], path: String
    ) throws(ImportError) -> ModelSpec {
        guard let specObject = try conversion.root.object("spec") else {
            throw conversion.root.fail("spec", "a native conversion needs the model spec")
        }
        // The native spec is read whole by the model spec's own (strict) decoder.
        conversion.root.ledger.takeWhole("spec")
        let spec: ModelSpec
        do {
            let data = try JSONSerialization.data(withJSONObject: specObject.values)
            spec = try ModelSpec.decode(json: Array(data))
        } catch let error as ModelError {
            throw .invalidModel(path: conversion.file, error)
        } catch {
            throw conversion.root.fail("spec", "cannot be read: \(error.localizedDescription)")
        }
        var rules: [Rule] = []
        for rule in try conversion.root.objects("mapping") ?? [] {
            guard let from = try rule.string("from"), let to = try rule.string("to") else { throw rule.fail("from", "each rule needs from and to") }
            guard let regex = try? NSRegularExpression(pattern: from) else { throw rule.fail("from", "is not a valid regular expression") }
            rules.append(Rule(pattern: regex, template: to, transpose: try rule.bool("transpose") ?? false, splitAxis: try rule.int("split_axis")))
        }
        var ignore: [NSRegularExpression] = []
        for pattern in try conversion.root.strings("ignore") ?? [] {
            guard let regex = try? NSRegularExpression(pattern: pattern) else { throw conversion.root.fail("ignore", "'\(pattern)' is not a valid regular expression") }
            ignore.append(regex)
        }
        var required = Set<String>()
        do throws(ModelError) {
            for requirement in try spec.validateStructure().requirements { required.insert(requirement.name) }
        } catch { throw .invalidModel(path: conversion.file, error) }
        for table in spec.tables {
            required.insert(TensorNames.embedding(table.name))
            required.insert(TensorNames.embeddingScale(table.name))
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
                if required.contains(key) { try builder.put(try keys.take(key), key) }
                continue
            }
            let target = rule.pattern.stringByReplacingMatches(in: key, range: range, withTemplate: rule.template)
            let tensor = try keys.take(key)
            var pieces: [(String, Tensor)] = []
            if let axis = rule.splitAxis {
                guard axis == 0, tensor.shape.count >= 2 else { throw .mismatch(path: path, reason: "\(key): only splitting along axis 0 of a tensor of rank >= 2 is supported") }
                let count = tensor.shape[0]
                let inner = Array(tensor.shape.dropFirst())
                let size = inner.reduce(1, *) * tensor.dtype.byteWidth
                for i in 0..<count {
                    let part: Tensor
                    do throws(ModelError) {
                        part = try Tensor(dtype: tensor.dtype, shape: inner, storage: tensor.storage, byteOffset: tensor.byteOffset + i * size)
                    } catch { throw .invalidModel(path: path, error) }
                    pieces.append((target.replacingOccurrences(of: "{i}", with: String(i)), part))
                }
            } else {
                pieces = [(target, tensor)]
            }
            for (name, piece) in pieces {
                try builder.put(rule.transpose ? try transposed(piece, name: key) : piece, name)
            }
        }
        if !ignored.isEmpty { notes.append(ImportNote(.ignored, "\(ignored.count) keys matched 'ignore': \(ignored.prefix(5).joined(separator: ", "))\(ignored.count > 5 ? ", ..." : "")")) }
        return spec
    }

    static func transposed(_ tensor: Tensor, name: String) throws(ImportError) -> Tensor {
        guard tensor.shape.count == 2 else { throw .mismatch(path: name, reason: "transpose needs a 2-D tensor, '\(name)' has shape \(tensor.shape)") }
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
        do throws(ModelError) { return try Tensor(dtype: tensor.dtype, shape: [columns, rows], bytes: bytes) } catch { throw .invalidModel(path: name, error) }
    }
}
