import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEImport

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe a model or checkpoint without loading its tensor data.",
        discussion: """
            For .mmoe and HDF5 models: architecture, features, experts, gates, towers, tasks and
            outputs, parameter count and bytes per dtype. For checkpoints: the tensors it holds;
            with --spec, the model the conversion would produce.
            --json prints one stable JSON object (documented in Docs/CLI.md).

            Examples:
              mmoe-convert inspect model.mmoe
              mmoe-convert inspect model.pt --tensors
              mmoe-convert inspect model.pt --spec conversion.json --json
            """)

    @Argument(help: "A model or checkpoint.")
    var file: String

    @Option(name: .long, help: "Conversion spec, to inspect a checkpoint as a model.")
    var spec: String?

    @Flag(name: .long, help: "Print JSON.")
    var json = false

    @Flag(name: .long, help: "List every tensor (name, dtype, shape).")
    var tensors = false

    func validate() throws {
        try requireFile(file, "file")
        if let spec { try requireFile(spec, "conversion spec") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [file]) { return }
        try reportingErrors {
            let format = try SourceFormat.detect(path: file)
            if format == .mmoe || format == .h5 || spec != nil {
                let result = try ModelImporter.load(path: file, format: format, conversionSpecPath: spec)
                let summary = ModelSummary(spec: result.spec, tensors: result.tensors)
                if json {
                    var object = modelJSON(summary)
                    object["path"] = file
                    object["format"] = format.rawValue
                    if format == .mmoe, let header = try? ModelFile(path: file) {
                        object["format_version"] = "\(header.version.major).\(header.version.minor)"
                    }
                    if !result.notes.isEmpty { object["notes"] = result.notes.map(\.description) }
                    if tensors {
                        object["tensors"] = result.tensors.sortedNames.compactMap { name in
                            result.tensors[name].map { ["name": name, "dtype": $0.dtype.rawValue, "shape": $0.shape] }
                        }
                    }
                    print(try encode(object))
                } else {
                    print(summary.text(title: "\(file) (\(format))"))
                    for note in result.notes { print("  \(note)") }
                    if tensors {
                        printTensors(
                            result.tensors.sortedNames.compactMap { n in result.tensors[n].map { (n, $0.dtype.rawValue, $0.shape) } })
                    }
                }
                return
            }
            var notes: [ImportNote] = []
            let checkpoint = try CheckpointReading.read(path: file, format: format, notes: &notes)
            let count = checkpoint.tensors.reduce(0) { $0 + $1.count }
            if json {
                var object: [String: Any] = [
                    "path": file, "format": format.rawValue, "tensor_count": checkpoint.tensors.count, "parameters": count,
                ]
                if tensors {
                    object["tensors"] = checkpoint.tensors.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape] }
                }
                print(try encode(object))
            } else {
                print("\(file) (\(format)): \(checkpoint.tensors.count) tensors, \(count) values")
                print("pass --spec conversion.json to see the model it converts to")
                if tensors { printTensors(checkpoint.tensors.map { ($0.name, $0.dtype.rawValue, $0.shape) }) }
            }
        }
    }

    func printTensors(_ rows: [(String, String, [Int])]) {
        let width = rows.map(\.0.count).max() ?? 0
        for (name, dtype, shape) in rows {
            print(
                "  \(name.padding(toLength: width, withPad: " ", startingAt: 0))  "
                    + "\(dtype.padding(toLength: 5, withPad: " ", startingAt: 0)) \(shape)"
            )
        }
    }

    func modelJSON(_ summary: ModelSummary) -> [String: Any] {
        let spec = summary.spec
        let outputWidths = (try? spec.validateStructure().outputWidths) ?? []
        return [
            "name": spec.name ?? "",
            "architecture": summary.structure,
            "features": spec.features.map { f -> [String: Any] in
                var item: [String: Any] = ["name": f.name, "kind": f.kind.rawValue]
                if f.kind == .dense { item["width"] = f.width ?? 1 }
                if let table = f.table { item["table"] = table }
                if let length = f.maxLength { item["max_length"] = length }
                if let pooling = f.pooling { item["pooling"] = pooling.rawValue }
                return item
            },
            "concat": spec.concat,
            "tables": spec.tables.map { ["name": $0.name, "vocab_size": $0.vocabSize, "dim": $0.dim] },
            "tasks": spec.tasks.map { ["name": $0.name, "head": $0.head.rawValue, "prediction_bias": $0.predictionBias] },
            "outputs": spec.resolvedOutputs.enumerated().map { index, o -> [String: Any] in
                var item: [String: Any] = ["name": o.name, "width": outputWidths.indices.contains(index) ? outputWidths[index] : 1]
                if let product = o.product { item["product"] = product }
                if let task = o.task { item["task"] = task }
                if let k = o.classIndex { item["class"] = k }
                if let fusion = o.fusion {
                    item["fusion"] = [
                        "kind": fusion.kind.rawValue,
                        "terms": fusion.terms.map { term -> [String: Any] in
                            var t: [String: Any] = ["output": term.output, "weight": term.weight]
                            if let add = term.add { t["add"] = add }
                            if let low = term.min { t["min"] = low }
                            if let high = term.max { t["max"] = high }
                            return t
                        },
                    ]
                }
                return item
            },
            "parameters": summary.parameterCount,
            "bytes_by_dtype": summary.bytesByDType,
        ]
    }

    func encode(_ object: [String: Any]) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
