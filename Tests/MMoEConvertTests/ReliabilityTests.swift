import Foundation
import MMoECore
import MMoEFormat
import MMoEHDF5
import MMoEImport
import MMoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 14's medium and low items: each a regression test that failed before its fix.
@Suite("Reliability, second round", .serialized)
struct ReliabilityTests {
    static func message(_ body: () throws -> Void) -> String? {
        do { try body() } catch { return "\(error)" }
        return nil
    }

    @Test("a stored zip member whose bytes changed under an intact CRC is refused")
    func storedMemberCRC() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/torch/rechub_mmoe/model.pt"))
        let zip = try ZipArchive(path: fixturesPath + "/torch/rechub_mmoe/model.pt")
        let member = try #require(zip.entries.first { $0.name.hasSuffix("/data/0") })
        #expect(member.method == 0)
        // The first weight becomes +inf; the local and central CRCs still describe the old bytes.
        bytes.replaceSubrange((member.dataOffset)..<(member.dataOffset + 4), with: [0x00, 0x00, 0x80, 0x7F])
        try bytes.write(to: URL(fileURLWithPath: folder.file("model.pt")))
        let error = try #require(
            Self.message {
                _ = try ModelImporter.load(
                    path: folder.file("model.pt"), conversionSpecPath: fixturesPath + "/torch/rechub_mmoe/conversion.json")
            })
        #expect(error.contains("fails its CRC-32 check"), "\(error)")
    }

    @Test("a torch archive with two record prefixes is refused, as torch refuses it")
    func twoRecords() throws {
        let error = try #require(Self.message { _ = try ModelImporter.load(path: fixturesPath + "/hostile/two_records.pt") })
        #expect(error.contains("2 data.pkl members"), "\(error)")
    }

    @Test("-o never replaces a FIFO or a device, and a replaced file keeps its mode")
    func outputTargets() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/torch/rechub_mmoe"
        #expect(mkfifo(folder.file("fifo.mmoe"), 0o600) == 0)
        let fifo = try mmoeConvert(["convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", folder.file("fifo.mmoe")])
        #expect(fifo.status == 2)
        #expect(fifo.stderr.contains("is not a regular file"), "\(fifo.stderr)")
        var info = stat()
        #expect(lstat(folder.file("fifo.mmoe"), &info) == 0 && (info.st_mode & S_IFMT) == S_IFIFO)
        // A FIFO as the input: refused at once, not waited on.
        let input = try mmoeConvert(["inspect", folder.file("fifo.mmoe")])
        #expect(input.status == 2 && input.stderr.contains("not a regular file"), "\(input.stderr)")

        let target = folder.file("private.mmoe")
        #expect(FileManager.default.createFile(atPath: target, contents: Data("old".utf8), attributes: [.posixPermissions: 0o600]))
        let replaced = try mmoeConvert(["convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", target])
        #expect(replaced.status == 0, "\(replaced.stderr)")
        #expect(stat(target, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect((try FileManager.default.attributesOfItem(atPath: target)[.size] as? Int ?? 0) > 100)
    }

    @Test("echoed names are capped and control characters escaped in error lines")
    func echoedNames() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        // The safetensors fixture plus a tensor whose 100,000-character name holds NUL bytes.
        let source = fixturesPath + "/torch/rechub_sharedbottom"
        let checkpoint = try SafetensorsReader.read(path: source + "/model.safetensors")
        var header: [String: Any] = [:]
        var data: [UInt8] = []
        for tensor in checkpoint.tensors {
            let bytes = Array(tensor.storage.bytes[tensor.byteOffset..<(tensor.byteOffset + tensor.count * tensor.dtype.size)])
            header[tensor.name] = [
                "dtype": tensor.dtype == .i64 ? "I64" : "F32", "shape": tensor.shape,
                "data_offsets": [data.count, data.count + bytes.count],
            ]
            data += bytes
        }
        let evil = "x\u{0}" + String(repeating: "A", count: 100_000)
        header[evil] = ["dtype": "F32", "shape": [1], "data_offsets": [data.count, data.count + 4]]
        data += [0, 0, 0, 0]
        let json = try JSONSerialization.data(withJSONObject: header)
        var file = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) }
        file += json
        file += Data(data)
        try file.write(to: URL(fileURLWithPath: folder.file("model.safetensors")))
        let result = try mmoeConvert([
            "convert", folder.file("model.safetensors"), "--spec", source + "/conversion.json", "-o", folder.file("out.mmoe"),
        ])
        #expect(result.status == 2)
        let line = try #require(result.stderr.split(separator: "\n").first { $0.contains("error:") })
        #expect(line.count < 4200, "\(line.count) characters")
        #expect(!line.utf8.contains(0))
        #expect(line.contains("x\\u{0}AAAA") && line.contains("more characters)"), "\(line.prefix(300))")
    }

    @Test("a CSV whose header names a column twice is refused")
    func duplicateCSVColumn() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/torch/rechub_mmoe"
        let model = folder.file("model.mmoe")
        #expect(try mmoeConvert(["convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", model]).status == 0)
        let spec = try ModelImporter.load(path: model).spec
        let names = spec.features.map(\.name)
        var header = names
        header.append(names[0])
        try (header.joined(separator: ",") + "\n").write(toFile: folder.file("in.csv"), atomically: true, encoding: .utf8)
        let error = try #require(Self.message { _ = try PredictionFiles.readInputs(folder.file("in.csv"), spec: spec) })
        #expect(error.contains("names column") && error.contains("twice"), "\(error)")
    }

    @Test("files on which libhdf5 itself crashes, loops or corrupts memory end in one error line and exit code 2")
    func libhdf5Findings() throws {
        var files: [String] = []
        for folder in ["hdf5", "keras"] {
            let path = fixturesPath + "/fuzz-findings/" + folder
            files += (try FileManager.default.contentsOfDirectory(atPath: path)).filter { $0.hasSuffix(".h5") }.map { path + "/" + $0 }
        }
        #expect(files.count >= 6)
        for file in files {
            for command in [
                ["inspect", file],
                [
                    "convert", file, "--spec", fixturesPath + "/keras/deepctr_mmoe/conversion.json", "-o",
                    NSTemporaryDirectory() + "never.mmoe",
                ],
            ] {
                let result = try mmoeConvert(command, environment: ["MMOE_HDF5_TIMEOUT": "30"])
                #expect(result.status == 2, "\(command): \(result.status) \(result.stderr.suffix(200))")
                #expect(
                    result.stderr.hasPrefix("mmoe-convert: error: ") && result.stderr.split(separator: "\n").count == 1,
                    "\(result.stderr.prefix(400))")
            }
        }
        // The one that crashes libhdf5 outright is reported as such.
        let segv = try mmoeConvert(["inspect", fixturesPath + "/fuzz-findings/keras/libhdf5-global-heap-segv.h5"])
        #expect(segv.stderr.contains("crashed libhdf5 (signal 11) in the isolated reader"), "\(segv.stderr)")
    }

    @Test("libhdf5 prints nothing to stderr, on any thread")
    func hdf5Silent() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let log = folder.file("stderr.txt")
        let saved = dup(2)
        let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(saved >= 0 && fd >= 0)
        dup2(fd, 2)
        // Fresh threads: a thread-safe libhdf5 keeps the printing switch per thread.
        let files = ["truncated_half.h5", "truncated_superblock.h5", "flipped_superblock.h5", "not_hdf5.h5"]
        for _ in 0..<4 {
            let done = DispatchSemaphore(value: 0)
            let thread = Thread {
                DispatchQueue.concurrentPerform(iterations: 8) { i in
                    _ = try? HDF5Codec.read(path: fixturesPath + "/damaged/hdf5/" + files[i % files.count])
                    _ = try? KerasH5Reader.read(path: fixturesPath + "/damaged/keras/truncated.h5")
                }
                done.signal()
            }
            thread.start()
            done.wait()
        }
        dup2(saved, 2)
        close(saved)
        close(fd)
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(!text.contains("HDF5-DIAG"), "\(text.prefix(400))")
    }
}

