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
            let (codes, scales, offsets) = try quantizeRows(weight)
            result.set(codes, named: name)
            result.set(scales, named: TensorNames.embeddingScale(table.name))
            result.set(offsets, named: TensorNames.embeddingOffset(table.name))
        }
        return result
    }

    /// Row-wise asymmetric int8 quantization of a `[rows, dim]` table: each row's range
    /// [min, max] maps onto the 256 codes, value = code · scale + offset (scale = (max − min) /
    /// 255, offset = min + 128 · scale), so a row whose values lean to one side keeps its
    /// precision (symmetric codes would waste the other half).
    public static func quantizeRows(_ table: Tensor) throws(ModelError) -> (codes: Tensor, scales: Tensor, offsets: Tensor) {
        guard table.shape.count == 2 else { throw .invalidTensor(name: nil, reason: "only matrices are quantized per row") }
        let rows = table.shape[0]
        let dim = table.shape[1]
        var codes = [UInt8](repeating: 0, count: rows * dim)
        var scales = [Float](repeating: 1, count: rows)
        var offsets = [Float](repeating: 0, count: rows)
        var row = [Double](repeating: 0, count: dim)
        for r in 0..<rows {
            var low = Double.infinity
            var high = -Double.infinity
            for c in 0..<dim {
                row[c] = Double(table.element(r * dim + c))
                low = min(low, row[c])
                high = max(high, row[c])
            }
            guard low.isFinite, high.isFinite else { throw .nonFiniteTensor(name: "embedding row \(r)", index: r * dim) }
            let scale = high > low ? Float((high - low) / 255) : 1
            let offset = Float(low) + 128 * scale
            scales[r] = scale
            offsets[r] = offset
            for c in 0..<dim {
                let code = max(-128, min(127, ((row[c] - Double(offset)) / Double(scale)).rounded()))
                codes[r * dim + c] = UInt8(bitPattern: Int8(code))
            }
        }
        return (
            try Tensor(dtype: .i8, shape: [rows, dim], bytes: codes), try Tensor(float32: scales, shape: [rows]),
            try Tensor(float32: offsets, shape: [rows])
        )
    }
}

extension ModelTransforms {
    /// Folds every batch norm that directly follows a linear layer into that linear
    /// (`W' = s·W`, `b' = s·(b − mean) + beta`, `s = gamma / sqrt(var + eps)`), renumbering the
    /// MLP's later layers and their tensors. Other layers and tensors are kept; float tensors
    /// of the folded linears become f32.
    public static func foldBatchNorms(spec: ModelSpec, tensors: TensorStore) throws(ModelError) -> (ModelSpec, TensorStore) {
        var folded = spec
        var result = TensorStore()
        var renamed: [String: String] = [:]
        var replaced: [String: Tensor] = [:]
        var failure: ModelError?
        folded.architecture.forEachMLP { path, mlp in
            guard failure == nil else { return }
            var layers: [Layer] = []
            var i = 0
            while i < mlp.layers.count {
                let newIndex = layers.count
                func move(_ parameter: String) {
                    renamed[TensorNames.layer(path, i, parameter)] = TensorNames.layer(path, newIndex, parameter)
                }
                if case .linear(let units, let bias) = mlp.layers[i], i + 1 < mlp.layers.count,
                    case .batchNorm(let eps, let affine) = mlp.layers[i + 1]
                {
                    do throws(ModelError) {
                        let (w, b) = try foldedLinear(
                            path: path, index: i, units: units, bias: bias, eps: eps, affine: affine, tensors: tensors)
                        replaced[TensorNames.layer(path, newIndex, "weight")] = w
                        replaced[TensorNames.layer(path, newIndex, "bias")] = b
                    } catch {
                        failure = error
                        return
                    }
                    layers.append(.linear(units: units, bias: true))
                    i += 2
                    continue
                }
                for parameter in ["weight", "bias", "running_mean", "running_var", "alpha"] { move(parameter) }
                layers.append(mlp.layers[i])
                i += 1
            }
            mlp.layers = layers
        }
        if let failure { throw failure }
        let layerPrefixes = spec.mlpPaths.map { $0.path + ".layers." }
        for name in tensors.names {
            if let target = renamed[name] {
                if let tensor = tensors[name] { result.set(tensor, named: target) }
            } else if !layerPrefixes.contains(where: { name.hasPrefix($0) }), let tensor = tensors[name] {
                result.set(tensor, named: name)  // embeddings, head biases, attention weights
            }
        }
        for (name, tensor) in replaced { result.set(tensor, named: name) }
        _ = try folded.validate(tensors: result)
        return (folded, result)
    }

    private static func foldedLinear(
        path: String, index i: Int, units: Int, bias: Bool, eps: Double, affine: Bool, tensors: TensorStore
    ) throws(ModelError) -> (Tensor, Tensor) {
        func values(_ layer: Int, _ parameter: String) throws(ModelError) -> [Double] {
            let name = TensorNames.layer(path, layer, parameter)
            guard let tensor = tensors[name] else { throw .missingTensor(name: name, expectedShape: [units]) }
            return tensor.floats().map(Double.init)
        }
        let weight = try values(i, "weight")
        let inputs = units > 0 ? weight.count / units : 0
        let b = bias ? try values(i, "bias") : [Double](repeating: 0, count: units)
        let mean = try values(i + 1, "running_mean")
        let variance = try values(i + 1, "running_var")
        let gamma = affine ? try values(i + 1, "weight") : [Double](repeating: 1, count: units)
        let beta = affine ? try values(i + 1, "bias") : [Double](repeating: 0, count: units)
        var w = [Float](repeating: 0, count: units * inputs)
        var c = [Float](repeating: 0, count: units)
        for o in 0..<units {
            let s = gamma[o] / (variance[o] + eps).squareRoot()
            for j in 0..<inputs { w[o * inputs + j] = Float(weight[o * inputs + j] * s) }
            c[o] = Float((b[o] - mean[o]) * s + beta[o])
        }
        return (try Tensor(float32: w, shape: [units, inputs]), try Tensor(float32: c, shape: [units]))
    }
}
