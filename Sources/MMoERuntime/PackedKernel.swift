import CMMoEKernels
import Foundation

/// The AVX2/FMA matrix-multiply kernel with weights packed at load time (x86-64 only; the
/// runtime falls back to BLAS elsewhere or when `MMOE_KERNEL=blas` is set).
enum PackedKernel {
    /// Whether this process uses the packed kernel.
    static let isAvailable: Bool = {
        if let choice = getenv("MMOE_KERNEL").map({ String(cString: $0) }), choice == "blas" { return false }
        return mmoe_kernels_available() != 0
    }()

    /// Packs linear weights `[out, in]` that together form the `outputs` columns of one
    /// multiply (each piece starting at a multiple of 16) into the kernel's 16-column panels,
    /// straight into the final buffer.
    static func pack(pieces: [(column: Int, outputs: Int, weight: [Float])], outputs: Int, inputs: Int) -> [Float] {
        let size = max(mmoe_packed_size(Int32(inputs), Int32(outputs)), 1)
        var packed = [Float](repeating: 0, count: size)
        packed.withUnsafeMutableBufferPointer { destination in
            guard let d = destination.baseAddress else { return }
            for piece in pieces {
                piece.weight.withUnsafeBufferPointer { source in
                    // Panels of 16 columns, each `inputs` rows deep: the piece's first panel.
                    if let s = source.baseAddress { mmoe_pack_bt(s, Int32(inputs), Int32(piece.outputs), d + piece.column * inputs) }
                }
            }
        }
        return packed
    }
}