/// Issue 14 item 3: files that expand to gigabytes, run under a 4 GB address-space limit
/// (`prlimit --as`), end in a typed error naming the budget, never in a killed process. The
/// files are generated at test time by `fixtures/scripts/make_large_reproductions.py`.
@Suite("Allocations sized by files", .serialized)
struct AllocationBudgetTests {
    @Test("bombs under a 4 GB address-space limit: .pt storage, .npz, .keras, prediction inputs, a 9 M-row CSV, 1,001 views of one storage")
    func bombs() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let generator = Process()
        generator.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        generator.arguments = ["python3", fixturesPath + "/scripts/make_large_reproductions.py", folder.path, "--csv"]
        generator.standardOutput = FileHandle.nullDevice
        try generator.run()
        generator.waitUntilExit()
        try #require(generator.terminationStatus == 0, "the generator failed")
        let model = folder.file("model.mmoe")
        let source = fixturesPath + "/torch/rechub_mmoe"
        #expect(try mmoeConvert(["convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", model]).status == 0)
        let runs: [[String]] = [
            ["inspect", folder.file("bomb.pt")], ["inspect", folder.file("bomb.npz")], ["inspect", folder.file("bomb.keras")],
            ["predict", model, "--inputs", folder.file("bomb_inputs.npz"), "-o", folder.file("p.npz")],
            ["predict", model, "--inputs", folder.file("rows.csv"), "-o", folder.file("p.npz")],
            // Item 8: 1,001 views of one 4 MB storage make a 4 GB model; refused before anything is written.
            ["convert", folder.file("views.pt"), "--spec", folder.file("views.json"), "-o", folder.file("views.mmoe")],
        ]
        for arguments in runs {
            let result = try mmoeConvert(["--as=4000000000", "--"] + arguments, prefix: "/usr/bin/prlimit")
            #expect(result.status == 2, "\(arguments): status \(result.status), \(result.stderr.suffix(300))")
            #expect(
                result.stderr.contains("more than the") && result.stderr.contains("MMOE_MAX_MEMORY"),
                "\(arguments): \(result.stderr.suffix(300))")
        }
        #expect(!FileManager.default.fileExists(atPath: folder.file("views.mmoe")), "no output is left behind")
    }

    @Test("a 2.5 GB .mmoe of zeros (valid checksums) under predict, bench and gates with a 4 GB address-space limit")
    func largeModelFile() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        // One 40,000 x 16,000 float32 weight (2.56 GB) from an untouched anonymous mapping: the
        // writer streams zeros, the runtime would map the file and pack a second copy.
        let spec = ModelSpec(
            name: "large", tables: [], features: [.dense("x", width: 40_000)],
            architecture: Architecture(
                type: .sharedBottom, bottom: MLP(layers: [.linear(units: 16_000, bias: false), .relu]),
                towers: [MLP(layers: [.linear(units: 1, bias: true)])]),
            tasks: [TaskHead(name: "y")])
        let count = 40_000 * 16_000
        let bytes = count * 4
        let address = mmap(nil, bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let address, address != MAP_FAILED else { throw PNGImage.Failure(description: "mmap failed") }
        let storage = ByteStorage(bytes: UnsafeRawBufferPointer(start: address, count: bytes)) {
            munmap(UnsafeMutableRawPointer(mutating: $0.baseAddress), $0.count)
        }
        var tensors = TensorStore()
        tensors.set(try Tensor(dtype: .f32, shape: [16_000, 40_000], storage: storage), named: "bottom.layers.0.weight")
        tensors.set(try Tensor(float32: [Float](repeating: 0.01, count: 16_000), shape: [1, 16_000]), named: "towers.0.layers.0.weight")
        tensors.set(try Tensor(float32: [0], shape: [1]), named: "towers.0.layers.0.bias")
        let model = folder.file("large.mmoe")
        try ModelFileWriter.write(spec: spec, tensors: tensors, to: model)
        let inputs = folder.file("x.npz")
        try NumpyArchive.write(["x": .float32([Float](repeating: 0.5, count: 40_000), shape: [1, 40_000])], to: inputs)
        #expect(try mmoeConvert(["verify", model, "--checksums"]).status == 0)
        for arguments in [
            ["predict", model, "--inputs", inputs, "-o", folder.file("p.npz")], ["bench", model, "--batch", "1", "--seconds", "0.01"],
            ["gates", model, "--inputs", inputs],
        ] {
            let result = try mmoeConvert(["--as=4000000000", "--"] + arguments, prefix: "/usr/bin/prlimit")
            #expect(result.status == 2, "\(arguments[0]): status \(result.status), \(result.stderr.suffix(300))")
            #expect(result.stderr.contains("MMOE_MAX_MEMORY"), "\(arguments[0]): \(result.stderr.suffix(300))")
        }
    }

    @Test("MMOE_MAX_MEMORY lowers the budget: a small model refused, with the limit named")
    func configuredBudget() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/torch/rechub_mmoe"
        let refused = try mmoeConvert(
            ["convert", source + "/model.pt", "--spec", source + "/conversion.json", "-o", folder.file("m.mmoe")],
            environment: ["MMOE_MAX_MEMORY": "2K"])
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("more than the 2048 bytes"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: folder.file("m.mmoe")))
    }

    @Test("a safetensors header listing a million empty tensors is refused quickly")
    func millionTensors() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        var header = "{"
        header.reserveCapacity(70_000_000)
        for i in 0..<1_000_000 { header += "\(i == 0 ? "" : ",")\"t\(i)\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}" }
        header += "}"
        var file = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Data($0) }
        file += Data(header.utf8)
        try file.write(to: URL(fileURLWithPath: folder.file("million.safetensors")))
        let start = Date()
        #expect(
            throws: ImportError.limitExceeded(
                path: folder.file("million.safetensors"), what: "safetensors header listing 1000000 tensors", limit: 200_000)
        ) {
            _ = try SafetensorsReader.read(path: folder.file("million.safetensors"))
        }
        #expect(Date().timeIntervalSince(start) < 10)
    }
}
