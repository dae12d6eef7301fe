import ArgumentParser
import Foundation
import MMoECore
import MMoEImport

/// The one-screen description of a model used by `convert` and `inspect`.
struct ModelSummary {
    let spec: ModelSpec
    let tensors: TensorStore

    var parameterCount: Int { tensors.names.reduce(0) { $0 + (tensors[$1]?.elementCount ?? 0) } }

    var bytesByDType: [String: Int] {
        var result: [String: Int] = [:]
        for name in tensors.names { if let t = tensors[name] { result[t.dtype.rawValue, default: 0] += t.byteCount } }
        return result
    }

    func describe(_ mlp: MLP) -> String {
        var parts: [String] = []
        for layer in mlp.layers {
            switch layer {
            case .linear(let units, let bias): parts.append("linear(\(units)\(bias ? "" : ", no bias"))")
            case .batchNorm(let eps, _): parts.append("bn(eps \(eps))")
            case .dropout: continue
            case .dice(let variant, _): parts.append("dice(\(variant.rawValue))")
            case .prelu(let channels): parts.append(channels == 1 ? "prelu" : "prelu(\(channels))")
            default: parts.append(layer.typeName)
            }
        }
        return parts.isEmpty ? "identity" : parts.joined(separator: " > ")
    }

    /// Counts of the architecture's parts.
    var structure: [String: Any] {
        let a = spec.architecture
        var result: [String: Any] = ["type": a.type.rawValue, "towers": a.towers.count]
        if let experts = a.experts { result["experts"] = experts.count }
        if a.gate != nil { result["gates"] = 1 }
        if let gates = a.gates { result["gates"] = gates.count }
        if let levels = a.levels {
            result["levels"] = levels.map { level -> [String: Any] in
                [
                    "specific_experts": level.specificExperts.map(\.count), "shared_experts": level.sharedExperts.count,
                    "shared_gate": level.sharedGate != nil,
                ]
            }
        }
        if a.bottom != nil { result["bottom"] = true }
        if let bottoms = a.bottoms { result["bottoms"] = bottoms.count }
        if let infoGates = a.infoGates { result["info_gates"] = infoGates.count }
        return result
    }

    func text(title: String) -> String {
        var lines = [title]
        let a = spec.architecture
        lines.append("architecture: \(a.type.rawValue)\(spec.name.map { " (\($0))" } ?? "")")
        if let bottom = a.bottom { lines.append("  bottom: \(describe(bottom))") }
        if let experts = a.experts, let first = experts.first { lines.append("  experts: \(experts.count) x \(describe(first))") }
        if let gate = a.gate { lines.append("  gate (shared): \(describe(gate)) > softmax") }
        if let gates = a.gates {
            lines.append("  gates: \(gates.count) (one per task), first: \(gates.first.map(describe) ?? "") > softmax")
        }
        if let bottoms = a.bottoms, let first = bottoms.first {
            lines.append("  bottoms: \(bottoms.count) (one per task) x \(describe(first))")
        }
        if let infoGates = a.infoGates, let first = infoGates.first {
            lines.append("  info gates: \(infoGates.count) x \(describe(first)) > attention transfer to the next task (query, key, value)")
        }
        for (l, level) in (a.levels ?? []).enumerated() {
            lines.append(
                "  level \(l): specific experts \(level.specificExperts.map(\.count)), shared experts "
                    + "\(level.sharedExperts.count)\(level.sharedGate != nil ? ", shared gate" : "")"
            )
        }
        for (t, task) in spec.tasks.enumerated() {
            lines.append(
                "  task \(task.name): tower \(describe(a.towers[t])) > \(task.head.rawValue)\(task.predictionBias ? " (+bias)" : "")")
        }
        let widths = (try? spec.validateStructure().outputWidths) ?? []
        let outputs = spec.resolvedOutputs.enumerated().map { o, output -> String in
            if let product = output.product { return "\(output.name) = \(product.joined(separator: " x "))" }
            if let task = output.task, let k = output.classIndex { return "\(output.name) = \(task)[:, \(k)]" }
            if let fusion = output.fusion { return "\(output.name) = \(FusionText.describe(fusion))" }
            let width = widths.indices.contains(o) ? widths[o] : 1
            return width > 1 ? "\(output.name) [N, \(width)]" : output.name
        }
        lines.append("outputs: \(outputs.joined(separator: ", "))")
        let features = spec.features.map { f -> String in
            var parts: [String]
            switch f.kind {
            case .dense: parts = ["dense\((f.width ?? 1) > 1 ? " x\(f.width ?? 1)" : "")"]
            case .sparse: parts = ["sparse: \(f.table ?? "")"]
            case .sequence: parts = ["sequence \(f.pooling?.rawValue ?? "sum") <= \(f.maxLength ?? 0): \(f.table ?? "")"]
            }
            if let vocabulary = f.vocabulary {
                parts.append(vocabulary.hashBuckets.map { "\($0) hash buckets" } ?? "vocabulary \(vocabulary.values?.count ?? 0)")
            }
            if let scaler = f.scaler { parts.append("\(scaler.kind.rawValue) scaler") }
            if f.side == .user { parts.append("user") }
            return "\(f.name) (\(parts.joined(separator: ", ")))"
        }
        lines.append("features (\(spec.features.count)): \(features.joined(separator: ", "))")
        lines.append("tables: \(spec.tables.map { "\($0.name) \($0.vocabSize)x\($0.dim)" }.joined(separator: ", "))")
        let bytes = bytesByDType.sorted { $0.key < $1.key }.map { "\($0.key) \(formatBytes($0.value))" }.joined(separator: ", ")
        lines.append("parameters: \(parameterCount) in \(tensors.count) tensors (\(bytes))")
        return lines.joined(separator: "\n")
    }
}

