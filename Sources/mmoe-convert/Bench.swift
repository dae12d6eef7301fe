import ArgumentParser
import Foundation
import MMoECore
import MMoEImport
import MMoERuntime

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prediction latency and throughput in-process.",
        discussion: """
            Generates random valid inputs for the model, warms up, then times repeated predict
            calls per batch size. --json prints one object per batch size with batch, threads,
            median_latency_s, p90_latency_s and examples_per_s.

            Example:
              mmoe-convert bench model.mmoe --batch 1,256,4096 --threads 2 --json
            """)

    @Argument(help: "A .mmoe or HDF5 model.")
    var model: String

    @Option(name: .long, help: "Comma-separated batch sizes.")
    var batch = "1,256,4096"

    @Option(name: .long, help: "Threads for the matrix multiplies (default: all cores).")
    var threads: Int?

    @Option(name: .long, help: "Seconds to spend per batch size (at least 5 calls).")
    var seconds: Double = 1

    @Flag(name: .long, help: "Print JSON lines.")
    var json = false

    @Option(name: .long, help: "Also time N opens of the model file (open, validate, compile, first batch-1 prediction); 0 skips.")
    var opens = 0

    var batchSizes: [Int] { batch.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func validate() throws {
        try requireFile(model, "model")
        guard !batchSizes.isEmpty, batchSizes.allSatisfy({ $0 >= 1 && $0 <= 1 << 20 }),
            batchSizes.count == batch.split(separator: ",").count
        else {
            throw ValidationError("--batch takes comma-separated sizes between 1 and 1048576")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be >= 1") }
        guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600]") }
        guard opens >= 0, opens <= 10_000 else { throw ValidationError("--opens must be in 0...10000") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        try reportingErrors {
            if opens > 0 { try timeOpens() }
            let loaded = try loadModel(model)
            if let threads { ComputeThreads.set(threads) }
            let threadCount = ComputeThreads.current
            if !json {
                print(
                    "kernel: \(loaded.kernel) (supported here: \(KernelPath.allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", ")); MMOE_KERNEL chooses)"
                )
                print("batch   threads   median_latency   p90_latency   examples/s")
            }
            for size in batchSizes {
                let inputs = PredictionFiles.randomBatch(loaded.spec, rows: size, seed: UInt64(size))
                for _ in 0..<3 { _ = try loaded.predict(inputs) }
                var times: [Double] = []
                let start = DispatchTime.now().uptimeNanoseconds
                while times.count < 5 || Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < seconds {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    _ = try loaded.predict(inputs)
                    times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                    if times.count >= 100_000 { break }
                }
                times.sort()
                let median = times[times.count / 2]
                let p90 = times[min(times.count - 1, times.count * 9 / 10)]
                let throughput = Double(size) / median
                if json {
                    let object: [String: Any] = [
                        "batch": size, "threads": threadCount, "median_latency_s": median, "p90_latency_s": p90,
                        "examples_per_s": throughput, "calls": times.count,
                        "kernel": loaded.kernel.rawValue,
                    ]
                    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    print(
                        String(
                            format: "%-7d %-9d %-16@ %-13@ %.0f", size, threadCount, formatSeconds(median) as NSString,
                            formatSeconds(p90) as NSString, throughput))
                }
            }
        }
    }

    /// Times opening the file until the first prediction has run, `opens` times.
    func timeOpens() throws {
        var times: [Double] = []
        var size = 0
        for index in 0..<opens {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let loaded = try loadModel(model)
            _ = try loaded.predict(PredictionFiles.randomBatch(loaded.spec, rows: 1, seed: UInt64(index)))
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            size = (try? FileManager.default.attributesOfItem(atPath: model)[.size] as? Int) ?? 0
        }
        times.sort()
        let median = times[times.count / 2]
        if json {
            let object: [String: Any] = ["open_median_s": median, "open_min_s": times[0], "opens": times.count, "file_bytes": size]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(
                "open + first prediction: median \(formatSeconds(median)), min \(formatSeconds(times[0])) over \(times.count) opens of \(formatBytes(size))"
            )
        }
    }

    func formatSeconds(_ s: Double) -> String {
        s < 1e-3 ? String(format: "%.1f us", s * 1e6) : s < 1 ? String(format: "%.3f ms", s * 1e3) : String(format: "%.3f s", s)
    }
}
