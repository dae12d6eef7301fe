import Foundation
import MMoECore
import MMoETestSupport
import Synchronization
import Testing

@testable import MMoERuntime

/// The runtime's own threads (`WorkerPool`) and the alignment of the packed weights they read.
@Suite("Worker pool and packed weight alignment")
struct WorkerPoolTests {
    /// Runs one parallel section and returns how many times each share ran (up to 9 shares;
    /// counted 7 bits a share in one atomic word).
    static func section(parts: Int, work: Int = 0) -> [Int] {
        let counts = Atomic<UInt64>(0)
        WorkerPool.run(parts: parts) { share in
            var sum = 0
            for i in 0..<work { sum &+= i &* share }
            counts.add(sum == -1 ? 0 : 1 << UInt64(7 * share), ordering: .relaxed)
        }
        let word = counts.load(ordering: .relaxed)
        return (0..<parts).map { Int((word >> UInt64(7 * $0)) & 127) }
    }

    @Test("every share of a section runs exactly once, for 0 to 9 shares, section after section")
    func everyShareOnce() {
        #expect(Self.section(parts: 0).isEmpty)
        for round in 0..<300 {
            let parts = 1 + round % 9
            let counts = Self.section(parts: parts, work: round % 3 == 0 ? 20_000 : 0)
            #expect(counts == [Int](repeating: 1, count: parts), "round \(round), \(parts) shares")
        }
    }

    @Test("sections after the workers have gone to sleep still run every share once")
    func afterSleep() {
        for pause in [0, 2, 20] {
            #expect(Self.section(parts: 2) == [1, 1])
            usleep(useconds_t(pause * 1_000))
            #expect(Self.section(parts: 2) == [1, 1], "after \(pause) ms idle")
            #expect(Self.section(parts: 3, work: 50_000) == [1, 1, 1], "after \(pause) ms idle")
        }
    }

    @Test("sections started from several threads at once (the workers busy with another caller's)")
    func concurrentCallers() async {
        let results = await withTaskGroup(of: [[Int]].self) { group in
            for caller in 0..<6 {
                group.addTask {
                    (0..<100).map { round in Self.section(parts: 2 + (caller + round) % 3, work: round % 2 == 0 ? 5_000 : 0) }
                }
            }
            var all: [[[Int]]] = []
            for await result in group { all.append(result) }
            return all
        }
        #expect(results.count == 6)
        for sections in results {
            for counts in sections { #expect(counts.allSatisfy { $0 == 1 }, "\(counts)") }
        }
    }

    @Test("packed weights and activation rows start on 64-byte boundaries (one cache line per panel row): float32, bf16 panels, bf16 pairs")
    func alignment() throws {
        let spec = ModelSpec(
            name: "aligned", tables: [], features: [.dense("x", width: 45)],
            architecture: Architecture(
                type: .mmoe,
                experts: (0..<3).map { _ in MLP(layers: [.linear(units: 37, bias: true), .relu, .linear(units: 21, bias: true), .relu]) },
                gates: [MLP(layers: [.linear(units: 3, bias: true)])],
                towers: [MLP(layers: [.linear(units: 9, bias: true), .relu, .linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y", head: .identity)])
        let tensors = try randomTensors(for: spec, seed: 3)
        let bf16 = try withBF16Weights(tensors)
        var checked = 0
        for path in KernelPath.allCases where path.isPacked && path.runsHere {
            for store in [tensors, bf16] {
                let model = try Model(spec: spec, tensors: store, kernel: path)
                // Activation buffers: each starts on 16 floats per row; rows of wide ones 16 floats apart.
                #expect(model.bufferOffsets.allSatisfy { $0 % 16 == 0 }, "\(model.bufferOffsets)")
                #expect(model.bufferWidths.allSatisfy { $0 < 16 || $0 % 16 == 0 }, "\(model.bufferWidths)")
                #expect(model.bufferWidths.contains(48), "the 45-wide input is padded to 48 floats a row")
                for case .gemm(let step) in model.steps {
                    #expect(!step.packed.isEmpty)
                    let address = step.packed.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
                    #expect(address != 0 && address % 64 == 0, "\(path): packed weights at \(address)")
                    checked += 1
                }
            }
        }
        for floats in [1, 17, 1_000, 300_000] {
            let memory = alignedFloats(floats)
            #expect(UInt(bitPattern: memory) % 64 == 0)
            memory.deallocate()
        }
        // The packed paths run on x86-64 only; elsewhere nothing is packed.
        #expect(checked > 0 || !KernelPath.avx2.isSupported)
    }
}
