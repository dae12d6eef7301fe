import CBLAS
import CMMoEKernels
import Foundation
import MMoECore

/// A compiled multi-task model, ready to predict.
///
/// Build it from a spec and its tensors (or open a model file with `MMoEFormat`). Loading
/// validates every tensor against the spec and compiles a plan: batch norm folded into the
/// preceding linear, weights packed, first layers of every MLP reading the same input fused
/// into one matrix multiply, bias and activation fused into its epilogue. Embedding tables are
/// not copied. `predict` is reentrant: call it from any number of threads.
public final class Model: Sendable {
    /// The model description.
    public let spec: ModelSpec
    /// The tensors (embedding tables are read from here at predict time).
    public let tensors: TensorStore

    let inputs: [InputPlan]
    let tables: [EmbeddingTableView]
    let featureIndex: [String: Int]
    let inputView: View
    let steps: [Step]
    /// Rows run through the whole network at a time (see `packedChunkRows`).
    let rowsPerChunk: Int
    /// Runs of independent matrix multiplies by first step index (see `independentRuns`).
    let independentRuns: [Int: IndependentRun]
    let bufferWidths: [Int]
    let bufferOffsets: [Int]  // prefix sums of bufferWidths, in floats per row
    let rowFloats: Int
    let heads: [HeadPlan]
    let gatePlans: [GatePlan]
    let outputs: [OutputSpec]
    let outputWidths: [Int]
    let scratch = ScratchPool()
    /// Every input plan at its own column (what `assembleInput` writes without a selection).
    let fullSelection: [(index: Int, column: Int)]
    /// Ranking plans by user side (nil: the first layers cannot be split on this path).
    let rankPlans = Locked<[String: RankPlan?]>([:])

    /// Rows processed at once; larger batches run in chunks so scratch memory stays bounded.
    public static let chunkRows = 4096

    /// The matrix-multiply path this model runs on (chosen when it is loaded).
    public let kernel: KernelPath

    /// Validates `tensors` against `spec` and compiles the plan for the process's default
    /// kernel path (`KernelPath.processDefault`).
    public convenience init(spec: ModelSpec, tensors: TensorStore) throws(ModelError) {
        try self.init(spec: spec, tensors: tensors, kernel: KernelPath.processDefault)
    }

    /// Validates `tensors` against `spec` and compiles the plan for `kernel`, which must be
    /// supported by this CPU (`KernelPath.isSupported`); an unsupported path falls back to the best one.
    /// With bfloat16 products, `MMOE_NO_BF16_HANDOFF` in the environment when the model is
    /// loaded keeps every layer's output float32 (same predictions; to measure the hand-off).
    public convenience init(spec: ModelSpec, tensors: TensorStore, kernel: KernelPath) throws(ModelError) {
        try self.init(spec: spec, tensors: tensors, kernel: kernel, bf16HandOff: getenv("MMOE_NO_BF16_HANDOFF") == nil)
    }

    /// A model from a spec and tensors already validated together (`layout` is what
    /// `spec.validate(tensors:)` returned for exactly these): an opened `.mmoe` file's.
    package convenience init(spec: ModelSpec, tensors: TensorStore, validatedLayout layout: ModelLayout) throws(ModelError) {
        try self.init(
            spec: spec, tensors: tensors, kernel: KernelPath.processDefault, bf16HandOff: getenv("MMOE_NO_BF16_HANDOFF") == nil,
            validatedLayout: layout)
    }

