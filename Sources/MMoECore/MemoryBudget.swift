#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import Synchronization

/// What one allocation sized by a file may take: checked before the allocation is made, so a
/// file that declares (or expands to) more than the process can get is refused with a typed
/// error instead of killing the process.
///
/// The budget is the smallest of: `MMOE_MAX_MEMORY` (bytes, with an optional K/M/G suffix)
/// when set; the address space left under the process's `RLIMIT_AS` (`ulimit -v`,
/// `prlimit --as`); and the memory the system reports available (`MemAvailable`).
public enum MemoryBudget {
    /// The environment variable that lowers (or, above the machine's limits, cannot raise) the budget.
    public static let variable = "MMOE_MAX_MEMORY"

    /// Bytes an allocation may take now, or nil when nothing bounds it.
    public static func available() -> Int? {
        var budget: Int? = nil
        func lower(_ value: Int?) {
            guard let value else { return }
            budget = min(budget ?? value, max(value, 0))
        }
        lower(configured())
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max, let used = addressSpaceInUse() {
            lower(Int(clamping: limit.rlim_cur) - used)
        }
        lower(memAvailable())
        return budget
    }

    /// The budget `MMOE_MAX_MEMORY` sets, if any.
    public static func configured() -> Int? {
        guard let raw = getenv(variable) else { return nil }
        var text = String(cString: raw).trimmingCharacters(in: " ")
        var factor = 1
        if let last = text.last?.uppercased() {
            switch last {
            case "K": factor = 1 << 10
            case "M": factor = 1 << 20
            case "G": factor = 1 << 30
            default: break
            }
            if factor > 1 { text.removeLast() }
        }
        guard let value = Int(text), value >= 0 else { return nil }
        return value.multipliedReportingOverflow(by: factor).overflow ? Int.max : value * factor
    }

    /// nil when `bytes` fits the budget, else the reason to print (the budget and how to raise it).
    public static func refusal(_ bytes: Int, for what: String) -> String? {
        guard let budget = available(), bytes > budget else { return nil }
        return
            "\(what) needs \(bytes) bytes, more than the \(budget) bytes this process may allocate (the smallest of \(variable), "
            + "the address-space limit and the memory available); raise the limit or free memory"
    }

    /// Bytes of address space the process maps now (`/proc/self/statm`), where readable.
    static func addressSpaceInUse() -> Int? {
        guard let text = readSmallFile("/proc/self/statm"), let pages = text.split(separator: " ").first.flatMap({ Int($0) }) else {
            return nil
        }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// `MemAvailable` of `/proc/meminfo`, where readable; read again when the last reading is
    /// more than `readingLifetime` old (a model load checks hundreds of allocations, and
    /// parsing the file each time was a quarter of the time to open a small model).
    static func memAvailable() -> Int? {
        let now = monotonicNanoseconds()
        if let cached = lastReading.withLock({ $0 }), now &- cached.time < readingLifetime { return cached.value }
        let value = readMemAvailable()
        lastReading.withLock { $0 = (now, value) }
        return value
    }

    /// Nanoseconds a `MemAvailable` reading is reused for.
    static let readingLifetime: UInt64 = 20_000_000

    private static let lastReading = Mutex<(time: UInt64, value: Int?)?>(nil)

    /// The `MemAvailable:` line's value in bytes (kB in the file).
    static func readMemAvailable() -> Int? {
        guard let text = readSmallFile("/proc/meminfo") else { return nil }
        guard let start = text.utf8.firstRange(of: "MemAvailable:".utf8) else { return nil }
        var kib = 0
        var digits = 0
        for byte in text.utf8[start.upperBound...] {
            if byte == UInt8(ascii: " ") && digits == 0 { continue }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { break }
            let (product, overflow) = kib.multipliedReportingOverflow(by: 10)
            guard !overflow else { return nil }
            kib = product + Int(byte - UInt8(ascii: "0"))
            digits += 1
        }
        guard digits > 0 else { return nil }
        return kib.multipliedReportingOverflow(by: 1024).overflow ? Int.max : kib * 1024
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16384)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return String(decoding: buffer.prefix(count), as: UTF8.self)
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var result = Substring(self)
        while result.first == set { result.removeFirst() }
        while result.last == set { result.removeLast() }
        return String(result)
    }
}
