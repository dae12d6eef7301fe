import Foundation
import Testing

@testable import MMoECore

@Suite("Memory budget")
struct MemoryBudgetTests {
    /// MemAvailable as a plain line-by-line reading of /proc/meminfo gives it.
    static func linesReading() throws -> Int {
        let text = try String(contentsOfFile: "/proc/meminfo", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("MemAvailable:") })
        let fields = line.split(separator: " ")
        return try #require(Int(fields[1])) * 1024
    }

    @Test("MemAvailable is read from /proc/meminfo as the file says, and a reading is reused only briefly")
    func memAvailable() throws {
        let direct = try #require(MemoryBudget.readMemAvailable())
        let plain = try Self.linesReading()
        // Two readings moments apart: the system's free memory moves a little in between.
        #expect(abs(direct - plain) < 256 << 20, "scan \(direct) vs lines \(plain)")
        #expect(direct > 0)
        let cached = try #require(MemoryBudget.memAvailable())
        #expect(abs(cached - plain) < 256 << 20)
        #expect(MemoryBudget.readingLifetime <= 100_000_000, "a reading is reused for at most 0.1 s")
        let budget = try #require(MemoryBudget.available())
        #expect(budget <= cached)
    }
}
