import Foundation
import MMoECore
import MMoEImport
import MMoETestSupport
import Testing

/// Runs the built `mmoe-convert` and captures its exit code, stdout and stderr.
struct CommandResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// `prefix` runs the tool through another program (`prlimit`), `environment` adds variables.
func mmoeConvert(_ arguments: [String], prefix: String? = nil, environment: [String: String] = [:]) throws -> CommandResult {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("mmoe-convert")
    let candidates = [binary.path, fixturesPath + "/../.build/debug/mmoe-convert"]
    guard let executable = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: binary.path])
    }
    let process = Process()
    if let prefix {
        process.executableURL = URL(fileURLWithPath: prefix)
        // prlimit's options come first in `arguments`, up to "--"; the tool follows.
        let split = arguments.firstIndex(of: "--") ?? 0
        process.arguments = Array(arguments[..<split]) + [executable] + Array(arguments[(split + 1)...])
    } else {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
    }
    if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
}

@Suite("mmoe-convert end to end", .serialized)
struct CommandLineTests {
    let fixture = fixturesPath + "/torch/rechub_mmoe"

    @Test("convert, inspect, predict, verify on a fixture")
    func mainJob() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let model = folder.file("model.mmoe")
        let convert = try mmoeConvert(["convert", fixture + "/model.pt", "--spec", fixture + "/conversion.json", "-o", model])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stderr.contains("source: torch"))
        #expect(convert.stderr.contains("inferred: 3 experts, 2 tasks"))
        #expect(convert.stdout.contains("architecture: mmoe"))
        #expect(convert.stdout.contains("gates: 2 (one per task)"))

        let inspect = try mmoeConvert(["inspect", model, "--json", "--tensors"])
        #expect(inspect.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        #expect(object?["format"] as? String == "mmoe")
        #expect((object?["architecture"] as? [String: Any])?["experts"] as? Int == 3)
        #expect((object?["outputs"] as? [[String: Any]])?.map { $0["name"] as? String } == ["click", "watch"])
        #expect((object?["tensors"] as? [Any])?.count == 78 - 10)  // the 10 num_batches_tracked counters are dropped

        let predictions = folder.file("predictions.npz")
        let predict = try mmoeConvert(["predict", model, "--inputs", fixture + "/inputs.npz", "-o", predictions, "--gates"])
        #expect(predict.status == 0, "\(predict.stderr)")
        let written = try NumpyArchive.read(path: predictions)
        #expect(written["click"]?.shape == [48])
        #expect(written["gate.click"]?.shape == [48, 3])

        let verify = try mmoeConvert(["verify", model, "--inputs", fixture + "/inputs.npz", "--expected", fixture + "/outputs.npz"])
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(verify.stdout.contains("PASS: 2 outputs"))
        // predict and verify agree: the written predictions verify against the framework too.
        let verifyWritten = try mmoeConvert([
            "verify", model, "--inputs", fixture + "/inputs.npz", "--expected", predictions, "--atol", "0", "--rtol", "0",
        ])
        #expect(verifyWritten.status == 0, "\(verifyWritten.stdout)")

        // Outside tolerance: exit 1 and the worst row reported.
        var shifted = try NumpyArchive.read(path: fixture + "/outputs.npz")
        var values = try #require(shifted["click"]).floats()
        values[7] += 0.01
        shifted["click"] = .float32(values, shape: [values.count])
        let expected = folder.file("shifted.npz")
        try NumpyArchive.write(shifted, to: expected)
        let failing = try mmoeConvert(["verify", model, "--inputs", fixture + "/inputs.npz", "--expected", expected])
        #expect(failing.status == 1)
        #expect(failing.stdout.contains("FAIL"))
        #expect(failing.stdout.split(separator: "\n").contains { $0.hasPrefix("click") && $0.contains(" 7 ") })

        let checksums = try mmoeConvert(["verify", model, "--checksums"])
        #expect(checksums.status == 0)
        #expect(checksums.stdout.contains("tensor checksums OK"))
    }

    @Test("an ONNX export made by torch-rechub's helper converts without a spec and verifies")
    func onnxWithoutSpec() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let esmm = fixturesPath + "/torch/rechub_esmm"
        let model = folder.file("esmm.mmoe")
        let convert = try mmoeConvert(["convert", esmm + "/model.rechub.onnx", "-o", model])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stderr.contains("source: onnx"))
        #expect(convert.stderr.contains("inferred: features from the graph's inputs"))
        #expect(convert.stderr.contains("hist_items (sequence, table of item_id, mean pooling, padding 0)"))
        #expect(convert.stderr.contains("removed the 'model.' prefix"))
        let verify = try mmoeConvert(["verify", model, "--inputs", esmm + "/inputs.npz", "--expected", esmm + "/outputs.npz"])
        #expect(verify.status == 0, "\(verify.stdout)")
        #expect(verify.stdout.contains("PASS: 3 outputs"))
    }

    @Test("CSV inputs and outputs; HDF5 output; reduced precision and int8 embeddings")
    func formats() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let plain = fixturesPath + "/torch/plain_mmoe"
        let h5 = folder.file("plain.h5")
        #expect(try mmoeConvert(["convert", plain + "/model.safetensors", "--spec", plain + "/conversion.json", "-o", h5]).status == 0)
        let inputs = try NumpyArchive.read(path: plain + "/inputs.npz")
        let users = try #require(inputs["user_id"]).ids().get()
        let items = try #require(inputs["item_id"]).ids().get()
        let prices = try #require(inputs["price"]).floats()
        var csv = "user_id,item_id,price\n"
        for i in users.indices { csv += "\(users[i]),\(items[i]),\(prices[i])\n" }
        let csvPath = folder.file("inputs.csv")
        try csv.write(toFile: csvPath, atomically: true, encoding: .utf8)
        let out = folder.file("out.csv")
        let predict = try mmoeConvert(["predict", h5, "--inputs", csvPath, "-o", out])
        #expect(predict.status == 0, "\(predict.stderr)")
        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.first == "ctr,cvr")
        #expect(lines.count == users.count + 1)
        #expect(try mmoeConvert(["verify", h5, "--inputs", csvPath, "--expected", plain + "/outputs.npz"]).status == 0)

        let small = folder.file("small.mmoe")
        let reduce = try mmoeConvert(["convert", h5, "-o", small, "--dtype", "bf16", "--quantize-embeddings", "int8"])
        #expect(reduce.status == 0, "\(reduce.stderr)")
        #expect(reduce.stdout.contains("i8"))
        #expect(reduce.stdout.contains("bf16"))
        // bf16 weights drift; a loose tolerance passes, the default one need not.
        let loose = try mmoeConvert([
            "verify", small, "--inputs", plain + "/inputs.npz", "--expected", plain + "/outputs.npz", "--atol", "0.05", "--rtol", "0",
        ])
        #expect(loose.status == 0, "\(loose.stdout)")
    }

    @Test("softmax heads: predict writes [N, C] (npz) and one column per class (CSV); verify compares shape for shape")
    func softmaxOutputs() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let census = fixturesPath + "/keras/keras_mmoe_census"
        let model = folder.file("census.mmoe")
        let convert = try mmoeConvert(["convert", census + "/model.h5", "--spec", census + "/conversion.json", "-o", model])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stdout.contains("income_positive"), "\(convert.stdout)")
        let verify = try mmoeConvert(["verify", model, "--inputs", census + "/inputs.npz", "--expected", census + "/outputs.npz"])
        #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
        #expect(verify.stdout.contains("PASS: 2 outputs"), "\(verify.stdout)")
        #expect(verify.stdout.contains("not compared: income_positive"), "\(verify.stdout)")

        let npz = folder.file("out.npz")
        #expect(try mmoeConvert(["predict", model, "--inputs", census + "/inputs.npz", "-o", npz]).status == 0)
        let written = try NumpyArchive.read(path: npz)
        #expect(written["marital"]?.shape == [48, 3])
        #expect(written["income_positive"]?.shape == [48])
        let csv = folder.file("out.csv")
        #expect(try mmoeConvert(["predict", model, "--inputs", census + "/inputs.npz", "-o", csv]).status == 0)
        let header = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").first
        #expect(header == "income.0,income.1,marital.0,marital.1,marital.2,income_positive")
        // predict's CSV reads back as expected outputs, class columns regrouped into [N, C].
        let roundTrip = try mmoeConvert([
            "verify", model, "--inputs", census + "/inputs.npz", "--expected", csv, "--atol", "1e-6", "--rtol", "0",
        ])
        #expect(roundTrip.stdout.contains("PASS: 3 outputs"), "\(roundTrip.stdout) \(roundTrip.stderr)")

        // Expected values of the positive class only, under the task's name: refused by shape.
        let positiveOnly = folder.file("positive.npz")
        let income = try #require(try NumpyArchive.read(path: census + "/outputs.npz")["income"]).floats()
        try NumpyArchive.write(
            ["income": .float32(stride(from: 1, to: income.count, by: 2).map { income[$0] }, shape: [48])], to: positiveOnly)
        let mismatch = try mmoeConvert(["verify", model, "--inputs", census + "/inputs.npz", "--expected", positiveOnly])
        #expect(mismatch.status != 0)
        #expect(mismatch.stderr.contains("output 'income' has shape [48], the model produced [48, 2]"), "\(mismatch.stderr)")
    }

    @Test("--fusion adds a ranking score output (sum, product, JSON with clips) that inspect shows and predict computes")
    func fusion() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let esmm = fixturesPath + "/torch/rechub_esmm"
        let model = folder.file("esmm.mmoe")
        let run = try mmoeConvert([
            "convert", esmm + "/model.pt", "--spec", esmm + "/conversion.json", "-o", model, "--fusion", "product:ctr=1,ctcvr=0.5",
        ])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("score = ctr^1.0 · ctcvr^0.5"), "\(run.stdout)")
        let inspect = try mmoeConvert(["inspect", model, "--json"])
        let document = try #require(try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any])
        let outputs = try #require(document["outputs"] as? [[String: Any]])
        #expect((outputs.last?["fusion"] as? [String: Any])?["kind"] as? String == "weighted_product")
        let predictions = folder.file("p.npz")
        #expect(try mmoeConvert(["predict", model, "--inputs", esmm + "/inputs.npz", "-o", predictions]).status == 0)
        let arrays = try NumpyArchive.read(path: predictions)
        let ctr = try #require(arrays["ctr"]).floats()
        let ctcvr = try #require(arrays["ctcvr"]).floats()
        let score = try #require(arrays["score"]).floats()
        for i in score.indices { #expect(abs(Double(score[i]) - Double(ctr[i]) * Double(ctcvr[i]).squareRoot()) < 1e-6) }
        // JSON with a clip; the score replaces one of the same name.
        let json =
            #"{"name": "score", "kind": "weighted_sum", "terms": "#
            + #"[{"output": "ctr", "weight": 1, "max": 0.5}, {"output": "ctcvr", "weight": 3}]}"#
        let again = folder.file("esmm2.mmoe")
        #expect(try mmoeConvert(["convert", model, "-o", again, "--fusion", json]).status == 0)
        #expect(try mmoeConvert(["predict", again, "--inputs", esmm + "/inputs.npz", "-o", predictions]).status == 0)
        let summed = try #require(try NumpyArchive.read(path: predictions)["score"]).floats()
        for i in summed.indices { #expect(abs(Double(summed[i]) - (min(Double(ctr[i]), 0.5) + 3 * Double(ctcvr[i]))) < 1e-6) }
        let bad = try mmoeConvert(["convert", model, "-o", folder.file("bad.mmoe"), "--fusion", "sum:ctr=1,nope=2"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("unknown output \"nope\""), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.file("bad.mmoe")))
    }

    @Test("rank: the user's features once (JSON), candidates as rows; equals predict on the repeated rows; bench --rank prints both modes")
    func rank() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/torch/rechub_mmoe"
        let model = folder.file("m.mmoe")
        #expect(
            try mmoeConvert([
                "convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", model, "--fusion", "sum:click=1,watch=0.1",
            ])
            .status == 0)
        let inputs = try NumpyArchive.read(path: source + "/inputs.npz")
        let userID = try #require(inputs["user id"]).ids().get()[0]
        let age = try #require(inputs["age"]).floats()[0]
        try Data(#"{"user id": \#(userID), "age": \#(age)}"#.utf8).write(to: URL(fileURLWithPath: folder.file("user.json")))
        var items = inputs
        items["user id"] = nil
        items["age"] = nil
        try NumpyArchive.write(items, to: folder.file("items.npz"))
        // The same rows with the user's values repeated, through predict.
        var repeated = inputs
        let rows = try #require(inputs["age"]).count
        repeated["user id"] = NumpyArray(
            descr: "<i8", shape: [rows], data: [Int64](repeating: userID, count: rows).withUnsafeBytes { Array($0) })
        repeated["age"] = .float32([Float](repeating: age, count: rows), shape: [rows])
        try NumpyArchive.write(repeated, to: folder.file("repeated.npz"))
        #expect(try mmoeConvert(["predict", model, "--inputs", folder.file("repeated.npz"), "-o", folder.file("batch.npz")]).status == 0)
        let run = try mmoeConvert([
            "rank", model, "--user", folder.file("user.json"), "--candidates", folder.file("items.npz"), "--user-features", "user id,age",
            "--top", "5", "--json", "-o", folder.file("ranked.npz"),
        ])
        #expect(run.status == 0, "\(run.stderr)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(document["score_output"] as? String == "score")
        #expect(document["user_part_shared"] as? Bool == true)
        let top = try #require(document["top"] as? [[String: Any]])
        #expect(top.count == 5)
        let batch = try #require(try NumpyArchive.read(path: folder.file("batch.npz"))["score"]).floats()
        let best = try #require(batch.indices.max { batch[$0] < batch[$1] })
        #expect(top.first?["candidate"] as? Int == best)
        let ranked = try #require(try NumpyArchive.read(path: folder.file("ranked.npz"))["score"]).floats()
        for i in batch.indices { #expect(abs(ranked[i] - batch[i]) <= 1e-6 * max(1, abs(batch[i]))) }
        // Bad user files name the feature.
        try Data(#"{"user id": "seven"}"#.utf8).write(to: URL(fileURLWithPath: folder.file("bad.json")))
        let bad = try mmoeConvert([
            "rank", model, "--user", folder.file("bad.json"), "--candidates", folder.file("items.npz"), "--user-features", "user id,age",
        ])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("feature 'user id' must be a number or a list of numbers"), "\(bad.stderr)")
        let bench = try mmoeConvert(["bench", model, "--rank", "64", "--user-features", "user id,age", "--seconds", "0.05", "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        let lines = bench.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(lines.map { $0["mode"] as? String } == ["rank", "batch"])
        #expect(lines.allSatisfy { ($0["examples_per_s"] as? Double ?? 0) > 0 })
        #expect((lines.first?["max_abs_output_difference"] as? Double ?? 1) <= 1e-5)
    }

    @Test(
        "stored preprocessing: raw values through vocabularies and a scaler equal the ids; unknowns counted; .mmoe and HDF5 keep it"
    )
    func preprocessing() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/torch/rechub_mmoe"
        // A LabelEncoder-style classes_ array: raw "item<k>" is id k + 1 - 1 (offset 0 here).
        try NumpyArchive.write(["classes": .strings((0..<40).map { "item\($0)" }, shape: [40])], to: folder.file("classes.npz"))
        try Data(NumpyFormat.encode(.strings((0..<40).map { "item\($0)" }, shape: [40]))).write(
            to: URL(fileURLWithPath: folder.file("classes.npy")))
        let model = folder.file("raw.mmoe")
        let convert = try mmoeConvert([
            "convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", model, "--vocab",
            "item_id=" + folder.file("classes.npy"),
            "--vocab", "hist_items=" + folder.file("classes.npy"), "--vocab-offset", "0", "--scaler", "price=standard:0.5:2",
            "--user-features", "user id", "--fusion", "sum:click=1,watch=0.1",
        ])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(convert.stderr.contains("item_id: vocabulary of 40 values"), "\(convert.stderr)")
        // The fixture's inputs as raw values: item names, padding as "", price unscaled (x * 2 + 0.5).
        var inputs = try NumpyArchive.read(path: source + "/inputs.npz")
        let items = try #require(inputs["item_id"]).ids().get()
        let history = try #require(inputs["hist_items"])
        let historyIDs = try history.ids().get()
        let prices = try #require(inputs["price"]).floats()
        inputs["item_id"] = .strings(items.map { "item\($0)" }, shape: [items.count])
        inputs["hist_items"] = .strings(historyIDs.map { $0 == 0 ? "" : "item\($0)" }, shape: history.shape)
        inputs["price"] = .float32(prices.map { $0 * 2 + 0.5 }, shape: [prices.count])
        try NumpyArchive.write(inputs, to: folder.file("raw.npz"))
        let verify = try mmoeConvert(["verify", model, "--inputs", folder.file("raw.npz"), "--expected", source + "/outputs.npz"])
        #expect(verify.status == 0, "\(verify.stdout) \(verify.stderr)")
        // An unknown value goes to the out-of-vocabulary id and is counted.
        var unknown = inputs
        unknown["item_id"] = .strings(["nope"] + items.dropFirst().map { "item\($0)" }, shape: [items.count])
        try NumpyArchive.write(unknown, to: folder.file("unknown.npz"))
        let predict = try mmoeConvert(["predict", model, "--inputs", folder.file("unknown.npz"), "-o", folder.file("p.npz")])
        #expect(predict.stdout.contains("unknown values: 1 of 'item_id' not in its vocabulary (looked up as id 0)"), "\(predict.stdout)")
        // The same raw values from CSV: strings, sequences as space-separated values.
        let ids = try #require(inputs["user id"]).ids().get()
        let tags = try #require(inputs["tags"])
        let tagIDs = try tags.ids().get()
        let ages = try #require(inputs["age"]).floats()
        var csv = "user id,price,item_id,hist_items,tags,age\n"
        for r in 0..<items.count {
            let hist = (0..<history.shape[1]).map { historyIDs[r * history.shape[1] + $0] }.filter { $0 != 0 }.map { "item\($0)" }.joined(
                separator: " ")
            let tagCells = (0..<tags.shape[1]).map { String(tagIDs[r * tags.shape[1] + $0]) }.joined(separator: " ")
            csv += "\(ids[r]),\(prices[r] * 2 + 0.5),item\(items[r]),\(hist),\(tagCells),\(ages[r])\n"
        }
        try csv.write(toFile: folder.file("raw.csv"), atomically: true, encoding: .utf8)
        let fromCSV = try mmoeConvert(["verify", model, "--inputs", folder.file("raw.csv"), "--expected", source + "/outputs.npz"])
        #expect(fromCSV.status == 0, "\(fromCSV.stdout) \(fromCSV.stderr)")
        // Bad raw input names the feature: strings without a vocabulary, non-numeric dense values.
        try
            (csv.replacingOccurrences(of: ",item\(items[0]),", with: ",item\(items[0]),", options: [], range: nil)
            .replacingOccurrences(of: "\n\(ids[0]),", with: "\nalice,")).write(
                toFile: folder.file("bad.csv"), atomically: true, encoding: .utf8)
        let bad = try mmoeConvert(["predict", model, "--inputs", folder.file("bad.csv"), "-o", folder.file("p.npz")])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("line 2 column 'user id': 'alice' is not an integer id"), "\(bad.stderr)")
        var strings = inputs
        strings["user id"] = .strings(ids.map { "u\($0)" }, shape: [ids.count])
        try NumpyArchive.write(strings, to: folder.file("strings.npz"))
        let noVocabulary = try mmoeConvert(["predict", model, "--inputs", folder.file("strings.npz"), "-o", folder.file("p.npz")])
        #expect(
            noVocabulary.stderr.contains("feature 'user id' holds strings but the model has no vocabulary for it"), "\(noVocabulary.stderr)"
        )
        // Stored with the model: .mmoe and HDF5 give back the same spec.
        let h5 = folder.file("raw.h5")
        #expect(try mmoeConvert(["convert", model, "-o", h5]).status == 0)
        let fromMMoE = try ModelImporter.load(path: model).spec
        let fromHDF5 = try ModelImporter.load(path: h5).spec
        #expect(fromMMoE == fromHDF5)
        #expect(fromMMoE.features.first { $0.name == "item_id" }?.vocabulary?.values?.count == 40)
        #expect(fromMMoE.features.first { $0.name == "price" }?.scaler == Scaler(kind: .standard, shift: [0.5], scale: [2]))
        #expect(fromMMoE.features.first { $0.name == "user id" }?.side == .user)
        #expect(fromMMoE.resolvedOutputs.last?.fusion?.kind == .weightedSum)
        // A sequence longer than its max_length names the line and column.
        let long = csv.replacingOccurrences(
            of: ",item\(items[0]),", with: ",item\(items[0]),item1 item2 item3 item4 item5 item6 ", options: [], range: nil)
        try long.write(toFile: folder.file("long.csv"), atomically: true, encoding: .utf8)
        let tooLong = try mmoeConvert(["predict", model, "--inputs", folder.file("long.csv"), "-o", folder.file("p.npz")])
        #expect(tooLong.stderr.contains("column 'hist_items' holds"), "\(tooLong.stderr)")
        let inspect = try mmoeConvert(["inspect", model])
        #expect(inspect.stdout.contains("vocabulary 40"), "\(inspect.stdout)")
    }

    @Test("gates table and SVG heatmap; bench JSON")
    func gatesAndBench() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let model = folder.file("ple.mmoe")
        let ple = fixturesPath + "/torch/rechub_ple"
        #expect(try mmoeConvert(["convert", ple + "/model.pt", "--spec", ple + "/conversion.json", "-o", model]).status == 0)
        let svg = folder.file("gates.svg")
        let gates = try mmoeConvert(["gates", model, "--inputs", ple + "/inputs.npz", "--svg", svg])
        #expect(gates.status == 0, "\(gates.stderr)")
        for name in ["level0.click", "level0.watch", "level0.shared", "level1.click", "level1.watch"] {
            #expect(gates.stdout.contains(name), "gate \(name)")
        }
        let picture = try String(contentsOfFile: svg, encoding: .utf8)
        #expect(picture.hasPrefix("<svg"))
        #expect(picture.contains("level1.watch"))

        let bench = try mmoeConvert(["bench", model, "--batch", "1,64", "--threads", "1", "--seconds", "0.05", "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        let rows = bench.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(rows.count == 2)
        #expect(rows.map { $0["batch"] as? Int } == [1, 64])
        for row in rows {
            #expect(row["threads"] as? Int == 1)
            #expect((row["median_latency_s"] as? Double ?? 0) > 0)
            #expect((row["examples_per_s"] as? Double ?? 0) > 0)
        }
    }

    @Test("errors: one line on stderr and a documented exit code")
    func errors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        // Usage errors (64) are caught before any work.
        let missing = try mmoeConvert(["convert", folder.file("nope.pt"), "-o", folder.file("x.mmoe")])
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("does not exist"))
        #expect(try mmoeConvert(["predict", "--frobnicate"]).status == 64)
        #expect(try mmoeConvert(["convert", fixture + "/model.pt", "-o", folder.file("x.mmoe"), "--dtype", "f8"]).status == 64)
        #expect(try mmoeConvert(["verify", fixturesPath + "/damaged/valid.mmoe"]).status == 64)

        func expectFailure(_ arguments: [String], mentions: String) throws {
            let result = try mmoeConvert(arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "one line: \(result.stderr)")
            #expect(result.stderr.hasPrefix("mmoe-convert: error: "))
            #expect(result.stderr.contains(mentions), "\(result.stderr)")
        }
        // A checkpoint of no known framework, without a conversion spec.
        try expectFailure(["convert", fixturesPath + "/torch/plain_mmoe/model.pt", "-o", folder.file("x.mmoe")], mentions: "pass --spec")
        // Damaged model files.
        try expectFailure(["inspect", fixturesPath + "/damaged/mmoe/gap_between_tensors.mmoe"], mentions: "embeddings.user.weight")
        try expectFailure(
            ["predict", fixturesPath + "/damaged/mmoe/wrong_magic.mmoe", "--inputs", fixture + "/inputs.npz", "-o", folder.file("p.npz")],
            mentions: "unknown file format")
        // A hostile pickle.
        try expectFailure(["inspect", fixturesPath + "/hostile/os_system.pt"], mentions: "posix.system")
        // Inputs that do not fit the model.
        let model = folder.file("m.mmoe")
        #expect(try mmoeConvert(["convert", fixture + "/model.pt", "--spec", fixture + "/conversion.json", "-o", model]).status == 0)
        try expectFailure(
            ["predict", model, "--inputs", fixturesPath + "/torch/plain_mmoe/inputs.npz", "-o", folder.file("p.npz")],
            mentions: "not a feature of the model")
        let corrupt = try mmoeConvert(["verify", fixturesPath + "/damaged/mmoe/flipped_data_byte.mmoe", "--checksums"])
        #expect(corrupt.status == 1)
        #expect(corrupt.stdout.contains("checksum mismatch"))
        // Nothing half-written is left behind by failures.
        #expect(!FileManager.default.fileExists(atPath: folder.file("x.mmoe")))
        #expect(!FileManager.default.fileExists(atPath: folder.file("p.npz")))
    }

    @Test("help and version")
    func help() throws {
        let version = try mmoeConvert(["--version"])
        #expect(version.status == 0)
        #expect(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0.1.0")
        for command in ["convert", "inspect", "predict", "verify", "gates", "bench"] {
            let result = try mmoeConvert([command, "--help"])
            #expect(result.status == 0)
            #expect(result.stdout.contains("mmoe-convert \(command)"), "\(command) help")
            #expect(result.stdout.contains("Example"), "\(command) help has examples")
        }
    }
}
