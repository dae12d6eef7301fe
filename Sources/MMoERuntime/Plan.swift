import MMoECore

/// A column range of one scratch buffer: `buffer` is `[batch, bufferWidth]` row-major and
/// the view covers columns `column ..< column + width`.
struct View: Hashable, Sendable {
    var buffer: Int
    var column: Int
    var width: Int

    /// Whether the two views share a column of the same buffer.
    func overlaps(_ other: View) -> Bool {
        buffer == other.buffer && column < other.column + other.width && other.column < column + width
    }
}

/// An elementwise operation applied row by row to a view (the epilogue of a matrix multiply).
enum PointwiseOp: Sendable {
    case bias([Float])
    case affine(scale: [Float], shift: [Float])
    case relu
    case leakyRelu(Float)
    case prelu([Float])  // 1 value (scalar) or one per column
    case sigmoid
    case tanh
    case gelu
    case geluTanh
    case silu
    /// y = x · (α + (1 − α) · sigmoid(scale·x + shift)) — both DeepCTR Dice variants after folding their BN.
    case dice(scale: [Float], shift: [Float], alpha: [Float])
    /// torch-rechub Dice: per-row statistics.
    case diceRowwise(alpha: Float, eps: Float)
    case layerNorm(weight: [Float]?, bias: [Float]?, eps: Float)
}

/// A matrix multiply with its fused epilogue: output = relu?(input · weight + bias).
struct GemmStep: Sendable {
    var input: View
    var output: View
    /// The weight `[output.width, input.width]` (the BLAS path; empty on the packed path).
    var weight: [Float]
    /// The same weights packed for the AVX2 kernel (empty when the kernel is not used): float32
    /// panels, or bfloat16 panels two to a Float when `packedBF16`.
    var packed: PackedWeights
    /// Bias added in the epilogue (packed path only; empty: none).
    var bias: [Float]
    /// Per 16-column panel: apply ReLU in the epilogue (packed path only).
    var relu: [UInt8]
    /// Whether `packed` holds bfloat16 panels (weights stored as bf16, no batch norm folded).
    var packedBF16 = false
    /// Whether `packed` holds bfloat16 weights in pairs along k for bfloat16 products
    /// (`KernelPath.avx512bf16` on a model whose weights are stored as bf16).
    var vnni = false
    /// Per 16-column panel: written as bfloat16 (`PlanCompiler.handOffBF16`; empty: none), at
    /// the panel's column counted in bfloat16 values from the start of the output view's row.
    var outputBF16: [UInt8] = []
    /// When the input is bfloat16 written by an earlier multiply: the first column of that
    /// multiply's output view (the input's bfloat16 values start `input.column - origin`
    /// values after it, rows twice the buffer's width apart in bfloat16 values).
    var inputBF16Origin: Int? = nil
}

/// One step of the compiled program.
enum Step: Sendable {
    /// Every view the step reads or writes.
    var views: [View] {
        switch self {
        case .gemm(let s): [s.input, s.output]
        case .pointwise(let v, _), .softmax(let v): [v]
        case .copy(let from, let to): [from, to]
        case .mix(let gate, let experts, let output): [gate, output] + experts
        case .attention(let first, let second, _, _, let output): [first, second, output]
        }
    }

    /// A matrix multiply (with a fused epilogue on the packed path).
    case gemm(GemmStep)
    case pointwise(View, [PointwiseOp])
    case copy(from: View, to: View)
    case softmax(View)
    /// output[b] = Σ_e gate[b, e] · experts[e][b]
    case mix(gate: View, experts: [View], output: View)
    /// AITM's attention transfer over two items per row, each given as its query, key and
    /// value side by side at columns 0, `stride`, 2·`stride` of its view:
    /// a_j = ⟨q_j, k_j⟩ / √width, w = softmax(a), output = w_0·v_0 + w_1·v_1.
    case attention(first: View, second: View, stride: Int, width: Int, output: View)
}

