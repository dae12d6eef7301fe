import ArgumentParser
import Foundation
import MMoECore
import MMoEFormat
import MMoEImport

/// `convert --vocab`, `--hash-buckets` and `--scaler`: preprocessing stored with the model.
enum Preprocessing {
    /// Applies every option to `spec`; returns one note per feature changed.
    static func apply(
        to spec: inout ModelSpec, vocab: [String], offset: Int, oovID: Int, hashBuckets: [String], scalers: [String]
    ) throws -> [String] {
        var notes: [String] = []
        func index(_ name: String, option: String) throws -> Int {
            guard let i = spec.features.firstIndex(where: { $0.name == name }) else {
                throw ValidationError("\(option): '\(printable(name))' is not a feature of the model")
            }
            return i
        }
        func split(_ text: String, option: String) throws -> (String, String) {
            guard let equals = text.lastIndex(of: "=") else {
                throw ValidationError("\(option) takes FEATURE=VALUE, got '\(printable(text))'")
            }
            return (String(text[..<equals]), String(text[text.index(after: equals)...]))
        }
        for item in vocab {
            let (name, file) = try split(item, option: "--vocab")
            let i = try index(name, option: "--vocab")
            guard spec.features[i].kind != .dense else {
                throw ValidationError("--vocab: '\(printable(name))' is dense; a vocabulary maps values to ids")
            }
            let values = try readVocabulary(file)
            spec.features[i].vocabulary = Vocabulary(values: values, offset: offset, oovID: oovID)
            notes.append("\(name): vocabulary of \(values.count) values from \(file) (id = index + \(offset), unknown -> \(oovID))")
        }
        for item in hashBuckets {
            let (name, count) = try split(item, option: "--hash-buckets")
            let i = try index(name, option: "--hash-buckets")
            guard let buckets = Int(count), buckets >= 1 else {
                throw ValidationError("--hash-buckets: '\(printable(count))' is not a bucket count")
            }
            spec.features[i].vocabulary = Vocabulary(hashBuckets: buckets, offset: offset == 1 ? 0 : offset)
            notes.append("\(name): \(buckets) hash buckets (FNV-1a 64 of the UTF-8 value)")
        }
        for item in scalers {
            let (name, rule) = try split(item, option: "--scaler")
            let i = try index(name, option: "--scaler")
            let parts = rule.split(separator: ":").map(String.init)
            guard parts.count == 3, let kind = Scaler.Kind(rawValue: parts[0]) else {
                throw ValidationError(
                    "--scaler: '\(printable(rule))' is not minmax:MIN:MAX or standard:MEAN:STD (comma-separated per column)")
            }
            func numbers(_ text: String) throws -> [Double] {
                try text.split(separator: ",").map { token in
                    guard let value = Double(token), value.isFinite else {
                        throw ValidationError("--scaler: '\(printable(String(token)))' is not a number")
                    }
                    return value
                }
            }
            let first = try numbers(parts[1])
            let second = try numbers(parts[2])
            guard first.count == second.count else {
                throw ValidationError("--scaler: \(name) has \(first.count) and \(second.count) values")
            }
            // Stored as shift and scale: minmax min and max - min, standard mean and std.
            let scale = kind == .minmax ? zip(first, second).map { $1 - $0 } : second
            spec.features[i].scaler = Scaler(kind: kind, shift: first, scale: scale)
            notes.append("\(name): \(kind.rawValue) scaler")
        }
        return notes
    }

    /// A vocabulary file: JSON list, .npy of strings or integers, or text/CSV (first cell per line).
    static func readVocabulary(_ path: String) throws -> [String] {
        let bytes = try FileIO.readAll(path: path, limit: 1 << 30)
        let lower = path.lowercased()
        if lower.hasSuffix(".json") {
            guard let list = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [Any] else {
                throw InputError(description: "\(path): a JSON vocabulary is a list of values")
            }
            return try list.enumerated().map { index, value in
                if let text = value as? String { return text }
                if let number = value as? NSNumber, !(value is Bool), number.doubleValue == number.doubleValue.rounded() {
                    return String(number.int64Value)
                }
                throw InputError(description: "\(path): element \(index) is neither a string nor an integer")
            }
        }
        if lower.hasSuffix(".npy") {
            let array = try bytes.withUnsafeBytes { raw throws(ImportError) in try NumpyFormat.parse(raw, path: path) }
            if let strings = array.strings() { return strings }
            switch array.ids() {
            case .success(let ids): return ids.map { String($0) }
            case .failure:
                throw InputError(description: "\(path): a vocabulary .npy holds strings or integers (save classes_ with dtype '<U' or int)")
            }
        }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map { line in
            (lower.hasSuffix(".csv") ? String(line.split(separator: ",", omittingEmptySubsequences: false).first ?? "") : String(line))
                .trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
    }
}