func formatBytes(_ count: Int) -> String {
    if count >= 1 << 30 { return String(format: "%.2f GiB", Double(count) / Double(1 << 30)) }
    if count >= 1 << 20 { return String(format: "%.2f MiB", Double(count) / Double(1 << 20)) }
    if count >= 1 << 10 { return String(format: "%.1f KiB", Double(count) / Double(1 << 10)) }
    return "\(count) B"
}

/// The text forms of a fusion: the compact command-line form and a readable formula.
enum FusionText {
    /// `sum:ctr=1,ctcvr=2`, `product:ctr=1,ctcvr=0.5`, a JSON object, or a JSON file; the
    /// output is named "score" unless the JSON names it.
    static func parse(_ text: String) throws -> (String, Fusion) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var json: Data?
        if trimmed.hasPrefix("{") {
            json = Data(trimmed.utf8)
        } else if FileManager.default.fileExists(atPath: trimmed) {
            json = try Data(contentsOf: URL(fileURLWithPath: trimmed))
        }
        if let json {
            struct Document: Decodable {
                var name: String?
                var kind: Fusion.Kind
                var terms: [Fusion.Term]
            }
            do {
                let document = try JSONDecoder().decode(Document.self, from: json)
                return (document.name ?? "score", Fusion(kind: document.kind, terms: document.terms))
            } catch {
                throw ValidationError("--fusion: not a fusion object (name, kind weighted_sum|weighted_product, terms): \(error)")
            }
        }
        let parts = trimmed.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let kind = ["sum": Fusion.Kind.weightedSum, "product": .weightedProduct][parts[0]] else {
            throw ValidationError(
                "--fusion: expected 'sum:OUTPUT=WEIGHT,...', 'product:OUTPUT=WEIGHT,...' or JSON, got '\(printable(text))'")
        }
        var terms: [Fusion.Term] = []
        for item in parts[1].split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2, !pair[0].isEmpty, let weight = Double(pair[1]), weight.isFinite else {
                throw ValidationError("--fusion: '\(printable(String(item)))' is not OUTPUT=WEIGHT")
            }
            terms.append(Fusion.Term(output: pair[0], weight: weight))
        }
        return ("score", Fusion(kind: kind, terms: terms))
    }

    /// `2·click + 0.5·clip(like, ≤0.3)` or `ctr^1 · (0.1 + ctcvr)^0.5`.
    static func describe(_ fusion: Fusion) -> String {
        fusion.terms.map { term in
            var v = term.output
            if term.min != nil || term.max != nil {
                v = "clip(\(v), \(term.min.map { "\($0)" } ?? "-inf")..\(term.max.map { "\($0)" } ?? "inf"))"
            }
            switch fusion.kind {
            case .weightedSum: return "\(term.weight)·\(v)"
            case .weightedProduct: return term.add.map { "(\($0) + \(v))^\(term.weight)" } ?? "\(v)^\(term.weight)"
            }
        }.joined(separator: fusion.kind == .weightedSum ? " + " : " · ")
    }
}