/// How a task's tower output becomes its prediction.
struct HeadPlan: Sendable {
    var view: View
    var kind: HeadKind
    var bias: Float
    /// Values per example: the classes of a softmax head, else 1.
    var width: Int { kind == .softmax ? view.width : 1 }
}

/// A gate whose weights can be reported.
struct GatePlan: Sendable {
    var name: String
    var view: View
}

/// Where a feature's values land in the input buffer. A class: every prediction walks the
/// plans, and copying a struct holding the feature's strings and vocabulary cost a retain and
/// release per field each time (a few microseconds of a batch-1 call over 20 features).
final class InputPlan: Sendable {
    let feature: Feature
    let column: Int
    let width: Int
    let table: Int?  // index into Model.tables
    /// Raw value → id, for a feature with a vocabulary list.
    let vocabulary: [String: Int]?

    init(feature: Feature, column: Int, width: Int, table: Int?, vocabulary: [String: Int]? = nil) {
        self.feature = feature
        self.column = column
        self.width = width
        self.table = table
        self.vocabulary = vocabulary
    }

    /// The id of a raw value (nil: out of vocabulary).
    func id(of value: String) -> Int? {
        guard let rule = feature.vocabulary else { return nil }
        if let buckets = rule.hashBuckets { return Int(Vocabulary.fnv1a(value) % UInt64(buckets)) + rule.offset }
        return vocabulary?[value]
    }
}

/// A linear layer's weight `[out, in]`: the model's tensor, and the per-row factors of the
/// batch norms folded into it. On the packed path the tensor is read once, straight from the
/// (mapped) file, while it is packed; nothing is copied before.
struct DenseWeight {
    let name: String
    let tensor: Tensor
    /// One array of per-row factors per folded batch norm, applied in order.
    var rowScales: [[Float]] = []

    var count: Int { tensor.elementCount }

    /// The values with the batch norms folded in; refuses infinities and NaNs.
    func materialized() throws(ModelError) -> [Float] {
        var values = tensor.floats()
        try values.withUnsafeMutableBufferPointer { (buffer: inout UnsafeMutableBufferPointer<Float>) throws(ModelError) in
            for (index, value) in buffer.enumerated() where !value.isFinite { throw .nonFiniteTensor(name: name, index: index) }
            let inWidth = buffer.count / max(rowScales.first?.count ?? 1, 1)
            for factors in rowScales {
                for (o, factor) in factors.enumerated() {
                    for i in (o * inWidth)..<((o + 1) * inWidth) { buffer[i] *= factor }
                }
            }
        }
        return values
    }
}

/// An MLP lowered to matrix multiplies with fused epilogues.
struct CompiledMLP {
    struct DenseLayer {
        var inWidth: Int
        var outWidth: Int
        var weight: DenseWeight
        var ops: [PointwiseOp]  // starts with .bias when the layer has one
    }
    var prologue: [PointwiseOp] = []
    var layers: [DenseLayer] = []
}

/// Turns spec + tensors into a program of steps over scratch buffers.
struct PlanCompiler {
    let spec: ModelSpec
    let tensors: TensorStore
    var bufferWidths: [Int] = []
    var steps: [Step] = []
    var gates: [GatePlan] = []

    init(spec: ModelSpec, tensors: TensorStore, packed: Bool, bf16Products: Bool = false) {
        self.spec = spec
        self.tensors = tensors
        packedKernel = packed
        self.bf16Products = bf16Products
    }

    /// Whether layers whose weights are stored as bfloat16 multiply in bfloat16.
    let bf16Products: Bool

    /// Whether the weights are packed for the packed kernels (else BLAS runs them as stored).
    let packedKernel: Bool

