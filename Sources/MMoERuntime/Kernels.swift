import CBLAS
import CMMoEKernels
import Foundation
import MMoECore

/// The hand-written kernels: pointwise epilogues, softmax, mixing, embedding lookups.
/// All raw-pointer work of the runtime lives here and in `Model.run`.
enum Kernels {
    @inline(__always)
    static func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

    /// C[m, n] = A[m, k] · Wᵀ with W `[n, k]` (the linear's `[out, in]` weight) through BLAS.
    /// Very small batches use one GEMV per row: the weights stream through once, unpacked.
    static func gemm(
        rows: Int, a: UnsafePointer<Float>, lda: Int, k: Int, w: UnsafePointer<Float>, n: Int, c: UnsafeMutablePointer<Float>,
        ldc: Int
    ) {
        if rows <= 2 {
            for r in 0..<rows { mmoe_sgemv_row(Int32(n), Int32(k), a + r * lda, w, Int32(k), c + r * ldc) }
            return
        }
        mmoe_sgemm_rowmajor_bt(Int32(rows), Int32(n), Int32(k), a, Int32(lda), w, Int32(k), c, Int32(ldc))
    }

    /// Bytes of packed weights from which a batch-1 multiply is split over threads. With
    /// `WorkerPool`'s polling workers (a fraction of a microsecond to start a section), the
    /// benchmark model's 170 x 2,080 first layer gains in float32 (1.4 MB) and in bfloat16
    /// (0.7 MB), on the Intel Xeon (AVX-512, 2 MB L2 per core) and on the AMD EPYC (AVX2,
    /// 512 KB L2 per core) alike (Docs/PERFORMANCE.md).
    static let panelSplitMinimum = 400_000

    /// Bytes of the packed weights of a multiply (2 per weight for bfloat16 panels).
    static func packedBytes(_ step: GemmStep) -> Int { step.input.width * step.output.width * (step.packedBF16 || step.vnni ? 2 : 4) }

    /// A packed-kernel multiply with its fused epilogue. Batches too small to split by rows
    /// (batch 1) split the weight panels over threads instead, so both cores stream weights.
    /// `a16`: the input as bfloat16 (rows `lda16` values apart) when the step reads an earlier
    /// multiply's bfloat16 output (`GemmStep.inputBF16Origin`); `a` is then not read.
    static func packedGemm(
        _ step: GemmStep, rows: Int, a: UnsafePointer<Float>, lda: Int, a16: UnsafePointer<UInt16>? = nil, lda16: Int = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int, path: KernelPath
    ) {
        let n = step.output.width
        let k = step.input.width
        let panels = (n + 15) / 16
        step.packed.withUnsafeBufferPointer { packed in
            step.bias.withUnsafeBufferPointer { bias in
                step.relu.withUnsafeBufferPointer { relu in
                    step.outputBF16.withUnsafeBufferPointer { halves in
                        guard let packedBase = packed.baseAddress else { return }
                        let biasBase = bias.isEmpty ? nil : bias.baseAddress
                        let reluBase = relu.isEmpty ? nil : relu.baseAddress
                        let halvesBase = halves.isEmpty ? nil : halves.baseAddress
                        // Only a large weight matrix is worth a parallel section (`panelSplitMinimum`).
                        let splits = rows < 6 && Kernels.packedBytes(step) >= Kernels.panelSplitMinimum ? min(threads, panels / 4) : 1
                        // Panels [begin, end) on the kernel the weights were packed for (a struct, not a
                        // closure: a closure's context was allocated and freed on every call).
                        let job = PanelJob(
                            rows: Int32(rows), n: Int32(n), k: Int32(k), a: a, lda: Int32(lda), a16: a16, lda16: Int32(lda16),
                            packed: UnsafeRawPointer(packedBase), packedBF16: step.packedBF16 ? 1 : 0, vnni: step.vnni,
                            avx512: path == .avx512 || path == .avx512bf16, bias: biasBase, relu: reluBase, halves: halvesBase, c: c,
                            ldc: Int32(ldc))
                        if splits <= 1 {
                            job.run(0, panels)
                        } else {
                            WorkerPool.run(parts: splits) { part in
                                job.run(panels * part / splits, panels * (part + 1) / splits)
                            }
                        }
                    }
                }
            }
        }
    }

