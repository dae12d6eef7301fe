import Foundation
import MMoECore
import MMoEFormat

/// Which keys of a conversion spec the conversion asked for, per JSON path, so that a key
/// nothing reads (a typo such as `"poolng"`) is refused instead of silently defaulted.
final class SpecKeyLedger {
    /// Keys asked for (read, or accepted as training-only) under each object path.
    private(set) var asked: [String: Set<String>] = [:]
    /// Object paths whose whole subtree another reader owns (the native `spec`).
    private(set) var whole: Set<String> = []
    /// Accepted keys that do not change the model (`dnn_dropout`, `seed`, ...), for a note.
    private(set) var acceptedUnused: [String] = []

    func ask(_ path: String, _ keys: [String]) { asked[path, default: []].formUnion(keys) }
    func takeWhole(_ path: String) { whole.insert(path) }
    func acceptUnused(_ path: String, _ key: String) {
        guard asked[path]?.contains(key) != true else { return }
        ask(path, [key])
        acceptedUnused.append(path.isEmpty ? key : "\(path).\(key)")
    }
}

/// A JSON object read with its path, so every error names the place in the conversion spec.
struct JSONObject {
    let values: [String: Any]
    let path: String
    let file: String
    /// Shared by every object of one conversion spec.
    let ledger: SpecKeyLedger

    init(values: [String: Any], path: String, file: String, ledger: SpecKeyLedger = SpecKeyLedger()) {
        self.values = values
        self.path = path
        self.file = file
        self.ledger = ledger
    }

    /// Records that the conversion reads `keys` here (aliases included).
    func ask(_ keys: [String]) { ledger.ask(path, keys) }

    /// Accepts keys that only matter for training (dropout, regularisation, seeds, devices):
    /// present ones are noted as ignored, never refused.
    func acceptUnused(_ keys: [String]) {
        for key in keys where values[key] != nil { ledger.acceptUnused(path, key) }
    }

    /// The child path of `key`.
    func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

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

    func has(_ key: String) -> Bool {
        ask([key])
        return values[key] != nil && !(values[key] is NSNull)
    }

    func string(_ keys: String...) throws(ImportError) -> String? {
        ask(keys)
        for key in keys where has(key) {
            guard let value = values[key] as? String else { throw fail(key, "must be a string") }
            return value
        }
        return nil
    }

    func int(_ keys: String...) throws(ImportError) -> Int? {
        ask(keys)
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
        return JSONObject(values: value, path: childPath(key), file: file, ledger: ledger)
    }

    func objects(_ key: String) throws(ImportError) -> [JSONObject]? {
        guard has(key) else { return nil }
        guard let array = values[key] as? [Any] else { throw fail(key, "must be a list of objects") }
        var result: [JSONObject] = []
        for (index, item) in array.enumerated() {
            guard let value = item as? [String: Any] else { throw fail("\(key)[\(index)]", "must be an object") }
            result.append(JSONObject(values: value, path: "\(childPath(key))[\(index)]", file: file, ledger: ledger))
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
        // Settings of the frameworks' feature classes that change nothing at inference.
        json.acceptUnused(["dtype", "group_name", "embeddings_initializer", "initializer", "trainable"])
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
        guard let values = object as? [String: Any] else {
            throw .malformed(path: path, offset: nil, reason: "the conversion spec must be a JSON object")
        }
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
        args = try root.object("args") ?? JSONObject(values: [:], path: "args", file: path, ledger: root.ledger)
        var features: [SourceFeature] = []
        for item in try root.objects("features") ?? [] { features.append(try SourceFeature(item)) }
        self.features = features
        tasks = try root.objects("tasks") ?? []
    }
}

extension ConversionSpec {
    /// Keys a conversion spec may carry at the top level besides those a conversion reads.
    static let rootExtras = ["comment", "description"]

    /// Refuses every key of the conversion spec that the conversion never asked for, with its
    /// JSON path and the nearest key that is read there; returns the keys accepted as training-only.
    func checkUnknownKeys() throws(ImportError) -> [String] {
        root.acceptUnused(ConversionSpec.rootExtras)
        try Self.check(values: root.values, path: "", ledger: root.ledger, file: file)
        return root.ledger.acceptedUnused
    }

    private static func check(values: [String: Any], path: String, ledger: SpecKeyLedger, file: String) throws(ImportError) {
        if ledger.whole.contains(path) { return }
        let asked = ledger.asked[path] ?? []
        for key in values.keys.sorted() {
            let child = path.isEmpty ? key : "\(path).\(key)"
            guard asked.contains(key) else {
                var reason = "unknown key '\(child)': the \(path.isEmpty ? "conversion spec" : "object at '\(path)'") has no such setting"
                if let near = nearest(key, in: asked) {
                    reason += "; did you mean '\(near)'?"
                } else if !asked.isEmpty {
                    reason += " (read here: \(asked.sorted().joined(separator: ", ")))"
                }
                throw .malformed(path: file, offset: nil, reason: reason)
            }
            if let object = values[key] as? [String: Any] {
                try check(values: object, path: child, ledger: ledger, file: file)
            } else if let array = values[key] as? [Any] {
                for (index, item) in array.enumerated() {
                    if let object = item as? [String: Any] {
                        try check(values: object, path: "\(child)[\(index)]", ledger: ledger, file: file)
                    }
                }
            }
        }
    }

    /// The candidate within a small edit distance of `key` (case-insensitive), if any.
    static func nearest(_ key: String, in candidates: Set<String>) -> String? {
        let limit = max(1, key.count / 3)
        let scored = candidates.map { ($0, editDistance(key.lowercased(), $0.lowercased())) }.filter { $0.1 <= limit }
        return scored.min { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }?.0
    }

    /// Levenshtein distance (insertions, deletions, substitutions).
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        var current = previous
        for i in 1...a.count {
            current[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
