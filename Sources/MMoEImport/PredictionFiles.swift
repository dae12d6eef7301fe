import Foundation
import MMoECore
import MMoEFormat
import MMoERuntime

/// Inputs and outputs as files: `.npz` (one array per name) or CSV. Used by `mmoe-convert`
/// and by tools that embed the runtime.
public enum PredictionFiles {
    /// Inputs from `.npz` (one array per feature) or CSV (header of feature names).
    public static func readInputs(_ path: String, spec: ModelSpec) throws -> [String: FeatureArray] {
        if path.lowercased().hasSuffix(".csv") { return try readCSV(path, spec: spec) }
        let arrays = try NumpyArchive.read(path: path)
        var batch: [String: FeatureArray] = [:]
        let features = Dictionary(spec.features.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for (name, array) in arrays {
            guard let feature = features[name] else {
                throw ImportError.malformed(
                    path: path, offset: nil,
                    reason: "array '\(name)' is not a feature of the model (features: \(spec.features.map(\.name).joined(separator: ", ")))"
                )
            }
            switch feature.kind {
            case .dense:
                guard array.isFloat else {
                    throw ImportError.malformed(path: path, offset: nil, reason: "feature '\(name)' must hold floats, got \(array.descr)")
                }
                batch[name] = FeatureArray(values: .float32(array.floats()), shape: array.shape)
            case .sparse, .sequence:
                if let strings = array.strings() {
                    guard feature.vocabulary != nil else {
                        throw ImportError.malformed(
                            path: path, offset: nil,
                            reason: "feature '\(name)' holds strings but the model has no vocabulary for it (give ids)")
                    }
                    batch[name] = FeatureArray(values: .strings(strings), shape: array.shape)
                    continue
                }
                switch array.ids() {
                case .success(let ids): batch[name] = FeatureArray(values: .int64(ids), shape: array.shape)
                case .failure(let bad):
                    throw ImportError.malformed(
                        path: path, offset: nil, reason: "feature '\(name)' element \(bad.index) is \(bad.value), not an integer id")
                }
            }
        }
        return batch
    }

    /// CSV: header row of feature names; dense cells hold `width` space-separated floats;
    /// sparse cells one id; sequence cells space-separated ids (shorter rows are padded with
    /// the feature's padding id).
    public static func readCSV(_ path: String, spec: ModelSpec) throws -> [String: FeatureArray] {
        let bytes = try FileIO.readAll(path: path, limit: 1 << 30)
        // Lines, cells and the arrays built from them take several times the text and a few
        // hundred bytes of array headers per row.
        let rows = bytes.reduce(0) { $0 + ($1 == 0x0A ? 1 : 0) }
        if let reason = MemoryBudget.refusal(bytes.count * 6 + rows * 400, for: "parsing this CSV of \(rows) lines") {
            throw ImportError.memory(path: path, reason: reason)
        }
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
        guard !lines.isEmpty else { throw ImportError.malformed(path: path, offset: nil, reason: "empty CSV file") }
        let header = lines.removeFirst().split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        let features = Dictionary(spec.features.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var seen = Set<String>()
        for name in header where !seen.insert(name).inserted {
            throw ImportError.malformed(path: path, offset: nil, reason: "the header names column '\(String(name.prefix(64)))' twice")
        }
        for name in header where features[name] == nil {
            throw ImportError.malformed(path: path, offset: nil, reason: "column '\(name)' is not a feature of the model")
        }
        var cells: [[Substring]] = []
        for (index, line) in lines.enumerated() {
            let row = line.split(separator: ",", omittingEmptySubsequences: false)
            guard row.count == header.count else {
                throw ImportError.malformed(
                    path: path, offset: nil, reason: "line \(index + 2) has \(row.count) cells, the header has \(header.count)")
            }
            cells.append(row)
        }
        var batch: [String: FeatureArray] = [:]
        for (column, name) in header.enumerated() {
            guard let feature = features[name] else { continue }
            let tokens = cells.map { $0[column].split(separator: " ") }
            if feature.kind == .sequence, let longest = feature.maxLength,
                let row = tokens.firstIndex(where: { $0.count > longest })
            {
                throw ImportError.malformed(
                    path: path, offset: nil,
                    reason: "line \(row + 2) column '\(name)' holds \(tokens[row].count) values; the sequence takes at most \(longest)")
            }
            func number(_ token: Substring, row: Int) throws -> Double {
                guard let value = Double(token) else {
                    throw ImportError.malformed(
                        path: path, offset: nil, reason: "line \(row + 2) column '\(name)': '\(token)' is not a number")
                }
                return value
            }
            switch feature.kind {
            case .dense:
                let width = feature.width ?? 1
                var values: [Float] = []
                for (row, items) in tokens.enumerated() {
                    guard items.count == width else {
                        throw ImportError.malformed(
                            path: path, offset: nil, reason: "line \(row + 2) column '\(name)' needs \(width) values")
                    }
                    for item in items { values.append(Float(try number(item, row: row))) }
                }
                batch[name] = FeatureArray(values: .float32(values), shape: width == 1 ? [cells.count] : [cells.count, width])
            case .sparse where feature.vocabulary != nil, .sequence where feature.vocabulary != nil:
                // Raw values: the cell (sparse) or its space-separated tokens (sequence, padded with "").
                if feature.kind == .sparse {
                    batch[name] = FeatureArray(
                        values: .strings(cells.map { String($0[column]).trimmingCharacters(in: .whitespaces) }), shape: [cells.count])
                } else {
                    let length = max(1, tokens.map(\.count).max() ?? 1)
                    var flat: [String] = []
                    for items in tokens { flat += items.map(String.init) + Array(repeating: "", count: length - items.count) }
                    batch[name] = FeatureArray(values: .strings(flat), shape: [cells.count, length])
                }
            case .sparse, .sequence:
                var rows: [[Int64]] = []
                for (row, items) in tokens.enumerated() {
                    var ids: [Int64] = []
                    for item in items {
                        guard let id = Int64(item) else {
                            throw ImportError.malformed(
                                path: path, offset: nil, reason: "line \(row + 2) column '\(name)': '\(item)' is not an integer id")
                        }
                        ids.append(id)
                    }
                    if feature.kind == .sparse, ids.count != 1 {
                        throw ImportError.malformed(path: path, offset: nil, reason: "line \(row + 2) column '\(name)' needs one id")
                    }
                    rows.append(ids)
                }
                if feature.kind == .sparse {
                    batch[name] = .ids(rows.map { $0[0] })
                } else {
                    let length = max(1, rows.map(\.count).max() ?? 1)
                    var flat: [Int64] = []
                    for (row, ids) in rows.enumerated() {
                        if ids.count < length {
                            guard let padding = feature.paddingID else {
                                throw ImportError.malformed(
                                    path: path, offset: nil,
                                    reason: "line \(row + 2) column '\(name)' is shorter than the others and the feature has no padding id")
                            }
                            flat += ids + Array(repeating: Int64(padding), count: length - ids.count)
                        } else {
                            flat += ids
                        }
                    }
                    batch[name] = .sequences(flat, length: length)
                }
            }
        }
        return batch
    }

    /// Expected outputs: `.npz` of float arrays by output name.
    public static func readExpected(_ path: String) throws -> [String: [Float]] {
        try readExpectedArrays(path).mapValues(\.values)
    }

    /// Expected outputs with their shapes. A CSV column is `[N]`; columns `name.0`, `name.1`,
    /// ... (as `predict` writes class probabilities) become one `[N, C]` output `name`.
    public static func readExpectedArrays(_ path: String) throws -> [String: ExpectedOutput] {
        if path.lowercased().hasSuffix(".csv") {
            let bytes = try FileIO.readAll(path: path, limit: 1 << 30)
            let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter
            { !$0.isEmpty }
            guard let header = lines.first?.split(separator: ",").map(String.init) else {
                throw ImportError.malformed(path: path, offset: nil, reason: "empty CSV file")
            }
            guard Set(header).count == header.count else {
                throw ImportError.malformed(path: path, offset: nil, reason: "the header names a column twice")
            }
            if let reason = MemoryBudget.refusal(lines.count * header.count * 8, for: "the columns of this CSV") {
                throw ImportError.memory(path: path, reason: reason)
            }
            var columns = [[Float]](repeating: [], count: header.count)
            for (index, line) in lines.dropFirst().enumerated() {
                let cells = line.split(separator: ",", omittingEmptySubsequences: false)
                guard cells.count == header.count else {
                    throw ImportError.malformed(path: path, offset: nil, reason: "line \(index + 2) has \(cells.count) cells")
                }
                for (c, cell) in cells.enumerated() {
                    guard let value = Float(cell.trimmingCharacters(in: .whitespaces)) else {
                        throw ImportError.malformed(path: path, offset: nil, reason: "line \(index + 2): '\(cell)' is not a number")
                    }
                    columns[c].append(value)
                }
            }
            let rows = lines.count - 1
            var result: [String: ExpectedOutput] = [:]
            var grouped: [String: [(Int, [Float])]] = [:]
            for (name, column) in zip(header, columns) {
                result[name] = ExpectedOutput(values: column, shape: [rows])
                if let dot = name.lastIndex(of: "."), let k = Int(name[name.index(after: dot)...]), k >= 0 {
                    grouped[String(name[..<dot]), default: []].append((k, column))
                }
            }
            for (name, parts) in grouped where result[name] == nil {
                let sorted = parts.sorted { $0.0 < $1.0 }
                guard sorted.enumerated().allSatisfy({ $0.offset == $0.element.0 }) else { continue }
                var values = [Float](repeating: 0, count: rows * sorted.count)
                for (k, column) in sorted { for r in 0..<rows { values[r * sorted.count + k] = column[r] } }
                result[name] = ExpectedOutput(values: values, shape: [rows, sorted.count])
            }
            return result
        }
        return try NumpyArchive.read(path: path).mapValues { ExpectedOutput(values: $0.floats(), shape: $0.shape) }
    }

    /// Writes outputs (and gate weights) as `.npz` or CSV, by extension.
    public static func writeOutputs(_ prediction: Prediction, to path: String) throws {
        if path.lowercased().hasSuffix(".csv") {
            func width(_ name: String) -> Int { prediction.widths[name] ?? 1 }
            var header: [String] = []
            for name in prediction.outputNames { header += width(name) == 1 ? [name] : (0..<width(name)).map { "\(name).\($0)" } }
            for gate in prediction.gates { header += (0..<gate.experts).map { "gate.\(gate.name).\($0)" } }
            var text = header.joined(separator: ",") + "\n"
            for row in 0..<prediction.batchSize {
                var cells: [String] = []
                for name in prediction.outputNames {
                    let w = width(name)
                    let values = prediction.outputs[name] ?? []
                    cells += (0..<w).map { c in "\(values.indices.contains(row * w + c) ? values[row * w + c] : .nan)" }
                }
                for gate in prediction.gates { cells += (0..<gate.experts).map { "\(gate.weights[row * gate.experts + $0])" } }
                text += cells.joined(separator: ",") + "\n"
            }
            try FileIO.writeAtomically(path: path) { (sink: inout FileSink) throws(FormatError) in try sink.write(Array(text.utf8)) }
            return
        }
        var arrays: [String: NumpyArray] = [:]
        for name in prediction.outputNames {
            arrays[name] = .float32(prediction.outputs[name] ?? [], shape: prediction.shape(of: name) ?? [prediction.batchSize])
        }
        for gate in prediction.gates {
            arrays["gate.\(gate.name)"] = .float32(gate.weights, shape: [prediction.batchSize, gate.experts])
        }
        try NumpyArchive.write(arrays, to: path)
    }

    /// A random batch that fits the model (ids in range, sequences half padded).
    public static func randomBatch(_ spec: ModelSpec, rows: Int, seed: UInt64) -> [String: FeatureArray] {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return state >> 17
        }
        let vocab = Dictionary(spec.tables.map { ($0.name, $0.vocabSize) }, uniquingKeysWith: { a, _ in a })
        var batch: [String: FeatureArray] = [:]
        for feature in spec.features {
            switch feature.kind {
            case .dense:
                let width = feature.width ?? 1
                batch[feature.name] = .floats((0..<(rows * width)).map { _ in Float(next() % 2000) / 1000 - 1 }, width: width)
            case .sparse:
                let size = UInt64(vocab[feature.table ?? ""] ?? 1)
                batch[feature.name] = .ids((0..<rows).map { _ in Int64(next() % size) })
            case .sequence:
                let size = UInt64(vocab[feature.table ?? ""] ?? 1)
                let length = feature.maxLength ?? 1
                var ids: [Int64] = []
                for _ in 0..<rows {
                    let used = Int(next() % UInt64(length)) + 1
                    for p in 0..<length {
                        ids.append(p < used || feature.paddingID == nil ? Int64(next() % size) : Int64(feature.paddingID ?? 0))
                    }
                }
                batch[feature.name] = .sequences(ids, length: length)
            }
        }
        return batch
    }
}

/// One expected output: its values (row-major) and shape.
public struct ExpectedOutput: Sendable, Equatable {
    /// Values, row-major.
    public let values: [Float]
    /// Shape as stored: `[N]`, `[N, 1]` or `[N, C]`.
    public let shape: [Int]
}
