import CHDF5
import Foundation

/// The single gateway to libhdf5: every call runs under one process-wide lock (HDF5's error
/// stack is global state) and every failure becomes an `HDF5Error` carrying HDF5's stack.
enum HDF5Library {
    private static let lock: NSRecursiveLock = {
        let lock = NSRecursiveLock()
        lock.lock()
        _ = H5open()
        _ = mmoe_h5_silence_errors()
        lock.unlock()
        return lock
    }()

    /// Runs `body` holding the library lock.
    static func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        let lock = self.lock
        lock.lock()
        defer { lock.unlock() }
        // A thread-safe libhdf5 keeps the automatic error printing per thread: silence it on
        // the calling thread every time (cheap), so no path prints HDF5-DIAG to stderr.
        _ = mmoe_h5_silence_errors()
        return try body()
    }

    /// HDF5's current error stack as one line (and clears it).
    static func stackText() -> String {
        var buffer = [CChar](repeating: 0, count: 2048)
        buffer.withUnsafeMutableBufferPointer { mmoe_h5_error_describe($0.baseAddress, $0.count) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Throws for a negative identifier or status.
    @discardableResult
    static func check(_ value: Int64, path: String, _ operation: String, _ object: String? = nil) throws(HDF5Error) -> Int64 {
        guard value >= 0 else { throw .library(path: path, operation: operation, object: object, stack: stackText()) }
        return value
    }

    @discardableResult
    static func check(_ value: Int32, path: String, _ operation: String, _ object: String? = nil) throws(HDF5Error) -> Int32 {
        guard value >= 0 else { throw .library(path: path, operation: operation, object: object, stack: stackText()) }
        return value
    }
}

/// An HDF5 identifier closed exactly once when the handle dies (under the library lock).
final class HDF5Handle {
    let id: hid_t
    private let closer: (hid_t) -> herr_t

    init(_ id: hid_t, closer: @escaping (hid_t) -> herr_t) {
        self.id = id
        self.closer = closer
    }

    deinit {
        let id = id
        let closer = closer
        HDF5Library.locked { _ = closer(id) }
    }

    static func file(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Fclose) }
    static func group(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Gclose) }
    static func dataset(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Dclose) }
    static func space(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Sclose) }
    static func type(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Tclose) }
    static func attribute(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Aclose) }
    static func plist(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Pclose) }
    static func object(_ id: hid_t) -> HDF5Handle { HDF5Handle(id, closer: H5Oclose) }
}
