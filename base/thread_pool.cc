#include "base/thread_pool.h"

#include <algorithm>
#include <cstdlib>

namespace tritmoe {

namespace {
// A waiting thread first spins (a new job usually follows within microseconds), then yields the
// core on every check (free when nothing else wants it; when ranks or other processes share the
// cores, the thread doing the serial work between loops gets to run), then sleeps.
constexpr int kSpinIterations = 1 << 10;
constexpr int kYieldIterations = 1 << 12;
// Chunks per thread: enough that a late thread's share is taken by the others, few enough that
// the per-chunk cost (an atomic claim, cache-line traffic) stays invisible.
constexpr int64_t kChunksPerThread = 4;
constexpr int kCursorBits = 20;
constexpr uint64_t kCursorMask = (uint64_t{1} << kCursorBits) - 1;
constexpr int64_t kMaxChunks = int64_t{1} << kCursorBits;

inline void CpuRelax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#endif
}

// Spins for the first kSpinIterations calls, yields after that.
inline void Wait(int iteration) {
  if (iteration < kSpinIterations) {
    CpuRelax();
  } else {
    std::this_thread::yield();
  }
}

uint64_t ClaimWord(uint64_t job, uint64_t n_chunks, uint64_t next) {
  return (job << (2 * kCursorBits)) | (n_chunks << kCursorBits) | next;
}
}  // namespace

int DefaultThreadCount() {
  if (const char* env = std::getenv("TRITMOE_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(int index) {
  for (;;) {
    uint64_t word = claim_.load(std::memory_order_acquire);
    const uint64_t next = word & kCursorMask;
    const uint64_t count = (word >> kCursorBits) & kCursorMask;
    if (next >= count) return;
    if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      continue;
    }
    // The claim succeeded on this job's word, so the job fields are this job's and stay so until
    // this chunk is counted done.
    const int64_t begin = static_cast<int64_t>(next) * job_chunk_;
    const int64_t end = std::min(job_n_, begin + job_chunk_);
    (*job_)(begin, end, index);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  if (n_threads_ == 1 || n <= grain) {
    fn(0, n, 0);
    return;
  }
  const int64_t units = (n + grain - 1) / grain;
  const int64_t want = std::min({units, n_threads_ * kChunksPerThread, kMaxChunks - 1});
  const int64_t units_per_chunk = (units + want - 1) / want;
  const int64_t n_chunks = (units + units_per_chunk - 1) / units_per_chunk;
  job_ = &fn;
  job_n_ = n;
  job_chunk_ = units_per_chunk * grain;
  done_.store(0, std::memory_order_relaxed);
  job_id_ = (job_id_ + 1) & ((uint64_t{1} << (64 - 2 * kCursorBits)) - 1);
  claim_.store(ClaimWord(job_id_, static_cast<uint64_t>(n_chunks), 0), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  RunChunks(0);
  for (int i = 0; done_.load(std::memory_order_acquire) != n_chunks; ++i) Wait(i);
  job_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int i = 0; gen == seen && i < kSpinIterations + kYieldIterations; ++i) {
      Wait(i);
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = gen;
    RunChunks(index);
  }
}

}  // namespace tritmoe
