/// The constants and arithmetic of the `.mmoe` layout (see `Docs/FORMAT.md`).
public enum ModelFileLayout {
    /// `\x89 M M O E \r \n \x1a`.
    public static let magic: [UInt8] = [0x89, 0x4D, 0x4D, 0x4F, 0x45, 0x0D, 0x0A, 0x1A]
    /// Major version written and read.
    public static let major: UInt16 = 1
    /// Minor version written.
    public static let minor: UInt16 = 0
    /// Size of the fixed preamble.
    public static let preambleSize = 64
    /// Required flags this reader understands (none are defined in 1.0).
    public static let knownRequiredFlags: UInt32 = 0
    /// Default alignment of tensor data.
    public static let alignment = 64
    /// Alignment of tensors of at least `largeTensorBytes` bytes (a page, for zero-copy mapping).
    public static let pageAlignment = 4096
    /// Size from which a tensor is page-aligned.
    public static let largeTensorBytes = 1 << 20
    /// Largest accepted spec JSON.
    public static let maxSpecBytes = 64 << 20
    /// Most tensors in one file.
    public static let maxTensors = 1 << 20
    /// Largest rank.
    public static let maxRank = 8

    /// The alignment of a tensor of `length` bytes.
    public static func alignment(forLength length: Int) -> Int {
        length >= largeTensorBytes ? pageAlignment : alignment
    }

    /// `value` rounded up to a multiple of `alignment`, or nil on overflow.
    public static func alignUp(_ value: Int, _ alignment: Int) -> Int? {
        let (sum, overflow) = value.addingReportingOverflow(alignment - 1)
        return overflow ? nil : sum / alignment * alignment
    }
}
