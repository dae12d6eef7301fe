import Foundation
@testable import MMoEImport
import MMoECore
import MMoERuntime
import MMoETestSupport
import Testing

@Suite("Gate analysis")
struct GateAnalysisTests {
    /// Fixtures whose `gates.npz` holds the gate weights the framework computed on `inputs.npz`
    /// (fixtures/scripts/make_gate_fixtures.py).
    static let fixtures = [
        "torch/rechub_mmoe/model.pt", "torch/rechub_ple/model.pt", "torch/deepctr_torch_mmoe/model.pt",
        "torch/deepctr_torch_mmoe_bn_prelu/model.pt",
        "torch/deepctr_torch_ple/model.pt", "keras/deepctr_mmoe/model.h5", "keras/deepctr_ple/model.h5",
        "keras/deepctr_mmoe_bn_prelu/model.h5",
    ]

    @Test("per-example gate weights and the report's figures equal the framework's own gate weights", arguments: fixtures)
    func frameworkGates(fixture: String) throws {
        let folder = fixturesPath + "/" + (fixture as NSString).deletingLastPathComponent
        let result = try ModelImporter.load(path: fixturesPath + "/" + fixture, conversionSpecPath: folder + "/conversion.json")
        let model = try Model(spec: result.spec, tensors: result.tensors)
        let prediction = try model.predict(
            try PredictionFiles.readInputs(folder + "/inputs.npz", spec: model.spec), options: PredictOptions(includeGates: true))
        let framework = try NumpyArchive.read(path: folder + "/gates.npz")
        let layout = try #require(GateLayout(spec: model.spec))
        let report = GateReport(layout: layout, gates: prediction.gates, unusedBelow: 0.05)
        #expect(Set(framework.keys) == Set(prediction.gates.map { "gate." + $0.name }), "\(fixture): the framework's gates")
        for gate in prediction.gates {
            let theirs = try #require(framework["gate." + gate.name])
            #expect(theirs.shape == [prediction.batchSize, gate.experts], "\(fixture) \(gate.name)")
            let want = theirs.floats()
            for i in want.indices { #expect(abs(gate.weights[i] - want[i]) <= 1e-5, "\(fixture) \(gate.name)[\(i)]") }
            // The report's figures, recomputed here from the framework's weights.
            let stats = try #require(report.gates.first { $0.name == gate.name })
            let rows = prediction.batchSize
            let e = gate.experts
            var effective: [Double] = []
            var polarised = 0
            for r in 0..<rows {
                let row = (0..<e).map { Double(want[r * e + $0]) }
                effective.append(exp(-row.filter { $0 > 0 }.map { $0 * log($0) }.reduce(0, +)))
                if row.max() ?? 0 > 0.9 { polarised += 1 }
            }
            for k in 0..<e {
                let mean = (0..<rows).map { Double(want[$0 * e + k]) }.reduce(0, +) / Double(rows)
                #expect(abs(stats.meanWeights[k] - mean) <= 1e-5, "\(fixture) \(gate.name) mean of expert \(k)")
            }
            effective.sort()
            let median = rows % 2 == 1 ? effective[rows / 2] : (effective[rows / 2 - 1] + effective[rows / 2]) / 2
            #expect(abs(stats.effectiveExperts.p50 - median) <= 1e-5, "\(fixture) \(gate.name) effective median")
            #expect(abs(stats.effectiveExperts.min - effective[0]) <= 1e-5)
            #expect(abs(stats.polarisedShare - Double(polarised) / Double(rows)) < 1e-12)
            #expect(stats.topWeightHistogram.reduce(0, +) == rows)
        }
    }

    @Test("columns are the real experts of each level: a PLE task gate sits under its own and the shared experts only")
    func pleColumns() throws {
        let folder = fixturesPath + "/torch/rechub_ple"
        let result = try ModelImporter.load(path: folder + "/model.pt", conversionSpecPath: folder + "/conversion.json")
        let layout = try #require(GateLayout(spec: result.spec))
        let experts = ["click.0", "click.1", "watch.0", "watch.1", "shared.0"]
        #expect(layout.levels.map(\.experts) == [experts, experts])
        func columns(_ name: String) -> [String]? {
            layout.gates.first { $0.name == name }.map { gate in gate.columns.map { experts[$0] } }
        }
        #expect(columns("level0.click") == ["click.0", "click.1", "shared.0"])
        #expect(columns("level0.watch") == ["watch.0", "watch.1", "shared.0"])
        #expect(columns("level0.shared") == experts)
        #expect(columns("level1.watch") == ["watch.0", "watch.1", "shared.0"])
        #expect(columns("level1.shared") == nil)  // the last level has no shared gate
        // MMoE and OMoE: one level of anonymous experts, every gate mixes all of them.
        let mmoe = try #require(GateLayout(spec: SampleSpecs.mmoe))
        #expect(mmoe.levels.map(\.experts) == [["e0", "e1", "e2"]])
        #expect(mmoe.gates.map(\.name) == ["ctr", "watch_time"])
        let omoe = try #require(GateLayout(spec: SampleSpecs.omoe))
        #expect(omoe.gates.map(\.name) == ["shared"])
        #expect(GateLayout(spec: SampleSpecs.esmm) == nil)
        #expect(GateLayout(spec: SampleSpecs.aitm) == nil)
    }

    @Test("polarised gates, effective experts and unused experts on weights with a known answer")
    func knownAnswer() {
        let layout = GateLayout(spec: SampleSpecs.mmoe)!
        // Gate ctr: row 0 all on e0, row 1 even over three; gate watch_time: never e2.
        let ctr = GateWeights(name: "ctr", experts: 3, weights: [1, 0, 0, 1.0 / 3, 1.0 / 3, 1.0 / 3])
        let watch = GateWeights(name: "watch_time", experts: 3, weights: [0.5, 0.5, 0, 0.95, 0.05, 0])
        let report = GateReport(layout: layout, gates: [ctr, watch], unusedBelow: 0.1)
        #expect(report.examples == 2)
        let first = report.gates[0]
        #expect(first.polarisedShare == 0.5)
        #expect(abs(first.effectiveExperts.min - 1) < 1e-9)
        #expect(abs(first.effectiveExperts.max - 3) < 1e-5)
        #expect(first.topExpertShare == [1, 0, 0])
        #expect(first.topWeightHistogram[9] == 1 && first.topWeightHistogram[3] == 1)
        #expect(report.gates[1].polarisedShare == 0.5)
        // e2: (1/6 + 0) / 2 = 0.083 < 0.1 → unused; e1: (1/6 + 0.275) / 2 ≥ 0.1.
        #expect(report.unused.map(\.expert) == ["e2"])
        // Slices: only row 1.
        let slice = GateReport(layout: layout, gates: [ctr, watch], rows: [1], unusedBelow: 0.1)
        #expect(slice.examples == 1)
        #expect(slice.gates[0].meanWeights.allSatisfy { abs($0 - 1.0 / 3) < 1e-7 })
    }
}

@Suite("mmoe-convert gates")
struct GatesCommandTests {
    /// The torch-rechub PLE fixture converted to .mmoe in `folder`.
    static func convertedPLE(in folder: TemporaryFolder) throws -> (model: String, inputs: String) {
        let ple = fixturesPath + "/torch/rechub_ple"
        let model = folder.file("ple.mmoe")
        let convert = try mmoeConvert(["convert", ple + "/model.pt", "--spec", ple + "/conversion.json", "-o", model])
        guard convert.status == 0 else { throw PNGImage.Failure(description: convert.stderr) }
        return (model, ple + "/inputs.npz")
    }