    /// `bf16HandOff`: with bfloat16 products, layers read by bfloat16-product layers only write
    /// their output as bfloat16 (`PlanCompiler.handOffBF16`); false keeps every output float32
    /// (the tests compare both). `validatedLayout`: see `init(spec:tensors:validatedLayout:)`;
    /// nil validates here.
    init(spec: ModelSpec, tensors: TensorStore, kernel: KernelPath, bf16HandOff: Bool, validatedLayout: ModelLayout? = nil)
        throws(ModelError)
    {
        self.kernel = kernel.isSupported ? kernel : KernelPath.best
        let layout: ModelLayout
        if let validatedLayout {
            layout = validatedLayout
        } else {
            layout = try spec.validate(tensors: tensors)
        }
        self.spec = spec
        self.tensors = tensors

        var tables: [EmbeddingTableView] = []
        var tableIndex: [String: Int] = [:]
        for table in spec.tables {
            guard let weight = tensors[TensorNames.embedding(table.name)] else {
                throw .missingTensor(name: TensorNames.embedding(table.name), expectedShape: [table.vocabSize, table.dim])
            }
            tableIndex[table.name] = tables.count
            tables.append(
                try EmbeddingTableView(
                    name: table.name, weight: weight, scale: tensors[TensorNames.embeddingScale(table.name)],
                    offset: tensors[TensorNames.embeddingOffset(table.name)]))
        }
        self.tables = tables
        var inputs: [InputPlan] = []
        var featureIndex: [String: Int] = [:]
        for feature in spec.features {
            let column = layout.featureOffsets[feature.name] ?? 0
            let table = feature.table.flatMap { tableIndex[$0] }
            let width = feature.kind == .dense ? (feature.width ?? 1) : tables[table ?? 0].dim
            featureIndex[feature.name] = inputs.count
            var vocabulary: [String: Int]?
            if let values = feature.vocabulary?.values {
                let offset = feature.vocabulary?.offset ?? 0
                vocabulary = Dictionary(values.enumerated().map { ($1, $0 + offset) }, uniquingKeysWith: { a, _ in a })
            }
            inputs.append(InputPlan(feature: feature, column: column, width: width, table: table, vocabulary: vocabulary))
        }
        self.inputs = inputs
        self.featureIndex = featureIndex
        fullSelection = inputs.enumerated().map { ($0.offset, $0.element.column) }

        var compiler = PlanCompiler(spec: spec, tensors: tensors, packed: self.kernel.isPacked, bf16Products: self.kernel == .avx512bf16)
        let input = compiler.allocate(width: layout.inputWidth)
        let towerInputs = try compiler.compileArchitecture(input: input)
        var towerItems: [(input: View, mlp: MLP, path: String)] = []
        for (t, tower) in spec.architecture.towers.enumerated() { towerItems.append((towerInputs[t], tower, "towers.\(t)")) }
        let towerOutputs = try compiler.compileMLPs(towerItems)
        var heads: [HeadPlan] = []
        for (t, task) in spec.tasks.enumerated() {
            let bias = task.predictionBias ? try compiler.floats(TensorNames.headBias(t))[0] : 0
            heads.append(HeadPlan(view: towerOutputs[t], kind: task.head, bias: bias))
        }
        inputView = input
        if bf16HandOff {
            PlanCompiler.handOffBF16(&compiler.steps, externalReads: heads.map(\.view) + compiler.gates.map(\.view))
        }
        steps = compiler.steps
        let bf16Products = steps.contains { step in if case .gemm(let gemm) = step { gemm.vnni } else { false } }
        independentRuns = Model.independentRuns(steps)
        rowsPerChunk = self.kernel.isPacked ? (bf16Products ? Model.bf16ChunkRows : Model.packedChunkRows) : Model.chunkRows
        // Rows of buffers 16 values wide or more are a multiple of 16 floats apart and every
        // buffer starts on a multiple of 16 floats per row: with the 64-byte aligned scratch area,
        // a kernel's 16-column store or load of a panel's row touches one cache line, not two.
        let widths = compiler.bufferWidths.map { $0 >= 16 ? ($0 + 15) / 16 * 16 : $0 }
        bufferWidths = widths
        var offsets: [Int] = []
        var total = 0
        for width in widths {
            total = (total + 15) / 16 * 16
            offsets.append(total)
            total += width
        }
        bufferOffsets = offsets
        rowFloats = total
        self.heads = heads
        gatePlans = compiler.gates
        outputs = spec.resolvedOutputs
        outputWidths = layout.outputWidths
    }

    /// Number of matrix multiplies in the compiled plan (fusion makes it smaller than the
    /// number of linear layers).
    public var matrixMultiplyCount: Int {
        steps.reduce(0) { count, step in if case .gemm = step { count + 1 } else { count } }
    }

    /// Runs the model on a batch of named feature arrays.
    public func predict(_ batch: [String: FeatureArray], options: PredictOptions = PredictOptions()) throws(PredictError)
        -> Prediction
    {
        let checked = try checkBatch(batch, options: options)
        return try execute(rows: checked.rows, ordered: checked.ordered, options: options, rank: nil)
    }