    /// Appends a matrix multiply whose output column ranges `segments` (column, width, ops)
    /// each get their epilogue. On the packed path a leading bias and a following ReLU are
    /// fused into the multiply; segments start at multiples of 16 columns, so ReLU is decided
    /// per 16-column panel without touching a neighbour.
    mutating func appendDense(
        input: View, pieces: [(column: Int, outputs: Int, weight: DenseWeight)], output: View,
        segments: [(column: Int, width: Int, ops: [PointwiseOp])]
    ) throws(ModelError) {
        // Weights are copied (packed) at load: a file declaring more than the process can get is refused.
        let (floats, overflow) = input.width.multipliedReportingOverflow(by: (output.width + 15) / 16 * 16)
        if let reason = MemoryBudget.refusal(
            overflow ? Int.max : floats.multipliedReportingOverflow(by: 4).partialValue,
            for: "packing the weights of a \(input.width) x \(output.width) layer")
        {
            throw .memory(reason)
        }
        guard packedKernel else {
            // BLAS wants one [total, in] matrix: each piece's rows at its column offset.
            var stacked = [Float](repeating: 0, count: input.width * output.width)
            let inWidth = input.width
            for piece in pieces {
                let values = try piece.weight.materialized()
                stacked.withUnsafeMutableBufferPointer { destination in
                    values.withUnsafeBufferPointer { source in
                        guard let d = destination.baseAddress, let s = source.baseAddress else { return }
                        (d + piece.column * inWidth).update(from: s, count: piece.outputs * inWidth)
                    }
                }
            }
            steps.append(.gemm(GemmStep(input: input, output: output, weight: stacked, packed: .empty, bias: [], relu: [])))
            for segment in segments where !segment.ops.isEmpty {
                steps.append(
                    .pointwise(View(buffer: output.buffer, column: output.column + segment.column, width: segment.width), segment.ops))
            }
            return
        }
        var bias = [Float](repeating: 0, count: output.width)
        var hasBias = false
        var relu = [UInt8](repeating: 0, count: (output.width + 15) / 16)
        var remaining: [(View, [PointwiseOp])] = []
        for segment in segments {
            var ops = segment.ops
            if case .bias(let values)? = ops.first {
                for c in 0..<segment.width { bias[segment.column + c] = values[c] }
                hasBias = true
                ops.removeFirst()
            }
            if case .relu? = ops.first, segment.column % 16 == 0 {
                ops.removeFirst()
                for p in (segment.column / 16)..<((segment.column + segment.width + 15) / 16) { relu[p] = 1 }
            }
            if !ops.isEmpty {
                remaining.append((View(buffer: output.buffer, column: output.column + segment.column, width: segment.width), ops))
            }
        }
        if bf16Products, !pieces.isEmpty, pieces.allSatisfy({ $0.weight.tensor.dtype == .bf16 }) {
            let packed = try PackedKernel.packVNNI(pieces: pieces, outputs: output.width, inputs: input.width)
            steps.append(
                .gemm(GemmStep(input: input, output: output, weight: [], packed: packed, bias: hasBias ? bias : [], relu: relu, vnni: true))
            )
        } else {
            let (packed, isBF16) = try PackedKernel.pack(pieces: pieces, outputs: output.width, inputs: input.width)
            steps.append(
                .gemm(
                    GemmStep(
                        input: input, output: output, weight: [], packed: packed, bias: hasBias ? bias : [], relu: relu, packedBF16: isBF16)
                ))
        }
        for (view, ops) in remaining { steps.append(.pointwise(view, ops)) }
    }

    mutating func allocate(width: Int) -> View {
        bufferWidths.append(width)
        return View(buffer: bufferWidths.count - 1, column: 0, width: width)
    }

    func floats(_ name: String) throws(ModelError) -> [Float] {
        guard let tensor = tensors[name] else { throw .missingTensor(name: name, expectedShape: []) }
        let values = tensor.floats()
        let bad = values.withUnsafeBufferPointer { buffer -> Int? in
            for (index, value) in buffer.enumerated() where !value.isFinite { return index }
            return nil
        }
        if let bad { throw .nonFiniteTensor(name: name, index: bad) }
        return values
    }

