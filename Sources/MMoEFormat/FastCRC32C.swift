import CMMoEKernels
import MMoECore

/// CRC-32C with the CPU's crc32 instruction when it has one (SSE4.2), for checksumming
/// gigabytes of tensor data; the same values as `MMoECore.CRC32C`.
package enum FastCRC32C {
    /// The checksum of a buffer.
    package static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress else { return 0 }
        return mmoe_crc32c_update(0xFFFF_FFFF, base, bytes.count) ^ 0xFFFF_FFFF
    }
}