    /// Runs checked inputs (one array per input plan, in plan order). With `rank`, item
    /// features come from the candidates and the first layers' user part is already folded
    /// into the request's biases.
    func execute(rows: Int, ordered: [FeatureArray?], options: PredictOptions, rank: RankRequest?) throws(PredictError) -> Prediction {
        let buffers = OutputBuffers(
            rows: rows, headWidths: heads.map(\.width), gateWidths: options.includeGates ? gatePlans.map(\.view.width) : [])
        let threads = ComputeThreads.current
        // Large batches on the packed kernel: each thread runs the whole network on one chunk of
        // rows at a time (activations stay in its cache, no synchronisation inside a chunk) and
        // claims the next chunk when done, so a thread on a slower or busier core takes fewer
        // chunks instead of holding the call up (halves fixed in advance did, on a shared machine).
        let parts = kernel.isPacked ? min(threads, rows / Model.minRowsPerThread) : 1
        // At least two chunks per thread, so that there is something to balance.
        let chunk = parts > 1 ? min(rowsPerChunk, max(32, rows / (2 * parts) / 16 * 16)) : rowsPerChunk
        let chunks = (rows + chunk - 1) / chunk
        if parts > 1 {
            let failure = Locked<PredictError?>(nil)
            let next = Locked(0)
            WorkerPool.run(parts: parts) { _ in
                do throws(PredictError) {
                    try runChunks(maxRows: min(rows, chunk), batch: ordered, options: options, outputs: buffers, threads: 1, rank: rank) {
                        next.withLock { index -> Range<Int>? in
                            guard index < chunks else { return nil }
                            index += 1
                            return ((index - 1) * chunk)..<min(rows, index * chunk)
                        }
                    }
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                }
            }
            if let error = failure.withLock({ $0 }) { throw error }
        } else if rows > 0 {
            var index = 0
            try runChunks(maxRows: min(rows, chunk), batch: ordered, options: options, outputs: buffers, threads: threads, rank: rank) {
                guard index < chunks else { return nil }
                index += 1
                return ((index - 1) * chunk)..<min(rows, index * chunk)
            }
        }
        let results = zip(buffers.heads, heads).map { Array(UnsafeBufferPointer(start: $0, count: rows * $1.width)) }
        let gateResults = zip(buffers.gates, buffers.gateWidths).map { Array(UnsafeBufferPointer(start: $0, count: rows * $1)) }
        var named: [String: [Float]] = [:]
        for (t, task) in spec.tasks.enumerated() { named[task.name] = results[t] }
        let gates = zip(gatePlans, gateResults).map { GateWeights(name: $0.name, experts: $0.view.width, weights: $1) }
        for output in outputs {
            guard output.product == nil, let task = output.task, let column = output.classIndex,
                let t = spec.tasks.firstIndex(where: { $0.name == task })
            else { continue }
            let width = heads[t].width
            named[output.name] = (0..<rows).map { results[t][$0 * width + column] }
        }
        // Products and fusions in order (each reads outputs defined before it).
        for output in outputs {
            if let product = output.product {
                var values = [Float](repeating: 1, count: rows)
                for factor in product {
                    guard let factorValues = named[factor] else { continue }
                    for r in 0..<rows { values[r] *= factorValues[r] }
                }
                named[output.name] = values
            } else if let fusion = output.fusion {
                let terms = fusion.terms.map { named[$0.output] ?? [] }
                let index = Dictionary(fusion.terms.enumerated().map { ($1.output, $0) }, uniquingKeysWith: { a, _ in a })
                named[output.name] = (0..<rows).map { r in
                    Float(fusion.apply { name in index[name].map { Double(terms[$0][r]) } ?? .nan })
                }
            }
        }
        var final: [String: [Float]] = [:]
        var widths: [String: Int] = [:]
        for (output, width) in zip(outputs, outputWidths) {
            final[output.name] = named[output.name]
            widths[output.name] = width
        }
        var prediction = Prediction(batchSize: rows, outputNames: outputs.map(\.name), outputs: final, widths: widths, gates: gates)
        prediction.unknownValues = buffers.unknown.withLock { $0 }
        return prediction
    }

    func maxTableDim() -> Int { tables.map(\.dim).max() ?? 0 }

    /// Rows below which a batch is not split over threads.
    static let minRowsPerThread = 128

    /// Consecutive steps `first ..< end` that are packed matrix multiplies none of which reads
    /// or writes what another writes, with the bytes of their packed weights.
    struct IndependentRun: Sendable, Equatable {
        var end: Int
        var bytes: Int
    }