    /// Per-channel scale and shift of an inference batch norm: y = x·scale + shift.
    func batchNormAffine(path: String, index: Int, eps: Double, affine: Bool, width: Int) throws(ModelError)
        -> (scale: [Double], shift: [Double])
    {
        let name = { (p: String) in TensorNames.layer(path, index, p) }
        let mean = try floats(name("running_mean"))
        let variance = try floats(name("running_var"))
        let gamma = affine ? try floats(name("weight")) : Array(repeating: 1, count: width)
        let beta = affine ? try floats(name("bias")) : Array(repeating: 0, count: width)
        var scale = [Double](repeating: 0, count: width)
        var shift = [Double](repeating: 0, count: width)
        for c in 0..<width {
            let denominator = Double(variance[c]) + eps
            guard denominator > 0 else {
                throw .invalidTensor(name: name("running_var"), reason: "variance + eps is not positive at channel \(c)")
            }
            scale[c] = Double(gamma[c]) / denominator.squareRoot()
            shift[c] = Double(beta[c]) - Double(mean[c]) * scale[c]
        }
        return (scale, shift)
    }

    /// Lowers one MLP: batch norm directly after a linear is folded into it.
    func compile(_ mlp: MLP, path: String, inputWidth: Int) throws(ModelError) -> CompiledMLP {
        var result = CompiledMLP()
        var width = inputWidth
        // The linear waiting for a batch norm to fold (until the layer's first other op).
        var pendingWeight: DenseWeight? = nil
        var pendingBias: [Double]? = nil
        var pendingIn = 0
        func appendOp(_ op: PointwiseOp, to result: inout CompiledMLP) {
            if result.layers.isEmpty { result.prologue.append(op) } else { result.layers[result.layers.count - 1].ops.append(op) }
        }
        func flush(_ result: inout CompiledMLP) {
            guard let weight = pendingWeight else { return }
            let outWidth = weight.count / max(pendingIn, 1)
            let inWidth = pendingIn
            var ops: [PointwiseOp] = []
            if let bias = pendingBias { ops.append(.bias(bias.map { Float($0) })) }
            result.layers.append(.init(inWidth: inWidth, outWidth: outWidth, weight: weight, ops: ops))
            pendingWeight = nil
            pendingBias = nil
        }
        for (index, layer) in mlp.layers.enumerated() {
            let name = { (p: String) in TensorNames.layer(path, index, p) }
            switch layer {
            case .dropout, .identity:
                continue
            case .linear(let units, let hasBias):
                flush(&result)
                guard let tensor = tensors[name("weight")] else { throw .missingTensor(name: name("weight"), expectedShape: []) }
                pendingWeight = DenseWeight(name: name("weight"), tensor: tensor)
                pendingBias = hasBias ? try floats(name("bias")).map { Double($0) } : nil
                pendingIn = width
                width = units
                continue
            case .batchNorm(let eps, let affine):
                let (scale, shift) = try batchNormAffine(path: path, index: index, eps: eps, affine: affine, width: width)
                if var weight = pendingWeight {
                    // Fold: W' = diag(scale)·W (applied while packing), b' = scale·b + shift.
                    weight.rowScales.append(scale.map { Float($0) })
                    pendingWeight = weight
                    let bias = pendingBias ?? Array(repeating: 0, count: width)
                    pendingBias = (0..<width).map { bias[$0] * scale[$0] + shift[$0] }
                    continue
                }
                flush(&result)
                appendOp(.affine(scale: scale.map { Float($0) }, shift: shift.map { Float($0) }), to: &result)
                continue
            default:
                break
            }
            flush(&result)
            let op: PointwiseOp
            switch layer {
            case .relu: op = .relu
            case .leakyRelu(let slope): op = .leakyRelu(Float(slope))
            case .prelu: op = .prelu(try floats(name("weight")))
            case .sigmoid: op = .sigmoid
            case .tanh: op = .tanh
            case .gelu(let tanhApproximation): op = tanhApproximation ? .geluTanh : .gelu
            case .silu: op = .silu
            case .layerNorm(let eps, let affine):
                op = .layerNorm(
                    weight: affine ? try floats(name("weight")) : nil, bias: affine ? try floats(name("bias")) : nil,
                    eps: Float(eps))
            case .dice(let variant, let eps):
                switch variant {
                case .rechub:
                    op = .diceRowwise(alpha: try floats(name("alpha"))[0], eps: Float(eps))
                case .deepctr, .deepctrTorch:
                    let (scale, shift) = try batchNormAffine(
                        path: path, index: index, eps: eps, affine: variant == .deepctrTorch, width: width)
                    op = .dice(scale: scale.map { Float($0) }, shift: shift.map { Float($0) }, alpha: try floats(name("alpha")))
                }
            default:
                continue
            }
            appendOp(op, to: &result)
        }
        flush(&result)
        return result
    }

