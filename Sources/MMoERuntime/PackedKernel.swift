import CMMoEKernels
import MMoECore
import Foundation

/// The matrix-multiply paths a model can run on. The packed paths share one weight layout
/// (16-column panels packed at load time) and differ in their inner kernel.
public enum KernelPath: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The portable fallback: OpenBLAS (one BLAS call per layer, no packing of our own).
    case blas
    /// The packed 6 x 16 AVX2/FMA kernel.
    case avx2
    /// The packed 12 x 32 AVX-512F kernel (1 x 16 rows for batch 1).
    case avx512
    /// The AVX-512 kernel, and bfloat16 products with float32 accumulation for layers whose
    /// weights are stored as bfloat16 (`convert --dtype bf16`): AMX-BF16 tiles for 16 rows and
    /// more where the CPU has them, AVX512-BF16 otherwise. Models with float32 weights run
    /// exactly as on `avx512`.
    case avx512bf16

    public var description: String { rawValue }

    /// Whether this CPU can run the path.
    public var isSupported: Bool {
        switch self {
        case .blas: true
        case .avx2: mmoe_kernels_available() != 0
        case .avx512: mmoe_kernels_available() != 0 && mmoe_avx512_supported() != 0
        case .avx512bf16: KernelPath.avx512.isSupported && mmoe_bf16_compute_support() & 1 != 0
        }
    }

    /// Whether the path uses the packed weight layout.
    var isPacked: Bool { self != .blas }

    /// The fastest path this CPU supports.
    /// `avx512bf16` only where AMX tiles are available: measured on an Intel Xeon with AMX,
    /// VDPBF16PS alone was slower than the float32 AVX-512 kernel over bf16 panels at batch 256
    /// and above (Docs/PERFORMANCE.md); elsewhere choose it with `MMOE_KERNEL=avx512bf16`.
    public static var best: KernelPath {
        if KernelPath.avx512bf16.isSupported, hasAMX { return .avx512bf16 }
        return [.avx512, .avx2].first { $0.isSupported } ?? .blas
    }

    /// Whether this CPU multiplies bfloat16 on AMX tiles on the `avx512bf16` path (batches of
    /// 16 rows and more; `MMOE_NO_AMX` turns it off).
    public static var hasAMX: Bool { mmoe_bf16_compute_support() & 2 != 0 }

    /// The path an `MMOE_KERNEL` value names: a path's name, or `bf16` (bfloat16 products on
    /// AVX512-BF16 only: the C side then leaves AMX off) or `amx` (bfloat16 products on AMX
    /// tiles), both `avx512bf16`; nil for anything else.
    public static func named(_ value: String) -> KernelPath? {
        switch value.lowercased() {
        case "bf16", "amx": .avx512bf16
        default: KernelPath(rawValue: value.lowercased())
        }
    }

    /// The process default: `MMOE_KERNEL=blas|avx2|avx512|avx512bf16|bf16|amx` when set and
    /// supported, else the fastest path the CPU supports (an unsupported or unknown choice says
    /// so on stderr once).
    public static let processDefault: KernelPath = {
        guard let value = getenv("MMOE_KERNEL").map({ String(cString: $0) }), !value.isEmpty else { return best }
        guard let path = named(value) else {
            FileHandle.standardError.write(
                Data("swift-mmoe: MMOE_KERNEL=\(value) is not one of blas, avx2, avx512, avx512bf16, bf16, amx; using \(best)\n".utf8))
            return best
        }
        guard path.isSupported, value.lowercased() != "amx" || hasAMX else {
            FileHandle.standardError.write(Data("swift-mmoe: MMOE_KERNEL=\(value) is not supported by this CPU; using \(best)\n".utf8))
            return best
        }
        return path
    }()
}

/// The packed matrix-multiply kernels with weights packed at load time (x86-64 only; the
/// runtime falls back to BLAS elsewhere or when `MMOE_KERNEL=blas` is set).
enum PackedKernel {
    /// Bytes of float32 panels from which a multiply's weights are packed by all the threads
    /// (`ComputeThreads.current`) at load.
    static let parallelPackMinimum = 512 * 1024

    /// Packs linear weights `[out, in]` that together form the `outputs` columns of one
    /// multiply (each piece starting at a multiple of 16) into the kernel's 16-column panels,
    /// straight into the final buffer: f32 tensors are read where they lie (the mapped file),
    /// a folded batch norm is applied on the way, infinities and NaNs are refused.
    ///
    /// Weights stored as bfloat16 (and not scaled by a folded batch norm) stay bfloat16 in the
    /// panels — half the bytes for the kernel to stream, widened exactly as it reads them —
    /// when every piece of the multiply is such a weight; the Bool says so.
    static func pack(pieces: [(column: Int, outputs: Int, weight: DenseWeight)], outputs: Int, inputs: Int) throws(ModelError) -> (
        PackedWeights, Bool
    ) {
        if !pieces.isEmpty, pieces.allSatisfy({ $0.weight.tensor.dtype == .bf16 && $0.weight.rowScales.isEmpty }) {
            return (try packBF16(pieces: pieces, outputs: outputs, inputs: inputs), true)
        }
        return (try packFloat(pieces: pieces, outputs: outputs, inputs: inputs), false)
    }

