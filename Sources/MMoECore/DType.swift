/// The element types a model file can hold.
///
/// `f32`, `f16` and `bf16` hold weights and embedding tables; `i8` holds the rows of a
/// row-wise quantized embedding table (its per-row `f32` scales live in a sibling tensor).
public enum DType: String, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// IEEE 754 binary32, little-endian.
    case f32
    /// IEEE 754 binary16, little-endian.
    case f16
    /// bfloat16 (the upper half of a binary32), little-endian.
    case bf16
    /// Signed 8-bit integer (quantized embedding rows).
    case i8

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .i8: 1
        }
    }

    /// Whether the type holds floating-point values directly (not quantized codes).
    public var isFloatingPoint: Bool { self != .i8 }

    /// The stable one-byte code used by the native format.
    public var code: UInt8 {
        switch self {
        case .f32: 1
        case .f16: 2
        case .bf16: 3
        case .i8: 4
        }
    }

    /// The type for a native-format code, or nil for an unknown code.
    public init?(code: UInt8) {
        guard let match = DType.allCases.first(where: { $0.code == code }) else { return nil }
        self = match
    }

    public var description: String { rawValue }
}

/// Conversions between `Float` and the 16-bit formats, done on bit patterns so they behave
/// the same on every platform (round to nearest, ties to even; NaN stays NaN).
public enum HalfPrecision {
    /// Decodes an IEEE binary16 bit pattern.
    @inlinable
    public static func float(fromHalf bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = Int((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x3FF)
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }
            // Subnormal: value = mantissa * 2^-24.
            let magnitude = Float(mantissa) * Float(bitPattern: 0x3380_0000)
            return sign != 0 ? -magnitude : magnitude
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        return Float(bitPattern: sign | UInt32(exponent + 112) << 23 | (mantissa << 13))
    }

    /// Encodes a Float as IEEE binary16 (round to nearest even, overflow to infinity).
    @inlinable
    public static func half(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        var mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF {
            return sign | 0x7C00 | (mantissa != 0 ? 0x200 | UInt16(mantissa >> 13) : 0)
        }
        let unbiased = exponent - 127
        if unbiased > 15 { return sign | 0x7C00 }
        if unbiased >= -14 {
            var halfExponent = UInt32(unbiased + 15)
            var halfMantissa = mantissa >> 13
            let rest = mantissa & 0x1FFF
            if rest > 0x1000 || (rest == 0x1000 && (halfMantissa & 1) == 1) {
                halfMantissa += 1
                if halfMantissa == 0x400 {
                    halfMantissa = 0
                    halfExponent += 1
                    if halfExponent >= 0x1F { return sign | 0x7C00 }
                }
            }
            return sign | UInt16(halfExponent << 10) | UInt16(halfMantissa)
        }
        if unbiased < -25 { return sign }
        // Subnormal result: shift the full significand.
        mantissa |= 0x80_0000
        let shift = UInt32(-unbiased - 14 + 13)
        var result = mantissa >> shift
        let remainder = mantissa & ((1 << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if remainder > halfway || (remainder == halfway && (result & 1) == 1) { result += 1 }
        return sign | UInt16(result)
    }

    /// Decodes a bfloat16 bit pattern.
    @inlinable
    public static func float(fromBFloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// Encodes a Float as bfloat16 (round to nearest even; NaN stays a quiet NaN).
    @inlinable
    public static func bfloat16(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}