    /// AITM's two-item attention per row: a_j = ⟨q_j, k_j⟩ / √width over the two items (each
    /// row of `first`/`second` holds q, k, v at columns 0, stride, 2·stride), softmax over j,
    /// output = Σ_j w_j · v_j.
    static func attention(
        first: UnsafeMutablePointer<Float>, firstLD: Int, second: UnsafeMutablePointer<Float>, secondLD: Int, stride: Int, width: Int,
        output: UnsafeMutablePointer<Float>, outputLD: Int, rows: Int
    ) {
        let scale = 1 / Float(width).squareRoot()
        for r in 0..<rows {
            let x0 = first + r * firstLD
            let x1 = second + r * secondLD
            var a0: Float = 0
            var a1: Float = 0
            for c in 0..<width {
                a0 += x0[c] * x0[stride + c]
                a1 += x1[c] * x1[stride + c]
            }
            a0 *= scale
            a1 *= scale
            let top = max(a0, a1)
            let e0 = Foundation.exp(a0 - top)
            let e1 = Foundation.exp(a1 - top)
            let w0 = e0 / (e0 + e1)
            let w1 = e1 / (e0 + e1)
            let out = output + r * outputLD
            for c in 0..<width { out[c] = w0 * x0[2 * stride + c] + w1 * x1[2 * stride + c] }
        }
    }

    /// Runs `body` over `rows` split into contiguous chunks on up to `threads` threads (one
    /// chunk, on the caller's thread, when the work is small).
    static func parallelRows(_ rows: Int, work: Int, threads: Int, _ body: (Range<Int>) -> Void) {
        let chunks = min(threads, rows, max(1, work / 32_768))
        if chunks <= 1 {
            body(0..<rows)
            return
        }
        WorkerPool.run(parts: chunks) { chunk in
            body((rows * chunk / chunks)..<(rows * (chunk + 1) / chunks))
        }
    }

    /// Applies `ops` in order to each row of a `[rows, width]` view with leading dimension `ld`,
    /// rows split over `threads` threads for large views.
    static func pointwise(_ ops: [PointwiseOp], base: UnsafeMutablePointer<Float>, rows: Int, width: Int, ld: Int, threads: Int) {
        let address = UInt(bitPattern: base)
        parallelRows(rows, work: rows * width * ops.count, threads: threads) { range in
            guard let chunk = UnsafeMutablePointer<Float>(bitPattern: address) else { return }
            pointwise(ops, base: chunk + range.lowerBound * ld, rows: range.count, width: width, ld: ld)
        }
    }

