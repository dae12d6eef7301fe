import CBLAS

/// The number of threads the matrix multiplies use (OpenBLAS's pool; process-wide).
public enum ComputeThreads {
    /// Sets the thread count for later predictions (1 ... cores).
    public static func set(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, min(count, 1024))))
    }

    /// The current thread count.
    public static var current: Int { Int(openblas_get_num_threads()) }
}