    /// Weights in pairs along k for bfloat16 products (two bfloat16 to a Float of the returned
    /// array): bf16 tensors as stored, a folded batch norm applied first and rounded.
    static func packVNNI(pieces: [(column: Int, outputs: Int, weight: DenseWeight)], outputs: Int, inputs: Int) throws(ModelError)
        -> PackedWeights
    {
        let kpad = (inputs + 31) / 32 * 32
        let halves = mmoe_vnni_size(Int32(inputs), Int32(outputs))
        let packed = PackedWeights(zeros: max((halves + 1) / 2, 1))
        var failure: ModelError?
        for piece in pieces where failure == nil {
            let weight = piece.weight
            let values: [Float]
            if weight.rowScales.isEmpty {
                values = []
            } else {
                do throws(ModelError) { values = try weight.materialized() } catch {
                    failure = error
                    break
                }
            }
            packed.withUnsafeMutableBytes { raw in
                let destination = raw.bindMemory(to: UInt16.self)
                guard let d = destination.baseAddress else { return }
                let status: Int64
                if values.isEmpty {
                    guard let source = weight.tensor.rawBytes.baseAddress else { return }
                    status = mmoe_pack_vnni(source, 1, Int32(inputs), Int32(piece.outputs), d + piece.column * kpad)
                } else {
                    status = values.withUnsafeBytes { source in
                        guard let base = source.baseAddress else { return -1 }
                        return mmoe_pack_vnni(base, 0, Int32(inputs), Int32(piece.outputs), d + piece.column * kpad)
                    }
                }
                if status >= 0 { failure = .nonFiniteTensor(name: weight.name, index: Int(status)) }
            }
        }
        if let failure { throw failure }
        return packed
    }

    /// bfloat16 panels, two values to a Float of the returned array.
    static func packBF16(pieces: [(column: Int, outputs: Int, weight: DenseWeight)], outputs: Int, inputs: Int) throws(ModelError)
        -> PackedWeights
    {
        let halves = mmoe_packed_size(Int32(inputs), Int32(outputs))
        let packed = PackedWeights(zeros: max((halves + 1) / 2, 1))
        var failure: ModelError?
        packed.withUnsafeMutableBytes { raw in
            let destination = raw.bindMemory(to: UInt16.self)
            guard let d = destination.baseAddress else { return }
            for piece in pieces where failure == nil {
                guard let source = piece.weight.tensor.rawBytes.baseAddress else { continue }
                let status = mmoe_pack_bt_bf16(source, Int32(inputs), Int32(piece.outputs), d + piece.column * inputs)
                if status >= 0 { failure = .nonFiniteTensor(name: piece.weight.name, index: Int(status)) }
            }
        }
        if let failure { throw failure }
        return packed
    }

