import Foundation
import MMoEImport
import MMoETestSupport
import Testing

@Suite("Reader memory layouts")
struct ReaderLayoutTests {
    @Test("a Fortran-ordered .npz array reads in C order")
    func fortran() throws {
        let arrays = try NumpyArchive.read(path: fixturesPath + "/misc/fortran.npz")
        let x = try #require(arrays["x"])
        #expect(x.shape == [2, 3, 4])
        let expected: [Float] = (0..<24).map { Float($0) }  // np.arange(24).reshape(2, 3, 4)
        #expect(x.floats() == expected)
    }

    @Test("non-contiguous torch views and shared storages read as their values")
    func torchViews() throws {
        let (checkpoint, _) = try TorchArchiveReader.read(path: fixturesPath + "/misc/views.pt")
        // base = arange(12).reshape(3, 4)
        let base: [Float] = (0..<12).map { Float($0) }
        let transposed = try #require(checkpoint["transposed"])
        #expect(transposed.shape == [4, 3])
        var expectedTransposed: [Float] = []
        for c in 0..<4 { for r in 0..<3 { expectedTransposed.append(base[r * 4 + c]) } }
        #expect(transposed.floats() == expectedTransposed)
        let row = try #require(checkpoint["row"]).floats()
        #expect(row == Array(base[4..<8]))
        let strided = try #require(checkpoint["strided"])
        #expect(strided.shape == [3, 2])
        var expectedStrided: [Float] = []
        for r in 0..<3 { expectedStrided += [base[r * 4], base[r * 4 + 2]] }
        #expect(strided.floats() == expectedStrided)
    }
}