    /// Runs of two or more consecutive packed matrix multiplies in which none reads or writes
    /// what another writes (the experts' second layers, the towers' layers), by first step index.
    static func independentRuns(_ steps: [Step]) -> [Int: IndependentRun] {
        var runs: [Int: IndependentRun] = [:]
        var first = 0
        while first < steps.count {
            guard case .gemm(let head) = steps[first], !head.packed.isEmpty else {
                first += 1
                continue
            }
            var reads = [head.input]
            var writes = [head.output]
            var bytes = Kernels.packedBytes(head)
            var end = first + 1
            while end < steps.count, case .gemm(let next) = steps[end], !next.packed.isEmpty,
                !writes.contains(where: { $0.overlaps(next.input) || $0.overlaps(next.output) }),
                !reads.contains(where: { $0.overlaps(next.output) })
            {
                reads.append(next.input)
                writes.append(next.output)
                bytes += Kernels.packedBytes(next)
                end += 1
            }
            if end - first >= 2 { runs[first] = IndependentRun(end: end, bytes: bytes) }
            first = end
        }
        return runs
    }

    /// Bytes of packed weights (over a run) from which a batch-1 run of independent multiplies
    /// is spread over the threads, each thread always taking the same members so that their
    /// weights stay in its core's cache (`WorkerPool` gives each core the same share every call):
    /// the benchmark model's float32 expert layers (1 MB) and bfloat16 ones (0.5 MB) both gain,
    /// with AVX-512 and with AVX2 (Docs/PERFORMANCE.md).
    static let independentRunMinimum = 300_000

    /// Runs the chunks `claim` hands out (each at most `maxRows` rows; nil when none is left)
    /// one after another on one scratch area.
    private func runChunks(
        maxRows: Int, batch: [FeatureArray?], options: PredictOptions, outputs: OutputBuffers, threads: Int, rank: RankRequest?,
        claim: () -> Range<Int>?
    ) throws(PredictError) {
        let scratch = scratch.acquire(floats: maxRows * rowFloats, extra: maxTableDim())
        defer { self.scratch.release(scratch) }
        // A ranking request's compact item input (the columns of item features only).
        let items = rank.map { UnsafeMutablePointer<Float>.allocate(capacity: max(maxRows * $0.plan.itemWidth, 1)) }
        defer { items?.deallocate() }
        while let range = claim() {
            try run(
                start: range.lowerBound, rows: range.count, batch: batch, options: options, scratch: scratch, outputs: outputs,
                threads: threads, rank: rank, items: items)
        }
    }

    /// Rows per chunk on the packed kernel (keeps a chunk's activations in L2).
    static let packedChunkRows = 256

    /// Rows per chunk with bfloat16 products: AMX multiplies so fast that the weights and a
    /// chunk's activations must stay in L2 together; with the benchmark model (1.35 MB of bf16
    /// weights, a 2,080-wide first layer) 32-row chunks ran 1-17 % faster than 64-row ones, and
    /// 16-row ones (half-empty AMX blocks) 25-30 % slower (Docs/PERFORMANCE.md).
    static let bf16ChunkRows = 32

    /// Ids, or raw values (strings) of a feature with a vocabulary.
    private func checkIDs(_ array: FeatureArray, _ plan: InputPlan) throws(PredictError) {
        switch array.values {
        case .int64: return
        case .strings where plan.feature.vocabulary != nil: return
        default:
            throw .wrongDType(
                feature: plan.feature.name, expected: plan.feature.vocabulary == nil ? "int64" : "int64 ids or raw values (strings)",
                actual: array.values.dtypeName)
        }
    }