    /// float32 panels.
    static func packFloat(pieces: [(column: Int, outputs: Int, weight: DenseWeight)], outputs: Int, inputs: Int) throws(ModelError)
        -> PackedWeights
    {
        let size = max(mmoe_packed_size(Int32(inputs), Int32(outputs)), 1)
        // When the pieces' panels tile the buffer, packing writes every float: no zero fill.
        var next = 0
        for piece in pieces.sorted(by: { $0.column < $1.column }) where piece.column == next { next += (piece.outputs + 15) / 16 * 16 }
        let tiled = inputs > 0 && next == (outputs + 15) / 16 * 16
        // Weights that need more than a folded batch norm applied are materialized first.
        var materialized: [[Float]?] = []
        for piece in pieces {
            let weight = piece.weight
            if weight.tensor.dtype == .f32 && weight.rowScales.count <= 1 {
                materialized.append(nil)
            } else {
                materialized.append(try weight.materialized())
            }
        }
        // Each piece in runs of whole panels, one per thread: a large layer (the benchmark
        // model's fused first layer, 1.4 MB) is packed by both cores, which halves most of the
        // time from opening a file to its first prediction that packing takes.
        let bytes = inputs * outputs * MemoryLayout<Float>.stride
        let parts = bytes >= PackedKernel.parallelPackMinimum ? max(1, min(ComputeThreads.current, 8)) : 1
        var runs: [(piece: Int, first: Int, count: Int)] = []
        for (index, piece) in pieces.enumerated() {
            let panels = (piece.outputs + 15) / 16
            let cuts = min(parts, max(panels, 1))
            for part in 0..<cuts {
                let first = panels * part / cuts * 16
                let end = min(piece.outputs, panels * (part + 1) / cuts * 16)
                if end > first { runs.append((index, first, end - first)) }
            }
        }
        // The first non-finite value in piece order (every run reports its own).
        let failures = Locked<[(piece: Int, index: Int)]>([])
        let fill = { (destination: UnsafeMutableBufferPointer<Float>) in
            guard let d = destination.baseAddress else { return }
            let shares = min(parts, runs.count)
            WorkerPool.run(parts: shares) { share in
                for position in stride(from: share, to: runs.count, by: shares) {
                    let run = runs[position]
                    let piece = pieces[run.piece]
                    let weight = piece.weight
                    let scale = materialized[run.piece] == nil ? weight.rowScales.first ?? [] : []
                    let target = d + piece.column * inputs + run.first * inputs
                    let status: Int64 = scale.withUnsafeBufferPointer { factors in
                        // An empty array may still have a base address: no factors means NULL.
                        let rowFactors = factors.isEmpty ? nil : factors.baseAddress.map { $0 + run.first }
                        let pack = { (source: UnsafeRawPointer) in
                            mmoe_pack_bt(
                                source + run.first * inputs * MemoryLayout<Float>.stride, Int32(inputs), Int32(run.count), rowFactors,
                                target)
                        }
                        if let values = materialized[run.piece] {
                            return values.withUnsafeBytes { source in source.baseAddress.map(pack) ?? -1 }
                        }
                        return weight.tensor.rawBytes.baseAddress.map(pack) ?? -1
                    }
                    if status >= 0 { failures.withLock { $0.append((run.piece, run.first * inputs + Int(status))) } }
                }
            }
        }
        let packed: PackedWeights
        if tiled {
            packed = PackedWeights(count: size, fill: fill)
        } else {
            packed = PackedWeights(zeros: size)
            packed.withUnsafeMutableBytes { fill($0.bindMemory(to: Float.self)) }
        }
        if let first = failures.withLock({ $0.min { ($0.piece, $0.index) < ($1.piece, $1.index) } }) {
            throw .nonFiniteTensor(name: pieces[first.piece].weight.name, index: first.index)
        }
        return packed
    }
}

/// `count` uninitialized floats (at least one) on a 64-byte boundary: packed weights and the
/// activation scratch area (see `Model.bufferOffsets`); freed with `deallocate()`.
func alignedFloats(_ count: Int) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.stride, alignment: 64).bindMemory(
        to: Float.self, capacity: max(count, 1))
}

/// Packed weights in 64-byte aligned memory, immutable once packed.
///
/// A panel row of the kernels is 64 bytes (16 float32 values; 32 bfloat16 values for the AMX
/// tiles' pairs): aligned, each load reads one cache line; Swift arrays put their elements 32
/// bytes into a 16-byte aligned block, so every load of a row used to touch two. Measured on the
/// benchmark model's batch-1 multiplies (Intel Xeon, weights in L2): 7.0 µs vs 12.7 µs for half
/// of the 170 × 2,080 first layer.
final class PackedWeights: @unchecked Sendable {
    /// Number of Float slots (bfloat16 panels: two values to a slot).
    let count: Int
    private let base: UnsafeMutablePointer<Float>

    /// No weights (a step that does not use the packed kernels).
    static let empty = PackedWeights(zeros: 0)

    /// `count` slots set to zero.
    convenience init(zeros count: Int) {
        self.init(uninitialized: count)
        base.initialize(repeating: 0, count: count)
    }

    /// `count` slots that `fill` must write, every one of them.
    convenience init<E: Error>(count: Int, fill: (UnsafeMutableBufferPointer<Float>) throws(E) -> Void) throws(E) {
        self.init(uninitialized: count)
        try fill(UnsafeMutableBufferPointer(start: base, count: count))
    }

    private init(uninitialized count: Int) {
        self.count = count
        base = alignedFloats(count)
    }

    deinit { base.deallocate() }

    var isEmpty: Bool { count == 0 }

    func withUnsafeBufferPointer<R, E: Error>(_ body: (UnsafeBufferPointer<Float>) throws(E) -> R) throws(E) -> R {
        try body(UnsafeBufferPointer(start: count == 0 ? nil : UnsafePointer(base), count: count))
    }

    /// Writes to weights not yet shared (packing).
    func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        body(UnsafeMutableRawBufferPointer(start: base, count: count * MemoryLayout<Float>.stride))
    }
}