    /// Compiles MLPs, each with its input view; first layers of MLPs reading the same view
    /// become one matrix multiply. Returns each MLP's output view.
    mutating func compileMLPs(_ items: [(input: View, mlp: MLP, path: String)]) throws(ModelError) -> [View] {
        var compiled: [CompiledMLP] = []
        for item in items { compiled.append(try compile(item.mlp, path: item.path, inputWidth: item.input.width)) }
        var outputs = [View?](repeating: nil, count: items.count)
        var started = [Int: (view: View, nextLayer: Int)]()

        // Group fusable MLPs (no prologue, at least one layer) by input view, in first-seen order.
        var groupOrder: [View] = []
        var groups: [View: [Int]] = [:]
        for (index, mlp) in compiled.enumerated() where mlp.prologue.isEmpty && !mlp.layers.isEmpty {
            if groups[items[index].input] == nil { groupOrder.append(items[index].input) }
            groups[items[index].input, default: []].append(index)
        }
        for input in groupOrder {
            let members = groups[input] ?? []
            // Each member starts at a multiple of 16 columns so its epilogue can be fused per panel.
            var columns: [Int] = []
            var total = 0
            for member in members {
                columns.append(total)
                total += (compiled[member].layers[0].outWidth + 15) / 16 * 16
            }
            let output = allocate(width: total)
            var pieces: [(column: Int, outputs: Int, weight: DenseWeight)] = []
            var segments: [(column: Int, width: Int, ops: [PointwiseOp])] = []
            for (index, member) in members.enumerated() {
                let layer = compiled[member].layers[0]
                let column = columns[index]
                pieces.append((column, layer.outWidth, layer.weight))
                segments.append((column, layer.outWidth, layer.ops))
                started[member] = (View(buffer: output.buffer, column: column, width: layer.outWidth), 1)
            }
            try appendDense(input: input, pieces: pieces, output: output, segments: segments)
        }
        for index in compiled.indices {
            let mlp = compiled[index]
            var current: View
            var next: Int
            if let (view, layer) = started[index] {
                current = view
                next = layer
            } else if mlp.prologue.isEmpty {
                current = items[index].input  // identity MLP
                next = 0
            } else {
                current = allocate(width: items[index].input.width)
                steps.append(.copy(from: items[index].input, to: current))
                steps.append(.pointwise(current, mlp.prologue))
                next = 0
            }
            while next < mlp.layers.count {
                let layer = mlp.layers[next]
                let output = allocate(width: layer.outWidth)
                try appendDense(
                    input: current, pieces: [(0, layer.outWidth, layer.weight)], output: output, segments: [(0, layer.outWidth, layer.ops)])
                current = output
                next += 1
            }
            outputs[index] = current
        }
        return outputs.map { $0 ?? View(buffer: 0, column: 0, width: 0) }
    }

