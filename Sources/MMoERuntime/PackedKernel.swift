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

    /// Packs a linear's `[out, in]` weight into the kernel's 16-output panels.
    static func pack(weight: [Float], outputs: Int, inputs: Int) -> [Float] {
        let size = mmoe_packed_size(Int32(inputs), Int32(outputs))
        return [Float](unsafeUninitializedCapacity: max(size, 1)) { buffer, count in
            weight.withUnsafeBufferPointer { source in
                if let s = source.baseAddress, let d = buffer.baseAddress { mmoe_pack_bt(s, Int32(inputs), Int32(outputs), d) }
            }
            count = max(size, 1)
        }
    }
}