    /// Checks names, dtypes and shapes; returns the batch size and the arrays in input-plan
    /// order (nil: absent).
    /// `only`: check just these features (a ranking request's user or item side); names
    /// outside it are unknown.
    func checkBatch(_ batch: [String: FeatureArray], options: PredictOptions, only: Set<String>? = nil) throws(PredictError) -> (
        rows: Int, ordered: [FeatureArray?]
    ) {
        let ordered = inputs.map { batch[$0.feature.name] }
        func known(_ name: String) -> Bool { featureIndex[name] != nil && (only?.contains(name) ?? true) }
        // Every name is known when the batch holds no more names than it holds of the model's
        // features (distinct: the spec's validation refuses a name given twice); otherwise the
        // first unknown one in sorted order is reported.
        let present = ordered.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        if only != nil || batch.count != present {
            for name in batch.keys.sorted() where !known(name) { throw .unknownFeature(name) }
        }
        if case .useRow(let row) = options.unknownIDs {
            for plan in inputs {
                guard let table = plan.table else { continue }
                guard row >= 0, row < tables[table].vocabSize else {
                    throw .invalidOption("fallback row \(row) is outside table '\(tables[table].name)' (0..<\(tables[table].vocabSize))")
                }
            }
        }
        var rows: Int?
        for (plan, given) in zip(inputs, ordered) where only?.contains(plan.feature.name) ?? true {
            guard let array = given else { throw .missingFeature(plan.feature.name) }
            let shape = array.shape
            let featureRows: Int
            switch plan.feature.kind {
            case .dense:
                guard case .float32 = array.values else {
                    throw .wrongDType(feature: plan.feature.name, expected: "float32", actual: array.values.dtypeName)
                }
                let width = plan.width
                let fits = (shape.count == 2 && shape[1] == width) || (width == 1 && shape.count == 1)
                guard fits, shape[0] >= 0 else {
                    throw .wrongShape(feature: plan.feature.name, expected: width == 1 ? "[B] or [B, 1]" : "[B, \(width)]", actual: shape)
                }
                featureRows = shape[0]
                guard Tensor.checkedElementCount(shape) == array.values.count else {
                    throw .wrongShape(feature: plan.feature.name, expected: "\(array.values.count) values", actual: shape)
                }
            case .sparse:
                try checkIDs(array, plan)
                guard (shape.count == 1 || (shape.count == 2 && shape[1] == 1)), shape[0] >= 0,
                    shape[0] == array.values.count
                else { throw .wrongShape(feature: plan.feature.name, expected: "[B] or [B, 1]", actual: shape) }
                featureRows = shape[0]
            case .sequence:
                try checkIDs(array, plan)
                let maxLength = plan.feature.maxLength ?? 1
                guard shape.count == 2, shape[0] >= 0, shape[1] >= 1, shape[1] <= maxLength,
                    Tensor.checkedElementCount(shape) == array.values.count
                else { throw .wrongShape(feature: plan.feature.name, expected: "[B, L] with 1 <= L <= \(maxLength)", actual: shape) }
                featureRows = shape[0]
            }
            if let rows, rows != featureRows { throw .inconsistentBatch(feature: plan.feature.name, rows: featureRows, expected: rows) }
            rows = featureRows
        }
        guard let rows else { return (0, ordered) }
        guard rows <= Int(Int32.max) else {
            throw .wrongShape(feature: inputs[0].feature.name, expected: "fewer than 2^31 rows", actual: [rows])
        }
        return (rows, ordered)
    }