    @Test("--json: the documented schema, expert columns per level, slices by a sparse feature that add up")
    func json() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let (model, inputs) = try Self.convertedPLE(in: folder)
        let run = try mmoeConvert(["gates", model, "--inputs", inputs, "--json", "--by", "user id", "--top-values", "3"])
        #expect(run.status == 0, "\(run.stderr)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(document["schema"] as? String == "mmoe-gates/1")
        #expect(document["architecture"] as? String == "ple")
        let definitions = try #require(document["definitions"] as? [String: Any])
        #expect(definitions["polarised_above"] as? Double == 0.9)
        #expect(definitions["unused_below"] as? Double == 0.05)
        let report = try #require(document["report"] as? [String: Any])
        #expect(report["examples"] as? Int == 48)
        #expect(report["levels"] as? [[String]] == Array(repeating: ["click.0", "click.1", "watch.0", "watch.1", "shared.0"], count: 2))
        let gates = try #require(report["gates"] as? [[String: Any]])
        #expect(gates.map { $0["name"] as? String } == ["level0.click", "level0.watch", "level0.shared", "level1.click", "level1.watch"])
        let first = gates[0]
        #expect(first["experts"] as? [String] == ["click.0", "click.1", "shared.0"])
        for key in ["mean_weights", "top_expert_share", "polarised_share", "effective_experts", "top_weight_histogram"] {
            #expect(first[key] != nil, "key \(key)")
        }
        let quantiles = try #require(first["effective_experts"] as? [String: Double])
        #expect(Set(quantiles.keys) == ["mean", "min", "p10", "p25", "p50", "p75", "p90", "max"])
        #expect(quantiles["min"]! <= quantiles["p50"]! && quantiles["p50"]! <= quantiles["max"]! && quantiles["max"]! <= 3)
        let by = try #require(document["by"] as? [String: Any])
        #expect(by["feature"] as? String == "user id")
        let values = try #require(by["values"] as? [[String: Any]])
        #expect(values.count == 3)
        // The most frequent ids, counted here from the inputs.
        let ids = try #require(try NumpyArchive.read(path: inputs)["user id"]).ids().get()
        var counts: [Int64: Int] = [:]
        for id in ids { counts[id, default: 0] += 1 }
        let examples = values.compactMap { ($0["report"] as? [String: Any])?["examples"] as? Int }
        let sliced = values.compactMap { $0["value"] as? Int64 }
        #expect(examples == sliced.map { counts[$0] ?? -1 })
        #expect(examples == examples.sorted(by: >))
        #expect(examples.first == counts.values.max())
    }

