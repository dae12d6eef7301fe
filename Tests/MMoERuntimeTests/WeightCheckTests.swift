import MMoECore
import MMoERuntime
import MMoETestSupport
import Testing

/// Weights are read once, while the runtime packs them (or stacks them for BLAS): an infinity
/// or NaN anywhere in a linear weight is refused at load, naming the tensor and element, on
/// every path — f32 read from the file, a folded batch norm, an f16 tensor widened first.
@Suite("Non-finite weights are refused at load")
struct WeightCheckTests {
    let spec = SampleSpecs.mmoe

    func refusal(_ name: String, index: Int, value: Float, dtype: DType = .f32) throws -> ModelError? {
        var tensors = try randomTensors(for: spec, seed: 9)
        let original = try #require(tensors[name])
        var values = original.floats()
        values[index] = value
        tensors.set(try Tensor(float32: values, shape: original.shape).converted(to: dtype), named: name)
        do {
            _ = try Model(spec: spec, tensors: tensors)
            return nil
        } catch {
            return error
        }
    }

    @Test("an expert's first weight, with its batch norm folded in")
    func foldedExpert() throws {
        let name = "experts.1.layers.0.weight"
        #expect(try refusal(name, index: 13, value: .nan) == .nonFiniteTensor(name: name, index: 13))
        #expect(try refusal(name, index: 0, value: -.infinity) == .nonFiniteTensor(name: name, index: 0))
    }

    @Test("a gate's second, bias-less layer; a tower's layer stored as f16")
    func otherLayers() throws {
        let gate = "gates.1.layers.2.weight"
        #expect(try refusal(gate, index: 7, value: .infinity) == .nonFiniteTensor(name: gate, index: 7))
        let tower = "towers.0.layers.0.weight"
        #expect(try refusal(tower, index: 3, value: .nan, dtype: .f16) == .nonFiniteTensor(name: tower, index: 3))
    }

    @Test("a layer packed by several threads: the tensor's first non-finite element, in either thread's rows")
    func parallelPacking() throws {
        // The fused first layer is 600 x 1,058 float32 (2.5 MB): each expert's rows are packed
        // in runs of whole panels, one per thread (rows 0-255 and 256-519 with two threads).
        let wide = KernelPathTests.large
        let clean = try randomTensors(for: wide, seed: 3)
        func refusal(_ changes: [(name: String, index: Int)]) throws -> ModelError? {
            var tensors = clean
            for change in changes {
                let original = try #require(tensors[change.name])
                var values = original.floats()
                values[change.index] = .nan
                tensors.set(try Tensor(float32: values, shape: original.shape), named: change.name)
            }
            do {
                _ = try Model(spec: wide, tensors: tensors)
                return nil
            } catch {
                return error
            }
        }
        let first = "experts.0.layers.0.weight"
        let second = "experts.1.layers.0.weight"
        #expect(try refusal([]) == nil)
        #expect(try refusal([(first, 300 * 600 + 5)]) == .nonFiniteTensor(name: first, index: 300 * 600 + 5))
        #expect(try refusal([(first, 300 * 600 + 5), (first, 10 * 600 + 7)]) == .nonFiniteTensor(name: first, index: 10 * 600 + 7))
        #expect(try refusal([(second, 519 * 600 + 599), (first, 300 * 600)]) == .nonFiniteTensor(name: first, index: 300 * 600))
        #expect(try refusal([(second, 519 * 600 + 599)]) == .nonFiniteTensor(name: second, index: 519 * 600 + 599))
    }

    @Test("finite weights load")
    func finite() throws {
        #expect(try refusal("experts.1.layers.0.weight", index: 13, value: 1e30) == nil)
    }
}
