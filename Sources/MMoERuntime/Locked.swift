import Foundation

/// A value behind a lock, for the state the runtime's threads share (scratch areas, a batch's
/// chunk counter, counts of unknown ids, cached ranking plans).
///
/// The lock is a pthread mutex (`NSLock`), which ThreadSanitizer understands: it cannot see
/// the synchronisation inside the standard library's `Mutex` on Linux and reports every access
/// it protects as a race once the threads no longer meet through Dispatch (`WorkerPool`).
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    func withLock<Result, E: Error>(_ body: (inout Value) throws(E) -> Result) throws(E) -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
