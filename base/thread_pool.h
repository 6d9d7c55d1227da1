// A fixed pool of worker threads for data-parallel loops on the CPU.
//
// ParallelFor splits [0, n) into one contiguous chunk per thread (the caller's thread takes chunk
// 0) and returns when every chunk is done. Workers spin briefly before sleeping, because decode
// issues thousands of short loops per token and a sleep/wake per loop would cost more than the work.
// Not reentrant: a ParallelFor body must not call ParallelFor on the same pool.
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
  // `grain` except the last.
  void ParallelFor(int64_t n, int64_t grain,
                   const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  void WorkerLoop(int index);
  void RunChunk(int index);

  const int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ = false;  // guarded by mu_
  // The current job; written by the caller before generation_ is bumped.
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_grain_ = 1;
};

// The default thread count: TRITMOE_THREADS if set, else the number of online cores.
int DefaultThreadCount();

}  // namespace tritmoe