    @Test("--by refuses a feature that is not sparse, naming it; --html writes one page with every panel")
    func byAndHTML() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let (model, inputs) = try Self.convertedPLE(in: folder)
        let dense = try mmoeConvert(["gates", model, "--inputs", inputs, "--by", "price"])
        #expect(dense.status == 2)
        #expect(dense.stderr.contains("--by price: a dense feature; slices need a sparse feature"), "\(dense.stderr)")
        let missing = try mmoeConvert(["gates", model, "--inputs", inputs, "--by", "nope"])
        #expect(missing.stderr.contains("--by nope: the model has no such feature"), "\(missing.stderr)")
        let page = folder.file("gates.html")
        let run = try mmoeConvert(["gates", model, "--inputs", inputs, "--html", page, "--by", "item_id", "--top-values", "2"])
        #expect(run.status == 0, "\(run.stderr)")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.components(separatedBy: "<svg ").count - 1 == 3)  // all examples + two slices
        #expect(html.contains("level 1: mean weight each gate gives each expert"))
        #expect(!html.contains("http://") || html.components(separatedBy: "http://").count - 1 == 3)  // only the SVG namespace
        // The text table: '-' under experts a gate does not mix.
        let table = try mmoeConvert(["gates", model, "--inputs", inputs])
        let row = try #require(table.stdout.split(separator: "\n").first { $0.hasPrefix("level0.click ") })
        #expect(row.split(separator: " ").filter { $0 == "-" }.count == 2, "\(row)")
    }

    @Test("the SVG as a person sees it: rendered by rsvg-convert, it matches the committed reference image")
    func rendered() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let (model, inputs) = try Self.convertedPLE(in: folder)
        let svg = folder.file("gates.svg")
        #expect(try mmoeConvert(["gates", model, "--inputs", inputs, "--svg", svg]).status == 0)
        let png = folder.file("gates.png")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/rsvg-convert")  // Debian's librsvg2-bin (scripts/install-deps.sh)
        process.arguments = [svg, "-o", png]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let image = try PNGImage(path: png)
        let reference = try PNGImage(path: fixturesPath + "/gates/rechub_ple.png")
        #expect(image.width == reference.width && image.height == reference.height)
        guard image.width == reference.width, image.height == reference.height else { return }
        var differing = 0
        for y in 0..<image.height {
            for x in 0..<image.width {
                let (a, b) = (image.rgb(x, y), reference.rgb(x, y))
                if max(abs(a.0 - b.0), abs(a.1 - b.1), abs(a.2 - b.2)) > 48 { differing += 1 }
            }
        }
        // Font hinting may move a few glyph edges; anything more is a changed picture.
        #expect(Double(differing) / Double(image.width * image.height) < 0.005, "\(differing) pixels differ from the reference")
        // What the picture shows: level 0 starts 34 px down, its cells 46 px below that, 58 x 40 each,
        // after a 120 px column of gate names. Sample a corner of each cell, away from its text.
        // Level 1's panel starts 46 + 3 x 40 + 18 px below level 0's.
        func cell(level: Int, _ row: Int, _ column: Int) -> (Int, Int, Int) {
            image.rgb(120 + column * 58 + 6, 34 + level * 184 + 46 + row * 40 + 6)
        }
        let mixed = cell(level: 0, 0, 0)  // level0.click under click.0
        let notMixed = cell(level: 0, 0, 2)  // level0.click under watch.0: hatched grey
        #expect(mixed.2 > mixed.0 + 20, "a mixed cell is blue: \(mixed)")
        #expect(abs(notMixed.0 - notMixed.2) < 12 && abs(notMixed.0 - notMixed.1) < 12, "a cell the gate does not mix is grey: \(notMixed)")
        // Contrast: level1.watch gives watch.0 0.43 and shared.0 0.25; the larger weight is visibly darker.
        let heavy = cell(level: 1, 1, 2)
        let light = cell(level: 1, 1, 4)
        #expect(heavy.0 + heavy.1 + heavy.2 + 60 < light.0 + light.1 + light.2, "0.43 vs 0.25: \(heavy) \(light)")
    }
}