    /// bfloat16 hand-off between bfloat16-product layers: a multiply's output panels whose only
    /// readers are later bfloat16-product multiplies, each reading a whole view that starts on a
    /// panel boundary and is a multiple of 32 wide (so the next layer's tiles read it as it is),
    /// are written as bfloat16 and read as such. The values are the ones the reader would have
    /// rounded the float32 output to, so the predictions are the same; the bytes through the
    /// caches and the rounding pass go. A bfloat16 panel p lands in the bytes of float32 panel
    /// p / 2, which must then be bfloat16 too. `externalReads`: views read after the steps (heads,
    /// gate weights).
    static func handOffBF16(_ steps: inout [Step], externalReads: [View]) {
        for index in steps.indices {
            guard case .gemm(var producer) = steps[index], producer.vnni, !producer.packed.isEmpty else { continue }
            let output = producer.output
            let panels = (output.width + 15) / 16
            // Panels [lower, upper) of the output that a view touches.
            func touched(_ view: View) -> Range<Int> {
                let lower = max(view.column - output.column, 0) / 16
                let upper = (min(view.column + view.width, output.column + output.width) - output.column + 15) / 16
                return lower..<max(lower, upper)
            }
            var blocked = [Bool](repeating: false, count: panels)
            var readers: [(step: Int, panels: Range<Int>)] = []
            for view in externalReads where view.overlaps(output) { for p in touched(view) { blocked[p] = true } }
            for later in (index + 1)..<steps.count {
                for view in steps[later].views where view.overlaps(output) {
                    let range = touched(view)
                    if case .gemm(let reader) = steps[later], reader.vnni, !reader.packed.isEmpty, view == reader.input,
                        reader.output.buffer != output.buffer, view.column >= output.column,
                        view.column + view.width <= output.column + output.width, (view.column - output.column) % 16 == 0,
                        view.width % 32 == 0
                    {
                        readers.append((later, range))
                    } else {
                        for p in range { blocked[p] = true }
                    }
                }
            }
            // A reader takes bfloat16 only if all its panels are; a panel is bfloat16 only if
            // every reader takes it and the float32 panel whose bytes it lands in is bfloat16.
            var half = [Bool](repeating: false, count: panels)
            for reader in readers { for p in reader.panels { half[p] = !blocked[p] } }
            var changed = true
            while changed {
                changed = false
                for reader in readers where reader.panels.contains(where: { !half[$0] }) {
                    for p in reader.panels where half[p] {
                        half[p] = false
                        changed = true
                    }
                }
                for p in 0..<panels where half[p] && !half[p / 2] {
                    half[p] = false
                    changed = true
                }
            }
            guard half.contains(true) else { continue }
            producer.outputBF16 = half.map { $0 ? 1 : 0 }
            steps[index] = .gemm(producer)
            for reader in readers where reader.panels.allSatisfy({ half[$0] }) {
                guard case .gemm(var step) = steps[reader.step] else { continue }
                step.inputBF16Origin = output.column
                steps[reader.step] = .gemm(step)
            }
        }
    }

    /// AITM's attention transfer `aits.<index>` over (current, info): the query, key and value
    /// of each item are one fused matrix multiply, then the two-item attention.
    mutating func attention(current: View, info: View, index: Int) throws(ModelError) -> View {
        let width = current.width
        let stride = (width + 15) / 16 * 16
        var pieces: [(column: Int, outputs: Int, weight: DenseWeight)] = []
        for (p, part) in TensorNames.attentionParts.enumerated() {
            let name = TensorNames.attention(index, part)
            guard let tensor = tensors[name] else { throw .missingTensor(name: name, expectedShape: [width, width]) }
            pieces.append((p * stride, width, DenseWeight(name: name, tensor: tensor)))
        }
        let segments = pieces.map { (column: $0.column, width: width, ops: [PointwiseOp]()) }
        let first = allocate(width: 3 * stride)
        try appendDense(input: current, pieces: pieces, output: first, segments: segments)
        let second = allocate(width: 3 * stride)
        try appendDense(input: info, pieces: pieces, output: second, segments: segments)
        let output = allocate(width: width)
        steps.append(.attention(first: first, second: second, stride: stride, width: width, output: output))
        return output
    }

