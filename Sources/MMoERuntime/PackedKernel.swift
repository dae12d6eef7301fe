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

    /// Packs a row-major `[rows, columns]` matrix into the kernel's 16-column panels.
    static func pack(_ matrix: [Float], rows: Int, columns: Int) -> [Float] {
        let size = mmoe_packed_size(Int32(rows), Int32(columns))
        var packed = [Float](repeating: 0, count: max(size, 1))
        matrix.withUnsafeBufferPointer { source in
            packed.withUnsafeMutableBufferPointer { destination in
                if let s = source.baseAddress, let d = destination.baseAddress { mmoe_pack_b(s, Int32(rows), Int32(columns), d) }
            }
        }
        return packed
    }
}