    /// Runs one chunk of rows.
    private func run(
        start: Int, rows: Int, batch: [FeatureArray?], options: PredictOptions, scratch: Scratch, outputs: OutputBuffers, threads: Int,
        rank: RankRequest?, items: UnsafeMutablePointer<Float>?
    ) throws(PredictError) {
        let arena = scratch.memory
        func pointer(_ view: View) -> UnsafeMutablePointer<Float> {
            arena + rows * bufferOffsets[view.buffer] + view.column
        }
        func ld(_ view: View) -> Int { bufferWidths[view.buffer] }
        // A multiply's bfloat16 input (`GemmStep.inputBF16Origin`) and its row stride in values.
        func input16(_ step: GemmStep) -> (pointer: UnsafePointer<UInt16>?, ld: Int) {
            guard let origin = step.inputBF16Origin else { return (nil, 0) }
            let start = UnsafeRawPointer(arena + rows * bufferOffsets[step.input.buffer] + origin)
            return (start.assumingMemoryBound(to: UInt16.self) + (step.input.column - origin), 2 * ld(step.input))
        }

        if let rank, let items {
            try assembleInput(
                start: start, rows: rows, batch: batch, options: options, into: items, ld: rank.plan.itemWidth, rowScratch: scratch.extra,
                selection: rank.plan.itemSelection, unknown: outputs)
        } else {
            try assembleInput(
                start: start, rows: rows, batch: batch, options: options, into: pointer(inputView), ld: ld(inputView),
                rowScratch: scratch.extra, unknown: outputs)
        }

        var skipUntil = 0
        for index in steps.indices {
            if index < skipUntil { continue }
            if rank == nil, rows < 6, threads > 1, let run = independentRuns[index], run.bytes >= Model.independentRunMinimum {
                // Batch 1: the run's multiplies side by side, member i in share i % parts (each core
                // takes the same share every call: `WorkerPool`).
                var jobs: [(step: GemmStep, a: UInt, lda: Int, a16: UInt, lda16: Int, c: UInt, ldc: Int)] = []
                for member in index..<run.end {
                    guard case .gemm(let gemm) = steps[member] else { continue }
                    let half = input16(gemm)
                    jobs.append(
                        (
                            gemm, UInt(bitPattern: pointer(gemm.input)), ld(gemm.input), UInt(bitPattern: half.pointer), half.ld,
                            UInt(bitPattern: pointer(gemm.output)), ld(gemm.output)
                        ))
                }
                let parts = min(threads, jobs.count)
                let path = kernel
                let members = jobs
                WorkerPool.run(parts: parts) { part in
                    for (position, job) in members.enumerated() where position % parts == part {
                        guard let a = UnsafePointer<Float>(bitPattern: job.a), let c = UnsafeMutablePointer<Float>(bitPattern: job.c)
                        else { continue }
                        Kernels.packedGemm(
                            job.step, rows: rows, a: a, lda: job.lda, a16: UnsafePointer<UInt16>(bitPattern: job.a16), lda16: job.lda16,
                            c: c, ldc: job.ldc, threads: 1, path: path)
                    }
                }
                skipUntil = run.end
                continue
            }
            if let rank, let items, let replacement = rank.steps[index] {
                // W_item X_items + (W_user x_user + b), the user part computed once per request.
                Kernels.packedGemm(
                    replacement, rows: rows, a: items, lda: rank.plan.itemWidth, c: pointer(replacement.output),
                    ldc: ld(replacement.output),
                    threads: threads, path: kernel)
                continue
            }
            switch steps[index] {
            case .gemm(let step):
                if step.packed.isEmpty {
                    step.weight.withUnsafeBufferPointer { w in
                        guard let wBase = w.baseAddress else { return }
                        Kernels.gemm(
                            rows: rows, a: pointer(step.input), lda: ld(step.input), k: step.input.width, w: wBase, n: step.output.width,
                            c: pointer(step.output), ldc: ld(step.output))
                    }
                } else {
                    let half = input16(step)
                    Kernels.packedGemm(
                        step, rows: rows, a: pointer(step.input), lda: ld(step.input), a16: half.pointer, lda16: half.ld,
                        c: pointer(step.output), ldc: ld(step.output), threads: threads, path: kernel)
                }
            case .pointwise(let view, let ops):
                Kernels.pointwise(ops, base: pointer(view), rows: rows, width: view.width, ld: ld(view), threads: threads)
            case .copy(let from, let to):
                let source = pointer(from)
                let destination = pointer(to)
                for r in 0..<rows { (destination + r * ld(to)).update(from: source + r * ld(from), count: from.width) }
            case .softmax(let view):
                Kernels.softmax(base: pointer(view), rows: rows, width: view.width, ld: ld(view), threads: threads)
            case .attention(let first, let second, let stride, let width, let output):
                Kernels.attention(
                    first: pointer(first), firstLD: ld(first), second: pointer(second), secondLD: ld(second), stride: stride, width: width,
                    output: pointer(output), outputLD: ld(output), rows: rows)
            case .mix(let gate, let experts, let output):
                let g = UInt(bitPattern: pointer(gate))
                let gateLD = ld(gate)
                let out = UInt(bitPattern: pointer(output))
                let outLD = ld(output)
                let width = output.width
                let addresses = experts.map { UInt(bitPattern: pointer($0)) }
                let lds = experts.map { ld($0) }
                Kernels.parallelRows(rows, work: rows * width * experts.count * 2, threads: threads) { range in
                    guard let g = UnsafePointer<Float>(bitPattern: g), let out = UnsafeMutablePointer<Float>(bitPattern: out) else {
                        return
                    }
                    let first = range.lowerBound
                    let starts = zip(addresses, lds).map { address, sourceLD in
                        UnsafePointer<Float>(bitPattern: address).map { $0 + first * sourceLD }
                    }
                    starts.withUnsafeBufferPointer { starts in
                        lds.withUnsafeBufferPointer { lds in
                            mmoe_mix_rows(
                                Int32(range.count), Int32(width), g + first * gateLD, Int32(gateLD), Int32(starts.count),
                                starts.baseAddress, lds.baseAddress, out + first * outLD, Int32(outLD))
                        }
                    }
                }
            }
        }
        for (t, head) in heads.enumerated() {
            let base = pointer(head.view)
            let headLD = ld(head.view)
            let out = outputs.heads[t]
            if head.kind == .softmax {
                let width = head.width
                for r in 0..<rows {
                    let row = base + r * headLD
                    let target = out + (start + r) * width
                    target.update(from: row, count: width)
                    Kernels.softmax(base: target, rows: 1, width: width, ld: width)
                }
                continue
            }
            do {
                for r in 0..<rows {
                    let row = base + r * headLD
                    let value: Float
                    switch head.kind {
                    case .sigmoid: value = Kernels.sigmoid(row[0] + head.bias)
                    case .identity: value = row[0] + head.bias
                    case .softmax2: value = Kernels.sigmoid(row[1] - row[0])
                    case .softmax: value = .nan  // written above
                    }
                    out[start + r] = value
                }
            }
        }
        for (g, gate) in gatePlans.enumerated() where g < outputs.gates.count {
            let base = pointer(gate.view)
            let gateLD = ld(gate.view)
            let width = gate.view.width
            do {
                let out = outputs.gates[g]
                for r in 0..<rows {
                    for e in 0..<width { out[(start + r) * width + e] = base[r * gateLD + e] }
                }
            }
        }
    }

