import Foundation
import MMoECore
import MMoEFormat

/// A JSON object read with its path, so every error names the place in the conversion spec.
struct JSONObject {
    let values: [String: Any]
    let path: String
    let file: String

    func fail(_ key: String, _ reason: String) -> ImportError {
        .malformed(path: file, offset: nil, reason: "\(path.isEmpty ? "" : path + ".")\(key): \(reason)")
    }

    /// An integer from a JSON value (booleans are not integers).
    static func integer(_ value: Any?) -> Int? {
        guard let value, !(type(of: value) == Bool.self) else { return nil }
        if let int = value as? Int { return int }
        if let double = value as? Double { return Int(exactly: double) }
        if let number = value as? NSNumber { return Int(exactly: number.doubleValue) }
        return nil
    }

    func has(_ key: String) -> Bool { values[key] != nil && !(values[key] is NSNull) }

    func string(_ keys: String...) throws(ImportError) -> String? {
        for key in keys where has(key) {
            guard let value = values[key] as? String else { throw fail(key, "must be a string") }
            return value
        }
        return nil
    }

    func int(_ keys: String...) throws(ImportError) -> Int? {
        for key in keys where has(key) {
            guard let value = JSONObject.integer(values[key]) else { throw fail(key, "must be an integer") }
            return value
        }
        return nil
    }

    func double(_ key: String) throws(ImportError) -> Double? {
        guard has(key) else { return nil }
        guard let number = values[key] as? NSNumber else { throw fail(key, "must be a number") }
        return number.doubleValue
    }

    func bool(_ key: String) throws(ImportError) -> Bool? {
        guard has(key) else { return nil }
        guard let value = values[key] as? Bool else { throw fail(key, "must be true or false") }
        return value
    }

    func ints(_ key: String) throws(ImportError) -> [Int]? {
        guard has(key) else { return nil }
        guard let array = values[key] as? [Any] else { throw fail(key, "must be a list of integers") }
        var result: [Int] = []
        for item in array {
            guard let value = JSONObject.integer(item) else { throw fail(key, "must be a list of integers") }
            result.append(value)
        }
        return result
    }

    func object(_ key: String) throws(ImportError) -> JSONObject? {
        guard has(key) else { return nil }
        guard let value = values[key] as? [String: Any] else { throw fail(key, "must be an object") }
        return JSONObject(values: value, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    func objects(_ key: String) throws(ImportError) -> [JSONObject]? {
        guard has(key) else { return nil }
        guard let array = values[key] as? [Any] else { throw fail(key, "must be a list of objects") }
        var result: [JSONObject] = []
        for (index, item) in array.enumerated() {
            guard let value = item as? [String: Any] else { throw fail("\(key)[\(index)]", "must be an object") }
            result.append(JSONObject(values: value, path: "\(path.isEmpty ? "" : path + ".")\(key)[\(index)]", file: file))
        }
        return result
    }

    func strings(_ key: String) throws(ImportError) -> [String]? {
        guard has(key) else { return nil }
        guard let array = values[key] as? [Any], array.allSatisfy({ $0 is String }) else { throw fail(key, "must be a list of strings") }
        return array.compactMap { $0 as? String }
    }
}

/// One input feature as the user describes it in a conversion spec (framework vocabulary:
/// torch-rechub `SparseFeature`/`SequenceFeature`/`DenseFeature`, DeepCTR `SparseFeat`/
/// `VarLenSparseFeat`/`DenseFeat`).
struct SourceFeature {
    let name: String
    let kind: FeatureKind
    let vocabSize: Int?
    let dim: Int?
    /// The feature (rechub `shared_with`) or table (DeepCTR `embedding_name`) owning the table.
    let sharedWith: String?
    let embeddingName: String?
    let pooling: String?
    let paddingIndex: Int?
    let maxLength: Int?
    let lengthName: String?

    init(_ json: JSONObject) throws(ImportError) {
        guard let name = try json.string("name") else { throw json.fail("name", "is required") }
        self.name = name
        let kindName = try json.string("kind", "type") ?? "sparse"
        switch kindName.lowercased() {
        case "dense", "densefeature", "densefeat": kind = .dense
        case "sparse", "sparsefeature", "sparsefeat": kind = .sparse
        case "sequence", "varlen", "sequencefeature", "varlensparsefeat": kind = .sequence
        default: throw json.fail("kind", "must be dense, sparse or sequence, got \"\(kindName)\"")
        }
        vocabSize = try json.int("vocab_size", "vocabulary_size")
        dim = try json.int("embed_dim", "embedding_dim", "dimension", "width")
        sharedWith = try json.string("shared_with")
        embeddingName = try json.string("embedding_name")
        pooling = try json.string("pooling", "combiner")
        paddingIndex = try json.int("padding_idx")
        maxLength = try json.int("max_length", "maxlen")
        lengthName = try json.string("length_name")
    }
}

/// The user's description of a checkpoint (see `Docs/CONVERTING.md`): framework, class,
/// constructor arguments, features and tasks; or a native spec plus key-mapping rules.
struct ConversionSpec {
    let file: String
    let framework: String
    let model: String
    let args: JSONObject
    let features: [SourceFeature]
    let tasks: [JSONObject]
    let root: JSONObject

    static let maxBytes = 16 << 20

    init(path: String) throws(ImportError) {
        let bytes: [UInt8]
        do throws(FormatError) { bytes = try FileIO.readAll(path: path, limit: ConversionSpec.maxBytes) } catch { throw .io(error) }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw .malformed(path: path, offset: nil, reason: "the conversion spec is not valid JSON (\(error.localizedDescription))")
        }
        guard let values = object as? [String: Any] else { throw .malformed(path: path, offset: nil, reason: "the conversion spec must be a JSON object") }
        try self.init(values: values, file: path)
    }

    /// A conversion spec from already parsed JSON (`file` names it in errors).
    init(values: [String: Any], file path: String) throws(ImportError) {
        root = JSONObject(values: values, path: "", file: path)
        file = path
        guard let framework = try root.string("framework") else {
            throw root.fail("framework", "is required (torch-rechub, deepctr-torch or native)")
        }
        self.framework = framework.lowercased()
        model = try root.string("model") ?? ""
        args = try root.object("args") ?? JSONObject(values: [:], path: "args", file: path)
        var features: [SourceFeature] = []
        for item in try root.objects("features") ?? [] { features.append(try SourceFeature(item)) }
        self.features = features
        tasks = try root.objects("tasks") ?? []
    }
}