    /// Single-threaded `pointwise`.
    static func pointwise(_ ops: [PointwiseOp], base: UnsafeMutablePointer<Float>, rows: Int, width: Int, ld: Int) {
        // The common epilogue, bias then ReLU, in one pass.
        if ops.count == 2, case .bias(let bias) = ops[0], case .relu = ops[1] {
            bias.withUnsafeBufferPointer { b in
                guard let b = b.baseAddress else { return }
                for r in 0..<rows {
                    let row = base + r * ld
                    for c in 0..<width { row[c] = max(row[c] + b[c], 0) }
                }
            }
            return
        }
        for op in ops {
            switch op {
            case .bias(let bias):
                bias.withUnsafeBufferPointer { b in
                    for r in 0..<rows {
                        let row = base + r * ld
                        for c in 0..<width { row[c] += b[c] }
                    }
                }
            case .affine(let scale, let shift):
                scale.withUnsafeBufferPointer { s in
                    shift.withUnsafeBufferPointer { h in
                        for r in 0..<rows {
                            let row = base + r * ld
                            for c in 0..<width { row[c] = row[c] * s[c] + h[c] }
                        }
                    }
                }
            case .relu:
                for r in 0..<rows {
                    let row = base + r * ld
                    for c in 0..<width { row[c] = max(row[c], 0) }
                }
            case .leakyRelu(let slope):
                forEach(base, rows, width, ld) { $0 >= 0 ? $0 : $0 * slope }
            case .prelu(let weight):
                if weight.count == 1 {
                    let a = weight[0]
                    forEach(base, rows, width, ld) { $0 >= 0 ? $0 : $0 * a }
                } else {
                    weight.withUnsafeBufferPointer { w in
                        for r in 0..<rows {
                            let row = base + r * ld
                            for c in 0..<width where row[c] < 0 { row[c] *= w[c] }
                        }
                    }
                }
            case .sigmoid:
                forEach(base, rows, width, ld) { sigmoid($0) }
            case .tanh:
                forEach(base, rows, width, ld) { Foundation.tanh($0) }
            case .gelu:
                forEach(base, rows, width, ld) { 0.5 * $0 * (1 + Foundation.erf($0 * 0.707_106_77)) }
            case .geluTanh:
                forEach(base, rows, width, ld) { x in
                    0.5 * x * (1 + Foundation.tanh(0.797_884_56 * (x + 0.044_715 * x * x * x)))
                }
            case .silu:
                forEach(base, rows, width, ld) { $0 * sigmoid($0) }
            case .dice(let scale, let shift, let alpha):
                scale.withUnsafeBufferPointer { s in
                    shift.withUnsafeBufferPointer { h in
                        alpha.withUnsafeBufferPointer { a in
                            for r in 0..<rows {
                                let row = base + r * ld
                                for c in 0..<width {
                                    let x = row[c]
                                    let p = sigmoid(x * s[c] + h[c])
                                    row[c] = x * (p + a[c] * (1 - p))
                                }
                            }
                        }
                    }
                }
            case .diceRowwise(let alpha, let eps):
                for r in 0..<rows {
                    let row = base + r * ld
                    var sum: Float = 0
                    for c in 0..<width { sum += row[c] }
                    let mean = sum / Float(width)
                    var squares: Float = 0
                    for c in 0..<width {
                        let d = row[c] - mean
                        squares += d * d + eps
                    }
                    let inverse = 1 / squares.squareRoot()
                    for c in 0..<width {
                        let x = row[c]
                        let p = sigmoid((x - mean) * inverse)
                        row[c] = p * x + (1 - p) * alpha * x
                    }
                }
            case .layerNorm(let weight, let bias, let eps):
                for r in 0..<rows {
                    let row = base + r * ld
                    var sum: Float = 0
                    for c in 0..<width { sum += row[c] }
                    let mean = sum / Float(width)
                    var squares: Float = 0
                    for c in 0..<width {
                        let d = row[c] - mean
                        squares += d * d
                    }
                    let inverse = 1 / (squares / Float(width) + eps).squareRoot()
                    for c in 0..<width {
                        var y = (row[c] - mean) * inverse
                        if let weight { y *= weight[c] }
                        if let bias { y += bias[c] }
                        row[c] = y
                    }
                }
            }
        }
    }

    @inline(__always)
    static func forEach(
        _ base: UnsafeMutablePointer<Float>, _ rows: Int, _ width: Int, _ ld: Int, _ body: (Float) -> Float
    ) {
        for r in 0..<rows {
            let row = base + r * ld
            for c in 0..<width { row[c] = body(row[c]) }
        }
    }

    /// Numerically stable softmax of each row.
    static func softmax(base: UnsafeMutablePointer<Float>, rows: Int, width: Int, ld: Int, threads: Int) {
        let address = UInt(bitPattern: base)
        parallelRows(rows, work: rows * width * 8, threads: threads) { range in
            guard let chunk = UnsafeMutablePointer<Float>(bitPattern: address) else { return }
            softmax(base: chunk + range.lowerBound * ld, rows: range.count, width: width, ld: ld)
        }
    }

    static func softmax(base: UnsafeMutablePointer<Float>, rows: Int, width: Int, ld: Int) {
        for r in 0..<rows {
            let row = base + r * ld
            var largest = -Float.infinity
            for c in 0..<width { largest = max(largest, row[c]) }
            var sum: Float = 0
            for c in 0..<width {
                let e = Foundation.exp(row[c] - largest)
                row[c] = e
                sum += e
            }
            let inverse = 1 / sum
            for c in 0..<width { row[c] *= inverse }
        }
    }
}

