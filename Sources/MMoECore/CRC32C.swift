/// CRC-32C (Castagnoli), the checksum of the native format and of TensorFlow checkpoints.
///
/// Slicing-by-8 in pure Swift: no C dependency, the same result on every platform.
public struct CRC32C: Sendable {
    @usableFromInline static let tables: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for i in 0..<256 {
            var crc = UInt32(i)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            tables[0][i] = crc
        }
        for i in 0..<256 {
            for t in 1..<8 {
                let previous = tables[t - 1][i]
                tables[t][i] = (previous >> 8) ^ tables[0][Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    private var state: UInt32 = 0xFFFF_FFFF

    /// A checksum over no bytes yet.
    public init() {}

    /// Feeds `count` bytes starting at `bytes`.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        let flat = CRC32C.tables
        var crc = state
        flat[0].withUnsafeBufferPointer { t0 in
            flat[1].withUnsafeBufferPointer { t1 in
                flat[2].withUnsafeBufferPointer { t2 in
                    flat[3].withUnsafeBufferPointer { t3 in
                        flat[4].withUnsafeBufferPointer { t4 in
                            flat[5].withUnsafeBufferPointer { t5 in
                                flat[6].withUnsafeBufferPointer { t6 in
                                    flat[7].withUnsafeBufferPointer { t7 in
                                        var index = 0
                                        let count = bytes.count
                                        while count - index >= 8 {
                                            let lo =
                                                UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                                                | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24
                                            let x = crc ^ lo
                                            crc =
                                                t7[Int(x & 0xFF)] ^ t6[Int((x >> 8) & 0xFF)] ^ t5[Int((x >> 16) & 0xFF)]
                                                ^ t4[Int(x >> 24)] ^ t3[Int(bytes[index + 4])] ^ t2[Int(bytes[index + 5])]
                                                ^ t1[Int(bytes[index + 6])] ^ t0[Int(bytes[index + 7])]
                                            index += 8
                                        }
                                        while index < count {
                                            crc = t0[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                                            index += 1
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        state = crc
    }

    /// The checksum of everything fed so far.
    public var value: UInt32 { state ^ 0xFFFF_FFFF }

    /// The checksum of one buffer.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    /// The checksum of a byte array.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}
