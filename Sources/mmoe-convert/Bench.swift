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
            median_latency_s, p90_latency_s, min_latency_s (the fastest call: the least
            disturbed by other work on the machine) and examples_per_s.

            With --rank N: one request of N candidates through `rank` (the user's features once,
            --user-features or the model's "side": "user" features) and the same N rows as a plain
            batch; --json prints one line with "mode": "rank" and one with "mode": "batch", each
            with examples_per_s, and the largest difference between their outputs.

            Examples:
              mmoe-convert bench model.mmoe --batch 1,256,4096 --threads 2 --json
              mmoe-convert bench model.mmoe --rank 500 --user-features user_id,age --json
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

    @Option(name: .long, help: "Time one ranking request of N candidates against the same rows as a plain batch.")
    var rank: Int?

    @Option(name: .long, help: "With --rank: comma-separated user-side features.")
    var userFeatures: String?

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
        if let rank, rank < 1 || rank > 1 << 20 { throw ValidationError("--rank must be between 1 and 1048576") }
    }

    func run() throws {
        if try HDF5Isolation.runInChild(for: [model]) { return }
        try reportingErrors {
            if opens > 0 { try timeOpens() }
            let loaded = try loadModel(model)
            if let threads { ComputeThreads.set(threads) }
            let threadCount = ComputeThreads.current
            if !json {
                let products =
                    loaded.kernel == .avx512bf16
                    ? (KernelPath.hasAMX ? ", bf16 products on AMX tiles" : ", bf16 products on AVX512-BF16") : ""
                print(
                    "kernel: \(loaded.kernel)\(products) (supported here: "
                        + "\(KernelPath.allCases.filter(\.isSupported).map(\.rawValue).joined(separator: ", ")); MMOE_KERNEL chooses)"
                )
                print("batch   threads   median_latency   p90_latency   examples/s")
            }
            if let rank {
                try timeRank(loaded, candidates: rank, threads: threadCount)
                return
            }
            for size in batchSizes {
                let inputs = PredictionFiles.randomBatch(loaded.spec, rows: size, seed: UInt64(size))
                let times = try timings { _ = try loaded.predict(inputs) }
                let median = times[times.count / 2]
                let p90 = times[min(times.count - 1, times.count * 9 / 10)]
                let throughput = Double(size) / median
                if json {
                    let object: [String: Any] = [
                        "batch": size, "threads": threadCount, "median_latency_s": median, "p90_latency_s": p90, "min_latency_s": times[0],
                        "examples_per_s": throughput, "calls": times.count,
                        "kernel": loaded.kernel.rawValue, "amx": loaded.kernel == .avx512bf16 && KernelPath.hasAMX,
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

    /// Sorted seconds of `body` after 3 warm-up calls: at least 5 calls and `seconds`.
    func timings(_ body: () throws -> Void) throws -> [Double] {
        for _ in 0..<3 { try body() }
        var times: [Double] = []
        let start = DispatchTime.now().uptimeNanoseconds
        while times.count < 5 || Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < seconds {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try body()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
            if times.count >= 100_000 { break }
        }
        return times.sorted()
    }

    /// Median seconds of `body`.
    func median(_ body: () throws -> Void) throws -> Double {
        let times = try timings(body)
        return times[times.count / 2]
    }

    /// One ranking request against the same rows as a plain batch.
    func timeRank(_ loaded: Model, candidates: Int, threads: Int) throws {
        let side =
            userFeatures.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
            ?? loaded.spec.userFeatures
        guard !side.isEmpty else { throw ValidationError("--rank needs --user-features (the model marks no feature \"side\": \"user\")") }
        var full = PredictionFiles.randomBatch(loaded.spec, rows: candidates, seed: 7)
        var user: [String: FeatureArray] = [:]
        for name in side {
            guard let array = full[name] else {
                throw ValidationError("--user-features: '\(printable(name))' is not a feature of the model")
            }
            let row = array.row(0)
            user[name] = row
            // The plain batch repeats the user's row on every candidate.
            full[name] = row.repeated(rows: candidates)
        }
        let items = full.filter { !side.contains($0.key) }
        let ranking = try loaded.rank(user: user, candidates: items, userFeatures: side)
        let batch = try loaded.predict(full)
        var difference = 0.0
        for name in batch.outputNames {
            for (a, b) in zip(ranking.prediction[name] ?? [], batch[name] ?? []) { difference = max(difference, Double(abs(a - b))) }
        }
        let rankTime = try median { _ = try loaded.rank(user: user, candidates: items, userFeatures: side) }
        let batchTime = try median { _ = try loaded.predict(full) }
        let userWidth = loaded.spec.features.filter { side.contains($0.name) }.reduce(0) { $0 + width(of: $1, spec: loaded.spec) }
        let totalWidth = loaded.spec.features.reduce(0) { $0 + width(of: $1, spec: loaded.spec) }
        for (mode, time) in [("rank", rankTime), ("batch", batchTime)] {
            let object: [String: Any] = [
                "mode": mode, "candidates": candidates, "threads": threads, "median_latency_s": time,
                "examples_per_s": Double(candidates) / time,
                "kernel": loaded.kernel.rawValue, "user_input_columns": userWidth, "input_columns": totalWidth,
                "user_part_shared": ranking.sharedUserPart, "max_abs_output_difference": difference,
            ]
            if json {
                print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
            } else {
                print(
                    "\(mode): \(candidates) candidates in \(formatSeconds(time)), "
                        + "\(String(format: "%.0f", Double(candidates) / time)) examples/s"
                )
            }
        }
        if !json {
            print(
                "rank / batch throughput: \(String(format: "%.2f", batchTime / rankTime)) x; user columns \(userWidth) of "
                    + "\(totalWidth); outputs differ by at most \(difference)"
            )
        }
    }

    func width(of feature: Feature, spec: ModelSpec) -> Int {
        switch feature.kind {
        case .dense: feature.width ?? 1
        case .sparse, .sequence: spec.tables.first { $0.name == feature.table }?.dim ?? 0
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
                "open + first prediction: median \(formatSeconds(median)), min \(formatSeconds(times[0])) over \(times.count) "
                    + "opens of \(formatBytes(size))"
            )
        }
    }

    func formatSeconds(_ s: Double) -> String {
        s < 1e-3 ? String(format: "%.1f us", s * 1e6) : s < 1 ? String(format: "%.3f ms", s * 1e3) : String(format: "%.3f s", s)
    }
}
