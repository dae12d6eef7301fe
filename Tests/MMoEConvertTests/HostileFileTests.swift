import Foundation
@testable import MMoEImport
import MMoECore
import MMoETestSupport
import Testing

@Suite("Hostile and damaged checkpoints")
struct HostileFileTests {
    static let folder = fixturesPath + "/hostile/"

    func read(_ name: String) throws(ImportError) {
        let path = HostileFileTests.folder + name
        let format = try SourceFormat.detect(path: path)
        var notes: [ImportNote] = []
        _ = try CheckpointReading.read(path: path, format: format, notes: &notes)
    }

    @Test("pickles naming dangerous globals are refused by name, nothing runs")
    func forbiddenGlobals() {
        #expect(
            throws: ImportError.forbiddenGlobal(path: HostileFileTests.folder + "os_system.pt:os_system/data.pkl", name: "posix.system")
        ) {
            try read("os_system.pt")
        }
        // Protocol 2 spells builtins as __builtin__.
        #expect(
            throws: ImportError.forbiddenGlobal(
                path: HostileFileTests.folder + "builtins_eval.pt:builtins_eval/data.pkl", name: "__builtin__.eval")
        ) {
            try read("builtins_eval.pt")
        }
        #expect {
            try read("subprocess_call.pt")
        } throws: { error in
            if case ImportError.forbiddenGlobal(_, let name) = error { return name.hasSuffix(".call") }
            return false
        }
        #expect(throws: ImportError.self) { try read("whole_module.pt") }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/mmoe-owned"))
    }

    @Test(
        "resource limits: nesting, memo, sizes, bombs",
        arguments: [
            "deep_nesting.pt", "memo_flood.pt", "memo_undefined.pt", "huge_size.pt", "truncated.pt", "zip_bomb_understated.npz",
            "zip_bomb_declared.npz",
        ])
    func limits(file: String) {
        #expect(throws: ImportError.self) { try read(file) }
    }

    @Test(
        "safetensors violations",
        arguments: [
            "st_overlap.safetensors", "st_gap.safetensors", "st_trailing.safetensors", "st_header_past_end.safetensors",
            "st_header_too_big.safetensors",
            "st_bad_dtype.safetensors", "st_size_mismatch.safetensors", "st_offsets_outside.safetensors", "st_not_json.safetensors",
        ])
    func safetensors(file: String) {
        #expect(throws: ImportError.self) { _ = try SafetensorsReader.read(path: HostileFileTests.folder + file) }
    }

    @Test("a raw legacy pickle is explained")
    func legacy() {
        #expect(
            throws: ImportError.unsupported(
                path: HostileFileTests.folder + "not_a_zip.pt",
                reason:
                    "a legacy (pre-1.6, non-zip) torch.save file; re-save it with a recent torch: torch.save(model.state_dict(), "
                    + "'model.pt')"
            )
        ) {
            _ = try SourceFormat.detect(path: HostileFileTests.folder + "not_a_zip.pt")
        }
    }

    @Test("specific limits report what they limit")
    func limitKinds() {
        #expect {
            try read("deep_nesting.pt")
        } throws: { error in
            if case ImportError.limitExceeded(_, let what, _) = error { return what.contains("nesting") }
            return false
        }
        #expect {
            try read("memo_flood.pt")
        } throws: { error in
            if case ImportError.limitExceeded(_, let what, _) = error { return what.contains("memo") }
            return false
        }
        #expect {
            try read("zip_bomb_understated.npz")
        } throws: { error in
            if case ImportError.limitExceeded(_, let what, _) = error { return what.contains("expansion") }
            return false
        }
    }

    @Test("every truncation of a torch.save archive and a safetensors file is a typed error")
    func truncations() throws {
        for source in ["rechub_mmoe/model.pt", "rechub_mmoe/model.safetensors"] {
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/torch/" + source)))
            for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 300)) {
                let storage = ByteStorage(copying: Array(bytes[0..<cut]))
                if source.hasSuffix(".pt") {
                    #expect(throws: ImportError.self, "cut \(cut)") {
                        let zip = try ZipArchive(storage: storage, path: "t.pt")
                        guard let entry = zip.entries.first(where: { $0.name.hasSuffix("data.pkl") }) else {
                            throw ImportError.malformed(path: "t", offset: nil, reason: "no pickle")
                        }
                        var reader = TorchPickleReader(bytes: try zip.data(entry, limit: 1 << 20), path: "t")
                        defer { reader.tearDown() }
                        _ = try reader.run()
                        // The central directory survived: the data members must be missing or cut.
                        throw ImportError.malformed(path: "t", offset: nil, reason: "read a truncated file")
                    }
                } else {
                    #expect(throws: ImportError.self, "cut \(cut)") {
                        _ = try SafetensorsReader.read(storage: storage, path: "t.safetensors")
                    }
                }
            }
        }
    }

    @Test("pickle opcodes outside the state_dict subset are refused")
    func opcodes() {
        for program: [UInt8] in [
            [0x80, 0x02, 0x63] + Array("os\nsystem\n".utf8) + [0x2E],  // GLOBAL os.system
            [0x80, 0x02, 0x69] + Array("os\nsystem\n".utf8) + [0x2E],  // INST
            [0x80, 0x02, 0x4E, 0x4E, 0x52, 0x2E],  // REDUCE on None
            [0x80, 0x02, 0x28, 0x74],  // no STOP
            [0x80, 0x02, 0x2E],  // STOP on empty stack
            [0x80, 0x02, 0x8A, 0x09, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0x2E],  // 72-bit LONG1
            [0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x2E],  // string past the end
        ] {
            var reader = TorchPickleReader(bytes: program, path: "p")
            #expect(throws: ImportError.self) { _ = try reader.run() }
            reader.tearDown()
        }
    }
}
