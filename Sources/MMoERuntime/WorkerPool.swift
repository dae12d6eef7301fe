import CMMoEKernels
import Foundation
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
        let taken = Mutex<UInt64>(0)
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
            return taken.withLock { taken -> Int? in
                let all: UInt64 = parts == 64 ? ~0 : (1 << UInt64(parts)) - 1
                guard taken & all != all else { return nil }
                let share = taken & (1 << UInt64(preferred)) == 0 ? preferred : (~taken).trailingZeroBitCount
                taken |= 1 << UInt64(share)
                return share
            }
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

    /// The job workers may join and how many workers exist.
    private struct State {
        var job: Unmanaged<Job>?
        var workers = 0
    }

    private let state = Mutex(State())
    /// Bumped for every job published; workers poll it.
    private let generation = Atomic<Int>(0)
    /// Workers inside a job's `work()` (the caller waits for them before the job ends).
    private let inside = Atomic<Int>(0)
    /// Workers that are, or are about to be, asleep on `wake`.
    private let sleepers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let wake = DispatchSemaphore(value: 0)

    /// Runs `job` with the workers; false when another caller has them.
    private func execute(_ job: Job) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        let missing = state.withLock { state -> Int in
            let missing = max(0, job.parts - 1 - state.workers)
            state.workers += missing
            state.job = Unmanaged.passUnretained(job)
            return missing
        }
        for _ in 0..<missing {
            let thread = Thread { [self] in self.serve() }
            thread.name = "swift-mmoe worker"
            thread.start()
        }
        generation.add(1, ordering: .sequentiallyConsistent)
        let asleep = sleepers.exchange(0, ordering: .sequentiallyConsistent)
        for _ in 0..<asleep { wake.signal() }
        job.work()
        while job.done.load(ordering: .acquiring) < job.parts { mmoe_spin_pause() }
        state.withLock { $0.job = nil }
        // A worker that took the job before it was withdrawn may still be inside `work()`.
        while inside.load(ordering: .acquiring) > 0 { mmoe_spin_pause() }
        return true
    }

    /// A worker's loop: wait for a new job (polling, then asleep), join it.
    private func serve() {
        var seen = generation.load(ordering: .acquiring)
        while true {
            var current = generation.load(ordering: .acquiring)
            if current == seen {
                let deadline = WorkerPool.now() &+ WorkerPool.spinNanoseconds
                var polls = 0
                while current == seen {
                    mmoe_spin_pause()
                    current = generation.load(ordering: .acquiring)
                    polls += 1
                    if polls & 63 == 0, WorkerPool.now() >= deadline { break }
                }
                if current == seen {
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    if generation.load(ordering: .sequentiallyConsistent) == seen { wake.wait() }
                    continue
                }
            }
            seen = current
            let job = state.withLock { state -> Unmanaged<Job>? in
                guard let job = state.job else { return nil }
                inside.add(1, ordering: .relaxed)
                return job
            }
            guard let job else { continue }
            job._withUnsafeGuaranteedRef { $0.work() }
            inside.subtract(1, ordering: .releasing)
        }
    }

    private static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }
}
