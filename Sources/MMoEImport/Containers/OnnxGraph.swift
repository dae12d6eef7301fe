import Foundation
import MMoECore
import MMoEFormat

/// An ONNX model's main graph as the converter needs it: nodes in file (topological) order
/// with their operands, attributes and module scopes, every constant tensor (initializers and
/// `Constant` node values) by name, and the graph's inputs and outputs.
struct OnnxGraph {
    /// One node.
    struct Node {
        var name = ""
        var op = ""
        var domain = ""
        var inputs: [String] = []
        var outputs: [String] = []
        var ints: [String: Int64] = [:]
        var floats: [String: Float] = [:]
        /// Where the `value` attribute's tensor lies (read for `Constant` nodes).
        var valueRange: Range<Int>?
        /// The module path the exporter recorded (`expert_dnn.0.linears.0`), empty at the top.
        var scope = ""
        /// The dynamo exporter's name of the torch operation the node came from (last entry
        /// of `pkg.torch.onnx.name_scopes`).
        var torchOperation = ""

        func int(_ name: String, default value: Int64) -> Int64 { ints[name] ?? value }
        func float(_ name: String, default value: Float) -> Float { floats[name] ?? value }
    }

    var nodes: [Node] = []
    /// Initializers and `Constant` outputs by name.
    var constants: [String: SourceTensor] = [:]
    /// Initializer names in file order.
    var initializers: [String] = []
    /// Graph inputs that are not initializers (the features).
    var inputs: [String] = []
    /// Their declared types.
    var inputTypes: [String: ValueType] = [:]
    var outputs: [String] = []
    /// The default-domain opset the model imports.
    var opset: Int?
    /// The model's metadata_props (key → value).
    var metadata: [String: String] = [:]

    /// For each value, the node producing it and the nodes reading it (indices into `nodes`).
    func links() -> (producer: [String: Int], consumers: [String: [Int]]) {
        var producer: [String: Int] = [:]
        var consumers: [String: [Int]] = [:]
        for (index, node) in nodes.enumerated() {
            for output in node.outputs where !output.isEmpty { producer[output] = index }
            for input in node.inputs where !input.isEmpty { consumers[input, default: []].append(index) }
        }
        return (producer, consumers)
    }

    /// Largest number of nodes or initializers read (far above any model of the family).
    static let maxEntries = 1 << 20

    /// Parses the model at `path`. External data must lie inside the model's folder.
    static func read(path: String) throws(ImportError) -> OnnxGraph {
        let storage: ByteStorage
        do throws(FormatError) { storage = try FileIO.map(path: path) } catch { throw .io(error) }
        guard storage.bytes.count <= OnnxReader.maxModelBytes else {
            throw .limitExceeded(path: path, what: "ONNX model size", limit: OnnxReader.maxModelBytes)
        }
        return try parse(storage, path: path)
    }

