// A fixed pool of worker threads for data-parallel loops on the CPU.
//
// ParallelFor splits [0, n) into a few contiguous chunks per thread and returns when every chunk is
// done. Chunks are claimed dynamically (an atomic counter) by the caller and the workers, so a
// worker that the OS has descheduled -- common when ranks or other processes share the cores --
// only delays the chunk it already holds; the others run on whoever is awake instead of the caller
// spinning on a fixed share. Workers spin (then yield) briefly before sleeping, because decode
// issues thousands of short loops per token and a sleep/wake per loop would cost more than the
// work. Not reentrant: a ParallelFor body must not call ParallelFor on the same pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tritmoe {

class ThreadPool {
 public:
  // n_threads counts the calling thread: 1 means no workers at all.
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // fn(begin, end, thread_index) for each non-empty chunk of [0, n). Chunks are multiples of
  // `grain` except the last. thread_index (0 = the caller) is unique among the threads running
  // chunks at the same time, so it may index per-thread scratch; one thread may run several chunks.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void WorkerLoop(int index);
  // Claims and runs chunks of the current job until none is left.
  void RunChunks(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};  // bumped per job (and at stop) to wake workers
  std::atomic<bool> stop_{false};
  // Claim word of the current job: job id (bits 40..63), chunk count (20..39), next chunk (0..19).
  // Count and cursor share one word so a claim can never mix one job's cursor with another's count.
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};  // chunks of the current job finished
  uint64_t job_id_ = 0;           // caller only
  // The current job; written by the caller before claim_ is published, stable until done_ reaches
  // its chunk count.
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 1;  // elements per chunk
};

// The default thread count: TRITMOE_THREADS if set, else the number of online cores.
int DefaultThreadCount();

}  // namespace tritmoe
