/// Copies a strided n-dimensional view into row-major order: the one routine behind
/// non-contiguous torch tensors and Fortran-ordered NumPy arrays. Indices must already be
/// checked to lie inside `source`.
func copyStrided(_ source: UnsafeRawBufferPointer, shape: [Int], strides: [Int], offset: Int, itemSize: Int) -> [UInt8] {
    let count = shape.reduce(1, *)
    var output = [UInt8](repeating: 0, count: count * itemSize)
    var index = [Int](repeating: 0, count: shape.count)
    for element in 0..<count {
        var position = offset
        for axis in 0..<shape.count { position += index[axis] * strides[axis] }
        for b in 0..<itemSize { output[element * itemSize + b] = source[position * itemSize + b] }
        var axis = shape.count - 1
        while axis >= 0 {
            index[axis] += 1
            if index[axis] < shape[axis] { break }
            index[axis] = 0
            axis -= 1
        }
    }
    return output
}