    /// Parses a model held in `storage` (`path` names it in errors and anchors external data).
    static func parse(_ storage: ByteStorage, path: String) throws(ImportError) -> OnnxGraph {
        let bytes = storage.bytes
        var model = ProtoReader(bytes, path: path)
        var graphRange: Range<Int>?
        var result = OnnxGraph()
        while !model.atEnd {
            let field = try model.field()
            switch (field.number, field.range) {
            case (7, let range?): graphRange = range
            case (8, let range?):
                var entry = ProtoReader(bytes, path: path, range: range)
                var domain = ""
                var version: Int?
                while !entry.atEnd {
                    let part = try entry.field()
                    if part.number == 1, let r = part.range {
                        domain = entry.string(r)
                    } else if part.number == 2, part.wire == 0 {
                        version = try entry.int("opset version")
                    } else {
                        try entry.skip(wire: part.wire)
                    }
                }
                if domain.isEmpty || domain == "ai.onnx" { result.opset = version }
            case (14, let range?):
                var entry = ProtoReader(bytes, path: path, range: range)
                var key = ""
                var value = ""
                while !entry.atEnd {
                    let part = try entry.field()
                    switch (part.number, part.range) {
                    case (1, let r?): key = entry.string(r)
                    case (2, let r?): value = entry.string(r)
                    default: try entry.skip(wire: part.wire)
                    }
                }
                guard result.metadata.count < 1024 else { throw .limitExceeded(path: path, what: "metadata entries", limit: 1024) }
                result.metadata[key] = value
            default:
                try model.skip(wire: field.wire)
            }
        }
        guard let graphRange else { throw .malformed(path: path, offset: nil, reason: "no graph: not an ONNX model") }
        var graph = ProtoReader(bytes, path: path, range: graphRange)
        var sideFiles: [String: ByteStorage] = [:]
        let folder = (path as NSString).deletingLastPathComponent
        var declaredInputs: [String] = []
        var initializerRanges: [Range<Int>] = []
        while !graph.atEnd {
            let field = try graph.field()
            switch (field.number, field.range) {
            case (1, let range?):
                guard result.nodes.count < maxEntries else { throw .limitExceeded(path: path, what: "ONNX nodes", limit: maxEntries) }
                result.nodes.append(try node(bytes, range: range, path: path))
            case (5, let range?):
                guard initializerRanges.count < maxEntries else {
                    throw .limitExceeded(path: path, what: "ONNX initializers", limit: maxEntries)
                }
                initializerRanges.append(range)
            case (11, let range?):
                guard declaredInputs.count < maxEntries else {
                    throw .limitExceeded(path: path, what: "ONNX graph inputs", limit: maxEntries)
                }
                let (name, type) = try valueInfo(bytes, range: range, path: path)
                declaredInputs.append(name)
                result.inputTypes[name] = type
            case (12, let range?): result.outputs.append(try valueInfo(bytes, range: range, path: path).0)
            default:
                try graph.skip(wire: field.wire)
            }
        }
        // A graph with an operator outside the family is refused before any side file is opened.
        try OnnxReader.checkOperators(result, path: path)
        for range in initializerRanges {
            let tensor = try OnnxReader.tensor(bytes, range: range, storage: storage, path: path, folder: folder, sideFiles: &sideFiles)
            guard result.constants[tensor.name] == nil else {
                throw .malformed(path: path, offset: range.lowerBound, reason: "initializer '\(tensor.name)' is defined twice")
            }
            result.constants[tensor.name] = tensor
            result.initializers.append(tensor.name)
        }
        for node in result.nodes where node.op == "Constant" {
            guard let range = node.valueRange, let output = node.outputs.first else { continue }
            let value = try OnnxReader.tensor(bytes, range: range, storage: storage, path: path, folder: folder, sideFiles: &sideFiles)
            guard result.constants[output] == nil else {
                throw .malformed(path: path, offset: nil, reason: "constant node '\(node.name)' redefines '\(output)'")
            }
            result.constants[output] = SourceTensor(
                name: output, dtype: value.dtype, shape: value.shape, storage: value.storage, byteOffset: value.byteOffset)
        }
        // Before IR version 4 initializers were listed among the inputs as well.
        result.inputs = declaredInputs.filter { result.constants[$0] == nil }
        return result
    }

    /// A graph input's or output's declared type: ONNX element type and dimensions (nil where
    /// symbolic, like a dynamic batch).
    struct ValueType {
        var elementType = 0
        var dims: [Int?] = []
        var isInteger: Bool { [2, 3, 4, 5, 6, 7, 12, 13].contains(elementType) }
        var isFloat: Bool { [1, 10, 11, 16].contains(elementType) }
    }

    static func valueInfo(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, path: String) throws(ImportError) -> (String, ValueType) {
        var reader = ProtoReader(bytes, path: path, range: range)
        var name = ""
        var type = ValueType()
        while !reader.atEnd {
            let field = try reader.field()
            switch (field.number, field.range) {
            case (1, let r?): name = reader.string(r)
            case (2, let r?):
                // TypeProto.tensor_type (1): elem_type (1), shape (2) of dims (1): dim_value (1) | dim_param (2).
                var typeReader = ProtoReader(bytes, path: path, range: r)
                while !typeReader.atEnd {
                    let typeField = try typeReader.field()
                    guard typeField.number == 1, let tensorRange = typeField.range else {
                        try typeReader.skip(wire: typeField.wire); continue
                    }
                    var tensor = ProtoReader(bytes, path: path, range: tensorRange)
                    while !tensor.atEnd {
                        let part = try tensor.field()
                        if part.number == 1, part.wire == 0 {
                            type.elementType = try tensor.int("element type")
                        } else if part.number == 2, let shapeRange = part.range {
                            var shape = ProtoReader(bytes, path: path, range: shapeRange)
                            while !shape.atEnd {
                                let dimField = try shape.field()
                                guard dimField.number == 1, let dimRange = dimField.range else {
                                    try shape.skip(wire: dimField.wire); continue
                                }
                                guard type.dims.count < 16 else { throw shape.fail("input '\(name)' has too many dimensions") }
                                var dim = ProtoReader(bytes, path: path, range: dimRange)
                                var value: Int?
                                while !dim.atEnd {
                                    let d = try dim.field()
                                    if d.number == 1, d.wire == 0 { value = try dim.int("dimension") } else { try dim.skip(wire: d.wire) }
                                }
                                type.dims.append(value)
                            }
                        } else {
                            try tensor.skip(wire: part.wire)
                        }
                    }
                }
            default:
                try reader.skip(wire: field.wire)
            }
        }
        return (name, type)
    }