    /// Writes the concatenated input of rows `start ..< start + rows`.
    /// `selection` (input plan index, column) writes only those features at those columns.
    func assembleInput(
        start: Int, rows: Int, batch: [FeatureArray?], options: PredictOptions, into base: UnsafeMutablePointer<Float>, ld: Int,
        rowScratch: UnsafeMutablePointer<Float>, selection: [(index: Int, column: Int)]? = nil, unknown: OutputBuffers? = nil
    ) throws(PredictError) {
        for (index, column) in selection ?? fullSelection {
            let plan = inputs[index]
            guard var array = batch[index] else { throw .missingFeature(plan.feature.name) }
            let feature = plan.feature
            var chunkStart = start
            if case .strings(let raw) = array.values, let rule = feature.vocabulary {
                // Raw values of these rows to ids; the empty string is a sequence's padding.
                let per = feature.kind == .sequence ? array.shape[1] : 1
                var ids = [Int64](repeating: 0, count: rows * per)
                var misses = 0
                for i in 0..<(rows * per) {
                    let value = raw[start * per + i]
                    if feature.kind == .sequence, value.isEmpty {
                        ids[i] = Int64(feature.paddingID ?? rule.oovID)
                    } else if let id = plan.id(of: value) {
                        ids[i] = Int64(id)
                    } else {
                        ids[i] = Int64(rule.oovID)
                        misses += 1
                    }
                }
                if misses > 0 { unknown?.countUnknown(feature.name, misses) }
                array = FeatureArray(values: .int64(ids), shape: [rows] + array.shape.dropFirst())
                chunkStart = 0
            }
            let start = chunkStart
            switch array.values {
            case .float32(let values):
                let width = plan.width
                let scaler = feature.scaler
                for r in 0..<rows {
                    let destination = base + r * ld + column
                    for c in 0..<width {
                        var v = values[(start + r) * width + c]
                        if options.nonFinite == .reject, !v.isFinite {
                            throw .nonFiniteInput(feature: feature.name, row: start + r, column: c)
                        }
                        if let scaler {
                            let k = scaler.shift.count == 1 ? 0 : c
                            v = Float((Double(v) - scaler.shift[k]) / scaler.scale[k])
                        }
                        destination[c] = v
                    }
                }
            case .strings:
                throw .wrongDType(feature: feature.name, expected: "int64", actual: "string")
            case .int64(let ids):
                guard let tableIndex = plan.table else { continue }
                let table = tables[tableIndex]
                func resolve(_ id: Int64, row: Int, position: Int?) throws(PredictError) -> Int {
                    if id >= 0, id < Int64(table.vocabSize) { return Int(id) }
                    if case .useRow(let fallback) = options.unknownIDs { return fallback }
                    throw .idOutOfRange(feature: feature.name, row: row, position: position, id: id, vocabSize: table.vocabSize)
                }
                // Rows are fetched a few lookups ahead: the tables are larger than the caches
                // and each lookup would otherwise wait for memory on its own.
                let ahead = 8
                if feature.kind == .sparse {
                    for r in 0..<min(ahead, rows) { table.prefetch(row: ids[start + r]) }
                    for r in 0..<rows {
                        if r + ahead < rows { table.prefetch(row: ids[start + r + ahead]) }
                        let id = try resolve(ids[start + r], row: start + r, position: nil)
                        table.read(row: id, into: base + r * ld + column, accumulate: false)
                    }
                    continue
                }
                let length = array.shape[1]
                let padding = feature.paddingID.map { Int64($0) }
                let pooling = feature.pooling ?? .sum
                let dim = table.dim
                for r in 0..<rows {
                    if r + 1 < rows {
                        for p in 0..<length { table.prefetch(row: ids[(start + r + 1) * length + p]) }
                    }
                    let destination = base + r * ld + column
                    var count = 0
                    for p in 0..<length {
                        let raw = ids[(start + r) * length + p]
                        if let padding, raw == padding { continue }
                        let id = try resolve(raw, row: start + r, position: p)
                        switch pooling {
                        case .sum, .mean:
                            table.read(row: id, into: destination, accumulate: count > 0)
                        case .max:
                            if count == 0 {
                                table.read(row: id, into: destination, accumulate: false)
                            } else {
                                table.maxRow(id, into: destination, scratch: rowScratch)
                            }
                        }
                        count += 1
                    }
                    if count == 0 {
                        let empty = pooling == .max ? Float(feature.emptyMaxValue ?? 0) : 0
                        destination.update(repeating: empty, count: dim)
                    } else if pooling == .mean {
                        let divisor = Float(Double(count) + (feature.meanEpsilon ?? 0))
                        for c in 0..<dim { destination[c] /= divisor }
                    }
                }
            }
        }
    }
}