    /// Softmax over a gate's output, then the weighted sum of the experts.
    mutating func mixture(gate: View, experts: [View], gateName: String) -> View {
        steps.append(.softmax(gate))
        gates.append(GatePlan(name: gateName, view: gate))
        let output = allocate(width: experts.first?.width ?? 0)
        steps.append(.mix(gate: gate, experts: experts, output: output))
        return output
    }

    /// Compiles the architecture reading `input`; returns each tower's input view.
    mutating func compileArchitecture(input: View) throws(ModelError) -> [View] {
        let a = spec.architecture
        let taskCount = spec.tasks.count
        switch a.type {
        case .sharedBottom, .esmm:
            var shared = input
            if let bottom = a.bottom { shared = try compileMLPs([(input, bottom, "bottom")])[0] }
            return Array(repeating: shared, count: taskCount)
        case .omoe, .mmoe:
            let experts = a.experts ?? []
            var items = experts.enumerated().map { (input: input, mlp: $0.element, path: "experts.\($0.offset)") }
            if a.type == .omoe, let gate = a.gate {
                items.append((input, gate, "gate"))
            } else {
                for (t, gate) in (a.gates ?? []).enumerated() { items.append((input, gate, "gates.\(t)")) }
            }
            let views = try compileMLPs(items)
            let expertViews = Array(views[0..<experts.count])
            if a.type == .omoe {
                let mixed = mixture(gate: views[experts.count], experts: expertViews, gateName: "shared")
                return Array(repeating: mixed, count: taskCount)
            }
            return (0..<taskCount).map { t in
                mixture(gate: views[experts.count + t], experts: expertViews, gateName: spec.tasks[t].name)
            }
        case .aitm:
            let bottoms = a.bottoms ?? []
            var views = try compileMLPs(bottoms.enumerated().map { (input: input, mlp: $0.element, path: "bottoms.\($0.offset)") })
            for (index, gate) in (a.infoGates ?? []).enumerated() {
                let info = try compileMLPs([(views[index], gate, "info_gates.\(index)")])[0]
                views[index + 1] = try attention(current: views[index + 1], info: info, index: index)
            }
            return views
        case .ple:
            var taskInputs = Array(repeating: input, count: taskCount)
            var sharedInput = input
            for (l, level) in (a.levels ?? []).enumerated() {
                var items: [(input: View, mlp: MLP, path: String)] = []
                var specificRanges: [Range<Int>] = []
                for (t, experts) in level.specificExperts.enumerated() {
                    let start = items.count
                    for (j, mlp) in experts.enumerated() { items.append((taskInputs[t], mlp, "levels.\(l).specific_experts.\(t).\(j)")) }
                    specificRanges.append(start..<items.count)
                }
                let sharedStart = items.count
                for (k, mlp) in level.sharedExperts.enumerated() { items.append((sharedInput, mlp, "levels.\(l).shared_experts.\(k)")) }
                let sharedRange = sharedStart..<items.count
                let gateStart = items.count
                for (t, gate) in level.specificGates.enumerated() { items.append((taskInputs[t], gate, "levels.\(l).specific_gates.\(t)")) }
                if let gate = level.sharedGate { items.append((sharedInput, gate, "levels.\(l).shared_gate")) }
                let views = try compileMLPs(items)
                let sharedViews = Array(views[sharedRange])
                var nextTaskInputs: [View] = []
                for t in 0..<taskCount {
                    let experts = Array(views[specificRanges[t]]) + sharedViews
                    nextTaskInputs.append(
                        mixture(gate: views[gateStart + t], experts: experts, gateName: "level\(l).\(spec.tasks[t].name)"))
                }
                if level.sharedGate != nil {
                    let all = Array(views[0..<sharedRange.upperBound])
                    sharedInput = mixture(gate: views[gateStart + taskCount], experts: all, gateName: "level\(l).shared")
                }
                taskInputs = nextTaskInputs
            }
            return taskInputs
        }
    }
}