    static func node(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, path: String) throws(ImportError) -> Node {
        var reader = ProtoReader(bytes, path: path, range: range)
        var node = Node()
        var scopes: [String]?
        while !reader.atEnd {
            let field = try reader.field()
            switch (field.number, field.range) {
            case (1, let r?): node.inputs.append(reader.string(r))
            case (2, let r?): node.outputs.append(reader.string(r))
            case (3, let r?): node.name = reader.string(r)
            case (4, let r?): node.op = reader.string(r)
            case (7, let r?): node.domain = reader.string(r)
            case (5, let r?): try attribute(bytes, range: r, path: path, into: &node)
            case (9, let r?):
                let (key, value) = try keyValue(bytes, range: r, path: path)
                if key == "pkg.torch.onnx.name_scopes" { scopes = pythonStrings(value) }
            default:
                try reader.skip(wire: field.wire)
            }
        }
        if let scopes {
            // ['', 'expert_dnn.0', 'expert_dnn.0.linears.0', 'linear']: modules from the root
            // down, then the torch operation.
            node.torchOperation = scopes.last ?? ""
            node.scope = scopes.count >= 3 ? scopes[scopes.count - 2] : ""
        } else if node.name.hasPrefix("/") {
            node.scope = legacyScope(node.name)
        }
        return node
    }

    /// A StringStringEntryProto (`key` = 1, `value` = 2): metadata and external-data entries.
    static func keyValue(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, path: String) throws(ImportError) -> (String, String) {
        var entry = ProtoReader(bytes, path: path, range: range)
        var key = ""
        var value = ""
        while !entry.atEnd {
            let part = try entry.field()
            if part.number == 1, let p = part.range {
                key = entry.string(p)
            } else if part.number == 2, let p = part.range {
                value = entry.string(p)
            } else {
                try entry.skip(wire: part.wire)
            }
        }
        return (key, value)
    }

    static func attribute(_ bytes: UnsafeRawBufferPointer, range: Range<Int>, path: String, into node: inout Node) throws(ImportError) {
        var reader = ProtoReader(bytes, path: path, range: range)
        var name = ""
        var int: Int64?
        var float: Float?
        var tensorRange: Range<Int>?
        while !reader.atEnd {
            let field = try reader.field()
            switch (field.number, field.wire, field.range) {
            case (1, 2, let r?): name = reader.string(r)
            case (2, 5, _): float = Float(bitPattern: try reader.fixed32())
            case (3, 0, _): int = Int64(bitPattern: try reader.varint())
            case (5, 2, let r?): tensorRange = r
            default: try reader.skip(wire: field.wire)
            }
        }
        if let int { node.ints[name] = int }
        if let float { node.floats[name] = float }
        if let tensorRange, name == "value" { node.valueRange = tensorRange }
    }

    /// The strings of a Python list literal (`['', 'a.0', "b'c"]`).
    static func pythonStrings(_ text: String) -> [String] {
        var result: [String] = []
        var current: String?
        var quote: Character = "'"
        var escaped = false
        for character in text {
            if var open = current {
                if escaped {
                    open.append(character)
                    escaped = false
                    current = open
                } else if character == "\\" {
                    escaped = true
                } else if character == quote {
                    result.append(open)
                    current = nil
                } else {
                    open.append(character)
                    current = open
                }
            } else if character == "'" || character == "\"" {
                quote = character
                current = ""
            }
        }
        return result
    }

    /// The module path of a legacy (TorchScript) exporter node name: `/expert_dnn.0/linears.0/Gemm`
    /// → `expert_dnn.0.linears.0`; a container's child repeats the container's name
    /// (`/experts.0/mlp/mlp.0/Gemm` → `experts.0.mlp.0`).
    static func legacyScope(_ name: String) -> String {
        var parts = name.split(separator: "/").map(String.init)
        guard parts.count >= 2 else { return "" }
        parts.removeLast()
        var path: [String] = []
        for part in parts {
            if let last = path.last, part.hasPrefix(last + ".") {
                path[path.count - 1] = part
            } else {
                path.append(part)
            }
        }
        return path.joined(separator: ".")
    }
}