/// The output memory of one `predict` call, written by disjoint row ranges from any thread.
final class OutputBuffers: @unchecked Sendable {
    let heads: [UnsafeMutablePointer<Float>]
    let gates: [UnsafeMutablePointer<Float>]
    let gateWidths: [Int]

    init(rows: Int, headWidths: [Int], gateWidths: [Int]) {
        heads = headWidths.map { width in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * width, 1))
            p.initialize(repeating: 0, count: max(rows * width, 1))
            return p
        }
        gates = gateWidths.map { width in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(rows * width, 1))
            p.initialize(repeating: 0, count: max(rows * width, 1))
            return p
        }
        self.gateWidths = gateWidths
    }

    /// Raw values not in their vocabulary, per feature (any thread).
    let unknown = Locked<[String: Int]>([:])

    func countUnknown(_ feature: String, _ count: Int) { unknown.withLock { $0[feature, default: 0] += count } }

    deinit {
        for p in heads { p.deallocate() }
        for p in gates { p.deallocate() }
    }
}

/// Reusable scratch memory for one `predict` call at a time.
final class Scratch: @unchecked Sendable {
    private(set) var memory: UnsafeMutablePointer<Float>
    private(set) var capacity: Int
    private(set) var extra: UnsafeMutablePointer<Float>
    private var extraCapacity: Int

    init() {
        memory = alignedFloats(1)
        capacity = 1
        extra = .allocate(capacity: 1)
        extraCapacity = 1
    }

    func reserve(floats: Int, extra extraFloats: Int) {
        if floats > capacity {
            memory.deallocate()
            memory = alignedFloats(floats)
            capacity = floats
        }
        if extraFloats > extraCapacity {
            extra.deallocate()
            extra = .allocate(capacity: extraFloats)
            extraCapacity = extraFloats
        }
    }

    deinit {
        memory.deallocate()
        extra.deallocate()
    }
}

/// A lock-protected stack of scratch areas; a call takes one and puts it back, so steady
/// state allocates nothing and concurrent calls never share one.
final class ScratchPool: Sendable {
    private let free = Locked<[Scratch]>([])

    func acquire(floats: Int, extra: Int) -> Scratch {
        let scratch = free.withLock { $0.popLast() } ?? Scratch()
        scratch.reserve(floats: floats, extra: extra)
        return scratch
    }

    func release(_ scratch: Scratch) {
        free.withLock { $0.append(scratch) }
    }
}