/// The pointers of one panel-split multiply, shared read-only (output panels are disjoint).
private struct PanelJob: @unchecked Sendable {
    let rows, n, k: Int32
    let a: UnsafePointer<Float>
    let lda: Int32
    let a16: UnsafePointer<UInt16>?
    let lda16: Int32
    let packed: UnsafeRawPointer
    let packedBF16: Int32
    let vnni, avx512: Bool
    let bias: UnsafePointer<Float>?
    let relu: UnsafePointer<UInt8>?
    let halves: UnsafePointer<UInt8>?
    let c: UnsafeMutablePointer<Float>
    let ldc: Int32

    /// The output panels [begin, end).
    func run(_ begin: Int, _ end: Int) {
        if vnni {
            mmoe_gemm_vnni(
                rows, n, k, a, lda, a16, lda16, packed.assumingMemoryBound(to: UInt16.self), bias, relu, halves, c, ldc, Int32(begin),
                Int32(end))
        } else {
            (avx512 ? mmoe_gemm_packed_panels_avx512 : mmoe_gemm_packed_panels)(
                rows, n, k, a, lda, packed, packedBF16, bias, relu, c, ldc, Int32(begin), Int32(end))
        }
    }
}

/// A read-only view of one embedding table inside its tensor's storage (zero-copy: a mapped
/// file stays mapped, an i8 table stays i8).
struct EmbeddingTableView: @unchecked Sendable {
    let name: String
    let dtype: DType
    let vocabSize: Int
    let dim: Int
    let rows: UnsafeRawPointer
    let scales: UnsafeRawPointer?
    let offsets: UnsafeRawPointer?

    init(name: String, weight: Tensor, scale: Tensor?, offset: Tensor? = nil) throws(ModelError) {
        guard weight.shape.count == 2, let base = weight.storage.bytes.baseAddress else {
            throw .invalidTensor(name: TensorNames.embedding(name), reason: "an embedding table must be a non-empty matrix")
        }
        self.name = name
        dtype = weight.dtype
        vocabSize = weight.shape[0]
        dim = weight.shape[1]
        rows = base + weight.byteOffset
        scales = scale.flatMap { s in s.storage.bytes.baseAddress.map { $0 + s.byteOffset } }
        offsets = offset.flatMap { s in s.storage.bytes.baseAddress.map { $0 + s.byteOffset } }
        if dtype == .i8, scales == nil {
            throw .missingTensor(name: TensorNames.embeddingScale(name), expectedShape: [vocabSize])
        }
    }

    /// Starts bringing row `id` into the cache (a later `read` of it then waits less; ids
    /// outside the table are ignored).
    @inline(__always)
    func prefetch(row id: Int64) {
        guard id >= 0, id < Int64(vocabSize) else { return }
        let bytes = dtype == .f32 ? 4 : dtype == .i8 ? 1 : 2
        mmoe_prefetch(rows + Int(id) * dim * bytes)
    }

    /// destination[0..<dim] (+)= row `id`.
    @inline(__always)
    func read(row id: Int, into destination: UnsafeMutablePointer<Float>, accumulate: Bool) {
        switch dtype {
        case .f32:
            let source = rows + id * dim * 4
            if accumulate {
                for c in 0..<dim {
                    destination[c] += Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: c * 4, as: UInt32.self)))
                }
            } else {
                UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: dim * 4)
            }
        case .f16:
            let source = rows + id * dim * 2
            for c in 0..<dim {
                let v = HalfPrecision.float(fromHalf: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: c * 2, as: UInt16.self)))
                destination[c] = accumulate ? destination[c] + v : v
            }
        case .bf16:
            mmoe_widen_bf16_row(rows + id * dim * 2, Int32(dim), destination, accumulate ? 1 : 0)
        case .i8:
            let source = (rows + id * dim).assumingMemoryBound(to: Int8.self)
            let scale =
                scales.map { Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: id * 4, as: UInt32.self))) } ?? 0
            let offset =
                offsets.map { Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: id * 4, as: UInt32.self))) } ?? 0
            for c in 0..<dim {
                let v = Float(source[c]) * scale + offset
                destination[c] = accumulate ? destination[c] + v : v
            }
        }
    }

    /// destination[c] = max(destination[c], row[c]).
    @inline(__always)
    func maxRow(_ id: Int, into destination: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        read(row: id, into: scratch, accumulate: false)
        for c in 0..<dim { destination[c] = max(destination[c], scratch[c]) }
    }
}
