#include "base/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace tritmoe {
namespace {

TEST(ThreadPoolTest, EveryIndexVisitedExactlyOnce) {
  for (int threads : {1, 2, 3, 7}) {
    ThreadPool pool(threads);
    for (int64_t n : {0, 1, 5, 63, 64, 65, 1000}) {
      for (int64_t grain : {1, 4, 64}) {
        std::vector<std::atomic<int>> hits(n);
        pool.ParallelFor(n, grain, [&](int64_t b, int64_t e, int t) {
          EXPECT_GE(t, 0);
          EXPECT_LT(t, threads);
          EXPECT_TRUE(b % grain == 0) << b;
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
      }
    }
  }
}

TEST(ThreadPoolTest, ManyShortLoopsInARow) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int iter = 0; iter < 20000; ++iter) {
    pool.ParallelFor(2, 1, [&](int64_t b, int64_t e, int) { sum.fetch_add(e - b); });
  }
  EXPECT_EQ(sum.load(), 40000);
}

// A worker that stalls inside its chunk (as when the OS deschedules it) must not stall the rest:
// the caller takes every other chunk. With a fixed share per thread this would wait forever.
TEST(ThreadPoolTest, StalledWorkerDoesNotHoldOtherChunks) {
  ThreadPool pool(2);
  constexpr int64_t kChunks = 8;
  std::atomic<int64_t> done_by_caller{0};
  std::atomic<bool> stalled_gave_up{false};
  std::vector<std::atomic<int>> hits(kChunks);
  pool.ParallelFor(kChunks, 1, [&](int64_t b, int64_t e, int t) {
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
    if (t == 0) {
      done_by_caller.fetch_add(e - b);
      return;
    }
    // The worker waits until the caller has done every chunk but its own (bounded, so a broken
    // pool fails the test instead of hanging it).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (done_by_caller.load() < kChunks - (e - b)) {
      if (std::chrono::steady_clock::now() > deadline) {
        stalled_gave_up = true;
        return;
      }
      std::this_thread::yield();
    }
  });
  EXPECT_FALSE(stalled_gave_up.load());
  for (int64_t i = 0; i < kChunks; ++i) EXPECT_EQ(hits[i].load(), 1) << i;
}

}  // namespace
}  // namespace tritmoe
