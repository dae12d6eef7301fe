import Foundation
import MMoEHDF5
import MMoEImport
import MMoETestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A file must never make the converter read another file: ONNX external data and TF data
/// shards are opened component by component beneath the model's folder (no symbolic link,
/// regular files only), and HDF5 files are scanned for external links, external storage and
/// virtual datasets before anything is read. (Issue 14, high severity.)
@Suite("Files that reference other files")
struct ForeignFileTests {
    static let foreign = fixturesPath + "/hostile/foreign/"

    static func message(_ body: () throws -> Void) -> String? {
        do { try body() } catch { return "\(error)" }
        return nil
    }

    /// A copy of an ONNX export whose external-data location `model.dynamo.onnx.data` is
    /// rewritten to `location` (same length, so the protobuf stays valid).
    static func onnxCopy(_ fixture: String, location: String, in folder: TemporaryFolder) throws -> String {
        let original = "model.dynamo.onnx.data"
        try #require(location.utf8.count == original.utf8.count)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: fixturesPath + "/torch/\(fixture)/model.dynamo.onnx"))
        let from = Data(original.utf8)
        var replaced = 0
        var start = bytes.startIndex
        while let range = bytes.range(of: from, in: start..<bytes.endIndex) {
            bytes.replaceSubrange(range, with: Data(location.utf8))
            start = range.upperBound
            replaced += 1
        }
        try #require(replaced > 0)
        try bytes.write(to: URL(fileURLWithPath: folder.file("model.onnx")))
        return folder.file("model.onnx")
    }

    @Test("ONNX external data through a symbolic-linked directory is refused; a real subfolder converts")
    func onnxSymlinkedDirectory() throws {
        let fixture = "rechub_mmoe"
        let data = fixturesPath + "/torch/\(fixture)/model.dynamo.onnx.data"
        let spec = fixturesPath + "/torch/\(fixture)/conversion.json"
        let outside = try TemporaryFolder()
        defer { outside.remove() }
        try FileManager.default.copyItem(atPath: data, toPath: outside.file("model.dynamo.onnx.da"))

        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let model = try Self.onnxCopy(fixture, location: "l/model.dynamo.onnx.da", in: folder)
        try FileManager.default.createSymbolicLink(atPath: folder.file("l"), withDestinationPath: outside.path)
        let error = try #require(Self.message { _ = try ModelImporter.load(path: model, conversionSpecPath: spec) })
        #expect(error.contains("'l' is a symbolic link or not a directory"), "\(error)")

        // The same layout with a real directory inside the model's folder converts.
        try FileManager.default.removeItem(atPath: folder.file("l"))
        try FileManager.default.createDirectory(atPath: folder.file("l"), withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: data, toPath: folder.file("l/model.dynamo.onnx.da"))
        _ = try ModelImporter.load(path: model, conversionSpecPath: spec)

        // A symbolic link as the data file itself.
        try FileManager.default.removeItem(atPath: folder.file("l/model.dynamo.onnx.da"))
        try FileManager.default.createSymbolicLink(
            atPath: folder.file("l/model.dynamo.onnx.da"), withDestinationPath: outside.file("model.dynamo.onnx.da"))
        let link = try #require(Self.message { _ = try ModelImporter.load(path: model, conversionSpecPath: spec) })
        #expect(link.contains("symbolic link"), "\(link)")
    }

    @Test("a FIFO where ONNX external data or a TF data shard is expected is refused at once")
    func fifos() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let model = try Self.onnxCopy("rechub_mmoe", location: "model.dynamo.onnx.data", in: folder)
        #expect(mkfifo(folder.file("model.dynamo.onnx.data"), 0o600) == 0)
        let onnx = try #require(
            Self.message {
                _ = try ModelImporter.load(path: model, conversionSpecPath: fixturesPath + "/torch/rechub_mmoe/conversion.json")
            })
        #expect(onnx.contains("not a regular file"), "\(onnx)")

        let source = fixturesPath + "/keras/deepctr_ple/tf_checkpoint/"
        try FileManager.default.copyItem(atPath: source + "model.index", toPath: folder.file("model.index"))
        #expect(mkfifo(folder.file("model.data-00000-of-00001"), 0o600) == 0)
        let shard = try #require(Self.message { _ = try TFCheckpointReader.read(path: folder.file("model.index")) })
        #expect(shard.contains("not a regular file"), "\(shard)")
        // A FIFO named as the model itself.
        #expect(mkfifo(folder.file("fifo.pt"), 0o600) == 0)
        let direct = try #require(Self.message { _ = try ModelImporter.load(path: folder.file("fifo.pt")) })
        #expect(direct.contains("not a regular file"), "\(direct)")
    }

    @Test("a TF data shard that is a symbolic link is refused")
    func tfShardSymlink() throws {
        let folder = try TemporaryFolder()
        defer { folder.remove() }
        let source = fixturesPath + "/keras/deepctr_ple/tf_checkpoint/"
        try FileManager.default.copyItem(atPath: source + "model.index", toPath: folder.file("model.index"))
        try FileManager.default.createSymbolicLink(
            atPath: folder.file("model.data-00000-of-00001"), withDestinationPath: source + "model.data-00000-of-00001")
        let error = try #require(Self.message { _ = try TFCheckpointReader.read(path: folder.file("model.index")) })
        #expect(error.contains("symbolic link"), "\(error)")
    }

    @Test(
        "our HDF5 layout: external links (at /tensors, at /spec), external storage and virtual datasets are refused, naming the object",
        arguments: [
            ("ours_link_at_tensors.h5", "'/tensors': an external link"), ("ours_link_at_spec.h5", "'/spec': an external link"),
            ("ours_external_storage.h5", "'/tensors/experts/0/layers/0/weight': a dataset whose data lives in other files"),
            ("ours_external_storage_absolute.h5", "'/tensors/experts/0/layers/0/weight': a dataset whose data lives in other files"),
            ("ours_virtual.h5", "'/tensors/experts/0/layers/0/weight': a virtual dataset"),
            ("deep_groups.h5", "nested deeper than 64 levels"),
        ])
    func ourLayout(file: String, expected: String) throws {
        // The referenced files are next to the hostile ones: a reader that followed them would succeed.
        #expect(FileManager.default.fileExists(atPath: Self.foreign + "secret.h5"))
        let error = try #require(Self.message { _ = try HDF5Codec.read(path: Self.foreign + file) })
        #expect(error.contains(expected), "\(error)")
        let imported = try #require(Self.message { _ = try ModelImporter.load(path: Self.foreign + file, format: .h5) })
        #expect(imported.contains(expected), "\(imported)")
    }

    @Test(
        "Keras files: external links, external storage and virtual datasets are refused, also inside a .keras archive",
        arguments: [
            ("keras_link_at_layer.h5", "'/expert_0': an external link"),
            ("keras_external_storage.h5", "'/expert_0/expert_0/kernel0:0': a dataset whose data lives in other files"),
            ("keras_virtual.h5", "'/expert_0/expert_0/kernel0:0': a virtual dataset"),
            ("keras3_archive_link.keras", "keras3_archive_link.keras:model.weights.h5: '/layers/dnn': an external link"),
        ])
    func keras(file: String, expected: String) throws {
        let spec = fixturesPath + "/keras/deepctr_mmoe/conversion.json"
        let error = try #require(Self.message { _ = try ModelImporter.load(path: Self.foreign + file, conversionSpecPath: spec) })
        #expect(error.contains(expected), "\(error)")
    }
}
