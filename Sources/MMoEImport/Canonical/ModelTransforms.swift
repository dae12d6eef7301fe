import MMoECore

/// Conversions applied after import: weight precision and embedding quantization.
public enum ModelTransforms {
    /// Converts every floating-point tensor except per-row scales to `dtype` (rounding to
    /// nearest even). Embedding tables already quantized to i8 stay as they are.
    public static func convertFloats(_ tensors: TensorStore, to dtype: DType) throws(ModelError) -> TensorStore {
        var result = TensorStore()
        for name in tensors.names {
            guard let tensor = tensors[name] else { continue }
            let keep = !tensor.dtype.isFloatingPoint || name.hasSuffix(".scale")
            do throws(ModelError) {
                try result.insert(keep ? tensor : try tensor.converted(to: dtype), named: name)
            } catch {
                throw .invalidTensor(name: name, reason: error.description)
            }
        }
        return result
    }

    /// Quantizes every embedding table to int8 rows with one f32 scale per row
    /// (symmetric: scale = max|row| / 127, code = round(value / scale)).
    public static func quantizeEmbeddings(spec: ModelSpec, tensors: TensorStore) throws(ModelError) -> TensorStore {
        var result = tensors
        for table in spec.tables {
            let name = TensorNames.embedding(table.name)
            guard let weight = tensors[name], weight.dtype != .i8 else { continue }
            let (codes, scales) = try quantizeRows(weight)
            result.set(codes, named: name)
            result.set(scales, named: TensorNames.embeddingScale(table.name))
        }
        return result
    }

    /// Row-wise symmetric int8 quantization of a `[rows, dim]` table.
    public static func quantizeRows(_ table: Tensor) throws(ModelError) -> (codes: Tensor, scales: Tensor) {
        guard table.shape.count == 2 else { throw .invalidTensor(name: nil, reason: "only matrices are quantized per row") }
        let rows = table.shape[0]
        let dim = table.shape[1]
        var codes = [UInt8](repeating: 0, count: rows * dim)
        var scales = [Float](repeating: 1, count: rows)
        var row = [Float](repeating: 0, count: dim)
        for r in 0..<rows {
            var largest: Float = 0
            for c in 0..<dim {
                row[c] = table.element(r * dim + c)
                largest = max(largest, abs(row[c]))
            }
            guard largest.isFinite else { throw .nonFiniteTensor(name: "embedding row \(r)", index: r * dim) }
            let scale = largest > 0 ? largest / 127 : 1
            scales[r] = scale
            for c in 0..<dim {
                let code = max(-127, min(127, (row[c] / scale).rounded()))
                codes[r * dim + c] = UInt8(bitPattern: Int8(code))
            }
        }
        return (try Tensor(dtype: .i8, shape: [rows, dim], bytes: codes), try Tensor(float32: scales, shape: [rows]))
    }
}
