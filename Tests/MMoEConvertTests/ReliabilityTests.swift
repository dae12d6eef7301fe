import Foundation
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
        let error = try #require(Self.message {
            _ = try ModelImporter.load(path: folder.file("model.pt"), conversionSpecPath: fixturesPath + "/torch/rechub_mmoe/conversion.json")
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
            header[tensor.name] = ["dtype": tensor.dtype == .i64 ? "I64" : "F32", "shape": tensor.shape, "data_offsets": [data.count, data.count + bytes.count]]
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
        let result = try mmoeConvert(["convert", folder.file("model.safetensors"), "--spec", source + "/conversion.json", "-o", folder.file("out.mmoe")])
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
