import CMMoEKernels
import Foundation
import MMoECore
import Synchronization

/// The runtime's threads for its parallel sections: the batch-1 weight splits, the row chunks of
/// large batches, row-parallel epilogues.
///
/// A parallel section of a batch-1 prediction lasts a few microseconds; waking a sleeping thread
/// (Dispatch's pool) took 10–20 µs of it (measured per step on the benchmark model: the 170 ×
/// 2,080 first layer split over two threads took 31 µs where each half is 15 µs of work). So the
/// workers here keep polling for the next section for a short while after each one
/// (`MMOE_SPIN_US` microseconds, default 100; 0 sleeps at once) before they sleep, as ONNX
/// Runtime's and OpenMP's pools do.
///
/// Shares follow cores: a thread takes the share numbered after the CPU it runs on
/// (`sched_getcpu() % parts`) when that one is free, so that call after call the same core
/// reads the same part of the weights and keeps it in its own L2 (the benchmark model's fp32
/// weights, 2.5 MB, do not fit one core's 2 MB L2; half of them do).
///
/// One caller uses the workers at a time; a section started while they are busy (another
/// thread predicting) runs on Dispatch's pool instead.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()

    /// How long a worker polls for the next section before it sleeps, in nanoseconds.
    static let spinNanoseconds: UInt64 = {
        guard let text = getenv("MMOE_SPIN_US").map({ String(cString: $0) }), !text.isEmpty else { return 100_000 }
        guard let value = UInt64(text), value <= 1_000_000 else {
            let message = "swift-mmoe: MMOE_SPIN_US=\(text) is not a whole number of microseconds up to 1000000; using 100\n"
            FileHandle.standardError.write(Data(message.utf8))
            return 100_000
        }
        return value * 1_000
    }()

    /// Runs `body(share)` for every share in `0 ..< parts`, on up to `parts` threads at once
    /// (the caller's among them); returns when all are done.
    static func run(parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 {
            if parts == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let job = Job(body: body, parts: parts)
            if parts > 64 || !shared.execute(job) {
                DispatchQueue.concurrentPerform(iterations: parts) { _ in job.work() }
            }
        }
    }

    /// A parallel section: its body and which of its shares are taken and done.
    final class Job: @unchecked Sendable {
        let body: (Int) -> Void
        let parts: Int
        /// One bit per share taken.
        let taken = Atomic<UInt64>(0)
        let done = Atomic<Int>(0)

        init(body: @escaping (Int) -> Void, parts: Int) {
            self.body = body
            self.parts = parts
        }

        /// The next share for the calling thread: its core's when free, else the lowest free
        /// one; nil when all are taken.
        func claim() -> Int? {
            let cpu = Int(mmoe_current_cpu())
            let preferred = cpu >= 0 ? cpu % parts : 0
            let all: UInt64 = parts == 64 ? ~0 : (1 << UInt64(parts)) - 1
            var current = taken.load(ordering: .relaxed)
            while current & all != all {
                let share = current & (1 << UInt64(preferred)) == 0 ? preferred : (~current).trailingZeroBitCount
                let (exchanged, original) = taken.compareExchange(
                    expected: current, desired: current | 1 << UInt64(share), ordering: .acquiringAndReleasing)
                if exchanged { return share }
                current = original
            }
            return nil
        }

        /// Runs shares until none is left.
        @inline(never)
        func work() {
            while let share = claim() {
                body(share)
                done.add(1, ordering: .releasing)
            }
        }
    }

    /// The job workers may join (an unretained `Job`'s address; 0: none). The caller keeps the
    /// job alive until no worker is inside it.
    private let published = Atomic<UInt>(0)
    /// Bumped for every job published; workers poll it.
    private let generation = Atomic<Int>(0)
    /// Workers that announced they are entering the published job (the caller waits for them).
    private let inside = Atomic<Int>(0)
    /// Workers that are, or are about to be, asleep on `wake`.
    private let sleepers = Atomic<Int>(0)
    /// Whether a caller has the workers (`workers` is only touched by that caller).
    private let busy = Atomic<Bool>(false)
    private var workers = 0
    private let wake = DispatchSemaphore(value: 0)
    /// Workers at most: one fewer than the CPUs this process may run on (polling threads beyond
    /// the cores would take time from the ones doing the work).
    private static let maximumWorkers = max(0, ProcessInfo.processInfo.activeProcessorCount - 1)

    /// Runs `job` with the workers; false when another caller has them.
    private func execute(_ job: Job) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        let wanted = min(job.parts - 1, WorkerPool.maximumWorkers)
        while workers < wanted {
            let thread = Thread { [self] in self.serve() }
            thread.name = "swift-mmoe worker"
            thread.start()
            workers += 1
        }
        published.store(UInt(bitPattern: Unmanaged.passUnretained(job).toOpaque()), ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        let asleep = sleepers.exchange(0, ordering: .sequentiallyConsistent)
        for _ in 0..<asleep { wake.signal() }
        job.work()
        WorkerPool.wait { job.done.load(ordering: .acquiring) >= job.parts }
        published.store(0, ordering: .sequentiallyConsistent)
        // A worker that saw the job before it was withdrawn may still be inside `work()`.
        WorkerPool.wait { inside.load(ordering: .sequentiallyConsistent) == 0 }
        return true
    }

    /// Polls `ready` until it holds, yielding the core now and then (a thread this one waits
    /// for may be waiting for it).
    private static func wait(until ready: () -> Bool) {
        var polls = 0
        while !ready() {
            mmoe_spin_pause()
            polls += 1
            if polls & 1023 == 0 { sched_yield() }
        }
    }

    /// A worker's loop: wait for a new job (polling, then asleep), join it.
    private func serve() {
        var seen = generation.load(ordering: .acquiring)
        while true {
            var current = generation.load(ordering: .acquiring)
            if current == seen {
                let deadline = monotonicNanoseconds() &+ WorkerPool.spinNanoseconds
                var polls = 0
                while current == seen {
                    mmoe_spin_pause()
                    current = generation.load(ordering: .acquiring)
                    polls += 1
                    if polls & 63 == 0, monotonicNanoseconds() >= deadline { break }
                }
                if current == seen {
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    if generation.load(ordering: .sequentiallyConsistent) == seen { wake.wait() }
                    continue
                }
            }
            seen = current
            // Announce first, then look: the caller withdraws the job, then waits until no
            // announced worker is left, so a job seen here is alive until `inside` drops.
            inside.add(1, ordering: .sequentiallyConsistent)
            let address = published.load(ordering: .sequentiallyConsistent)
            if let pointer = UnsafeRawPointer(bitPattern: address) {
                Unmanaged<Job>.fromOpaque(pointer)._withUnsafeGuaranteedRef { $0.work() }
            }
            inside.subtract(1, ordering: .releasing)
        }
    }
}
