// The scheduler against a fake engine (fake_engine.h): every request's output equals what the
// fake model gives it alone (no lost, duplicated or interleaved tokens) however requests are
// batched; steps respect the token budget and the sequence limit; prefill is chunked and mixed
// with decodes; requests join and leave between steps; cancel, abort, deadlines, a full queue,
// shutdown and an engine failure each end requests the documented way.
#include "runtime/serve/scheduler.h"

#include <chrono>
#include <thread>
#include <vector>

#include "fake_engine.h"
#include "gtest/gtest.h"
#include "prom_text.h"
#include "runtime/serve/request_stream.h"

namespace tritmoe {
namespace {

using ::tritmoe::testing::FakeEngine;
using ::tritmoe::testing::FakeReference;
using ::tritmoe::testing::FakeStepRecord;
using ::tritmoe::testing::LetterToken;
using ::tritmoe::testing::PromValue;

// Runs a scheduler's loop on its own thread for the duration of a test.
class Harness {
 public:
  Harness(FakeEngine* engine, SchedulerOptions options) : metrics_("fake", engine->num_ranks()) {
    options.idle_wait = absl::Milliseconds(5);
    auto s = Scheduler::Create(engine, options, &metrics_);
    EXPECT_TRUE(s.ok()) << s.status();
    scheduler_ = *std::move(s);
    thread_ = std::thread([this] { run_status_ = scheduler_->Run(); });
  }
  ~Harness() { Stop(); }
  void Stop() {
    if (thread_.joinable()) {
      scheduler_->Stop();
      thread_.join();
    }
  }
  Scheduler& scheduler() { return *scheduler_; }
  ServerMetrics& metrics() { return metrics_; }
  absl::Status run_status() const { return run_status_; }

 private:
  ServerMetrics metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::thread thread_;
  absl::Status run_status_;
};

ServeRequest Request(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  ServeRequest r;
  r.request_id = id;
  r.prompt = std::move(prompt);
  r.sampling = SamplingParams::Greedy();
  r.sampling.max_tokens = max_tokens;
  return r;
}

std::vector<int32_t> Prompt(int n, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i)
    p.push_back(LetterToken(static_cast<char>('a' + (i * 7 + salt) % 26)));
  return p;
}

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;
  std::vector<int> completion_counts;  // per chunk, cumulative
  std::optional<StreamCompletion> completion;
  absl::Status error;
};

// Reads a stream to its end (with a timeout so a bug cannot hang the test).
Outcome Drain(RequestStream& stream, absl::Duration timeout = absl::Seconds(20)) {
  Outcome o;
  const absl::Time end = absl::Now() + timeout;
  std::vector<StreamEvent> events;
  while (absl::Now() < end) {
    events.clear();
    stream.Next(&events, absl::Milliseconds(20));
    for (StreamEvent& e : events) {
      if (auto* c = std::get_if<StreamChunk>(&e)) {
        o.tokens.insert(o.tokens.end(), c->token_ids.begin(), c->token_ids.end());
        o.text += c->text;
        o.completion_counts.push_back(c->completion_tokens);
      } else if (auto* done = std::get_if<StreamCompletion>(&e)) {
        o.completion = *done;
        return o;
      } else {
        o.error = std::get<absl::Status>(e);
        return o;
      }
    }
  }
  o.error = absl::DeadlineExceededError("test timeout: the stream never ended");
  return o;
}

TEST(SchedulerTest, SingleRequestMatchesTheModelAlone) {
  FakeEngine engine(8, 64, 256);
  Harness h(&engine, {.max_num_seqs = 8, .max_num_batched_tokens = 64});
  const std::vector<int32_t> prompt = Prompt(5, 1);
  auto stream = h.scheduler().Submit(Request("a", prompt, 12));
  ASSERT_TRUE(stream.ok()) << stream.status();
  Outcome o = Drain(**stream);
  ASSERT_TRUE(o.completion) << o.error;
  EXPECT_EQ(o.tokens, FakeReference(prompt, 12));
  EXPECT_EQ(o.completion->finish, ServeFinish::kLength);
  EXPECT_EQ(o.completion->prompt_tokens, 5);
  EXPECT_EQ(o.completion->completion_tokens, 12);
  // Letters only: the text is the tokens' letters, one per token.
  std::string letters;
  for (int32_t t : o.tokens) letters += static_cast<char>(t - 3);
  EXPECT_EQ(o.text, letters);
  for (size_t i = 0; i < o.completion_counts.size(); ++i) EXPECT_EQ(o.completion_counts[i], i + 1);
  EXPECT_TRUE(engine.violations().empty());
}

TEST(SchedulerTest, ContinuousBatchingKeepsEveryStreamExact) {
  // 24 requests of 1..40 prompt tokens into 4 sequence slots and 16 tokens per step.
  FakeEngine engine(4, 16, 256);
  Harness h(&engine, {.max_num_seqs = 4, .max_num_batched_tokens = 16});
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> lengths;
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 24; ++i) {
    prompts.push_back(Prompt(1 + (i * 13) % 40, i));
    lengths.push_back(3 + (i * 5) % 17);
    auto s = h.scheduler().Submit(Request("r" + std::to_string(i), prompts[i], lengths[i]));
    ASSERT_TRUE(s.ok()) << s.status();
    streams.push_back(*s);
  }
  for (int i = 0; i < 24; ++i) {
    Outcome o = Drain(*streams[i]);
    ASSERT_TRUE(o.completion) << "request " << i << ": " << o.error;
    EXPECT_EQ(o.tokens, FakeReference(prompts[i], lengths[i])) << "request " << i;
    EXPECT_EQ(o.completion->completion_tokens, lengths[i]);
  }
  EXPECT_TRUE(engine.violations().empty()) << engine.violations()[0];
  bool mixed = false, chunked = false;
  for (const FakeStepRecord& r : engine.log()) {
    EXPECT_LE(r.tokens, 16);
    EXPECT_LE(r.live_after + r.releases, 4);
    mixed |= r.prefill_items > 0 && r.decode_items > 0;
    chunked |= r.tokens == 16 && r.prefill_items > 0;
  }
  EXPECT_TRUE(mixed) << "no step mixed prefill with decode";
  EXPECT_TRUE(chunked) << "no step was filled by a prefill chunk";
  // Everything is released at the end.
  for (int i = 0; i < 100 && engine.live() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(engine.live(), 0);
}

TEST(SchedulerTest, LongPromptIsPrefilledInChunksWhileOthersDecode) {
  FakeEngine engine(4, 8, 256);
  engine.set_step_delay_ms(1);
  Harness h(&engine, {.max_num_seqs = 4, .max_num_batched_tokens = 8});
  auto a = h.scheduler().Submit(Request("short", Prompt(2, 0), 30));
  ASSERT_TRUE(a.ok());
  // Let "short" start decoding, then add a 40-token prompt: chunks of 8 - 4 = 4 tokens (the
  // budget less the most decode tokens a step can hold), one per step beside the decode token.
  while (h.scheduler().stats().steps < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto b = h.scheduler().Submit(Request("long", Prompt(40, 3), 5));
  ASSERT_TRUE(b.ok());
  Outcome ob = Drain(**b), oa = Drain(**a);
  ASSERT_TRUE(oa.completion && ob.completion);
  EXPECT_EQ(oa.tokens, FakeReference(Prompt(2, 0), 30));
  EXPECT_EQ(ob.tokens, FakeReference(Prompt(40, 3), 5));
  int steps_with_both = 0;
  for (const FakeStepRecord& r : engine.log()) {
    steps_with_both += r.decode_items == 1 && r.prefill_items == 1 && r.tokens == 5;
  }
  EXPECT_GE(steps_with_both, 9);
}

// How a prompt is chunked must not depend on what else runs (the chunking changes the model's
// numerics): the same prompt is cut at the same places alone and behind a crowd.
TEST(SchedulerTest, PromptChunksDoNotDependOnLoad) {
  auto chunks_of_last = [](int crowd) {
    FakeEngine engine(8, 64, 256);
    Harness h(&engine, {.max_num_seqs = 8, .max_num_batched_tokens = 24});
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (int i = 0; i < crowd; ++i) {
      auto s = h.scheduler().Submit(Request("crowd" + std::to_string(i), Prompt(7 + 3 * i, i), 6));
      EXPECT_TRUE(s.ok());
      if (s.ok()) streams.push_back(std::move(*s));
    }
    auto last = h.scheduler().Submit(Request("last", Prompt(50, 9), 3));
    EXPECT_TRUE(last.ok());
    if (!last.ok()) return std::vector<int>{};
    Outcome o = Drain(**last);
    for (auto& s : streams) Drain(*s);
    EXPECT_EQ(o.tokens, FakeReference(Prompt(50, 9), 3));
    // The last request is the only one with a 50-token prompt: its id is the largest started.
    uint64_t id = 0;
    for (const FakeStepRecord& r : engine.log()) {
      for (uint64_t i : r.item_ids) id = std::max(id, i);
    }
    std::vector<int> chunks;
    for (const FakeStepRecord& r : engine.log()) {
      for (size_t i = 0; i < r.item_ids.size(); ++i) {
        if (r.item_ids[i] == id && chunks.size() < 4) chunks.push_back(r.item_tokens[i]);
      }
    }
    return chunks;
  };
  const std::vector<int> want = {16, 16, 16, 2};  // 24 - 8 tokens per chunk
  EXPECT_EQ(chunks_of_last(0), want);
  EXPECT_EQ(chunks_of_last(5), want);
}

TEST(SchedulerTest, EosAndStopStringsEndRequests) {
  FakeEngine engine(4, 64, 256);
  engine.set_eos_after(4);
  Harness h(&engine, {.max_num_seqs = 4, .max_num_batched_tokens = 64});
  auto eos = h.scheduler().Submit(Request("eos", Prompt(3, 1), 20));
  ServeRequest ign = Request("ignore", Prompt(3, 1), 9);
  ign.sampling.ignore_eos = true;
  auto ignore = h.scheduler().Submit(std::move(ign));
  ASSERT_TRUE(eos.ok() && ignore.ok());
  Outcome oe = Drain(**eos), oi = Drain(**ignore);
  ASSERT_TRUE(oe.completion && oi.completion);
  EXPECT_EQ(oe.completion->finish, ServeFinish::kEos);
  EXPECT_EQ(oe.completion->matched_token, 1);
  EXPECT_EQ(oe.tokens.size(), 5u);  // four letters, then EOS (its text is not emitted)
  EXPECT_EQ(oe.text.size(), 4u);
  EXPECT_EQ(oi.completion->finish, ServeFinish::kLength);
  EXPECT_EQ(oi.tokens, FakeReference(Prompt(3, 1), 9, 4, /*ignore_eos=*/true));

  // A stop string made of the 3rd and 4th letters of the reference output.
  engine.set_eos_after(0);
  const std::vector<int32_t> ref = FakeReference(Prompt(6, 2), 10);
  std::string text;
  for (int32_t t : ref) text += static_cast<char>(t - 3);
  const std::string stop = text.substr(2, 2);
  ServeRequest r = Request("stop", Prompt(6, 2), 10);
  r.sampling.stop = {stop};
  auto s = h.scheduler().Submit(std::move(r));
  ASSERT_TRUE(s.ok());
  Outcome os = Drain(**s);
  ASSERT_TRUE(os.completion);
  EXPECT_EQ(os.completion->finish, ServeFinish::kStopString);
  EXPECT_EQ(os.completion->matched_stop, stop);
  EXPECT_EQ(os.text, text.substr(0, text.find(stop)));
}

TEST(SchedulerTest, CancelFreesTheSequence) {
  FakeEngine engine(2, 16, 4096);
  engine.set_step_delay_ms(2);
  Harness h(&engine, {.max_num_seqs = 2, .max_num_batched_tokens = 16});
  auto s = h.scheduler().Submit(Request("c", Prompt(4, 0), 4000));
  ASSERT_TRUE(s.ok());
  while (engine.live() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  (*s)->Cancel();
  Outcome o = Drain(**s);
  EXPECT_EQ(o.error.code(), absl::StatusCode::kCancelled) << o.error;
  for (int i = 0; i < 200 && engine.live() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(engine.live(), 0);
  EXPECT_EQ(h.scheduler().stats().running, 0);
  // And the server goes on serving.
  auto next = h.scheduler().Submit(Request("after", Prompt(4, 0), 3));
  ASSERT_TRUE(next.ok());
  Outcome on = Drain(**next);
  ASSERT_TRUE(on.completion);
  EXPECT_EQ(on.tokens, FakeReference(Prompt(4, 0), 3));
  EXPECT_TRUE(engine.violations().empty());
}

TEST(SchedulerTest, AbortEndsWithFinishReasonAbort) {
  FakeEngine engine(2, 16, 4096);
  engine.set_step_delay_ms(2);
  Harness h(&engine, {.max_num_seqs = 2, .max_num_batched_tokens = 16});
  auto s = h.scheduler().Submit(Request("x", Prompt(4, 0), 4000));
  ASSERT_TRUE(s.ok());
  while (engine.live() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(h.scheduler().Abort({"x", "unknown"}), 1);
  Outcome o = Drain(**s);
  ASSERT_TRUE(o.completion) << o.error;
  EXPECT_EQ(o.completion->finish, ServeFinish::kAbort);
  EXPECT_EQ(static_cast<size_t>(o.completion->completion_tokens), o.tokens.size());
}

TEST(SchedulerTest, DeadlinePassingInTheQueueFailsTheRequest) {
  FakeEngine engine(1, 16, 4096);
  engine.set_step_delay_ms(2);
  Harness h(&engine, {.max_num_seqs = 1, .max_num_batched_tokens = 16});
  auto busy = h.scheduler().Submit(Request("busy", Prompt(4, 0), 200));
  ServeRequest r = Request("late", Prompt(4, 1), 5);
  r.deadline = ServeClock::now() + std::chrono::milliseconds(50);
  auto late = h.scheduler().Submit(std::move(r));
  ASSERT_TRUE(busy.ok() && late.ok());
  Outcome o = Drain(**late);
  EXPECT_EQ(o.error.code(), absl::StatusCode::kDeadlineExceeded) << o.error;
  EXPECT_NE(o.error.message().find("queued"), std::string::npos) << o.error;
  EXPECT_TRUE(o.tokens.empty());
  (*busy)->Cancel();
}

TEST(SchedulerTest, FullQueueIsResourceExhausted) {
  FakeEngine engine(1, 16, 4096);
  engine.set_step_delay_ms(5);
  Harness h(&engine, {.max_num_seqs = 1, .max_num_batched_tokens = 16, .max_waiting = 2});
  std::vector<std::shared_ptr<RequestStream>> keep;
  absl::Status last;
  for (int i = 0; i < 10 && last.ok(); ++i) {
    auto s = h.scheduler().Submit(Request("q" + std::to_string(i), Prompt(4, i), 1000));
    if (s.ok()) keep.push_back(*s);
    last = s.status();
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted) << last;
  for (auto& s : keep) s->Cancel();
}

TEST(SchedulerTest, DuplicateLiveRequestIdIsRejected) {
  FakeEngine engine(2, 16, 4096);
  engine.set_step_delay_ms(2);
  Harness h(&engine, {.max_num_seqs = 2, .max_num_batched_tokens = 16});
  auto a = h.scheduler().Submit(Request("same", Prompt(4, 0), 1000));
  ASSERT_TRUE(a.ok());
  auto b = h.scheduler().Submit(Request("same", Prompt(4, 0), 10));
  EXPECT_EQ(b.status().code(), absl::StatusCode::kAlreadyExists);
  (*a)->Cancel();
}

TEST(SchedulerTest, KvBudgetLimitsConcurrentSequences) {
  FakeEngine engine(8, 64, 256);
  // Each request reserves 4 + 12 = 16 tokens; a budget of 40 admits two at a time.
  Harness h(&engine,
            {.max_num_seqs = 8, .max_num_batched_tokens = 64, .kv_cache_tokens_per_rank = 40});
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 6; ++i) {
    auto s = h.scheduler().Submit(Request("k" + std::to_string(i), Prompt(4, i), 12));
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  for (int i = 0; i < 6; ++i) {
    Outcome o = Drain(*streams[i]);
    ASSERT_TRUE(o.completion);
    EXPECT_EQ(o.tokens, FakeReference(Prompt(4, i), 12));
  }
  for (const FakeStepRecord& r : engine.log()) EXPECT_LE(r.live_after + r.releases, 2);
  // A request that can never fit is refused up front.
  auto big = h.scheduler().Submit(Request("big", Prompt(4, 0), 100));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(SchedulerTest, StopAbortsLiveRequestsAndRefusesNewOnes) {
  FakeEngine engine(2, 16, 4096);
  engine.set_step_delay_ms(2);
  Harness h(&engine, {.max_num_seqs = 2, .max_num_batched_tokens = 16});
  auto a = h.scheduler().Submit(Request("a", Prompt(4, 0), 4000));
  auto b = h.scheduler().Submit(Request("b", Prompt(4, 1), 4000));
  auto c = h.scheduler().Submit(Request("c", Prompt(4, 2), 4000));  // stays queued
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  while (engine.live() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  h.Stop();
  EXPECT_TRUE(h.run_status().ok()) << h.run_status();
  for (auto* s : {&*a, &*b, &*c}) {
    Outcome o = Drain(**s, absl::Seconds(1));
    ASSERT_TRUE(o.completion) << o.error;
    EXPECT_EQ(o.completion->finish, ServeFinish::kAbort);
  }
  EXPECT_TRUE(h.scheduler().stats().draining);
  auto late = h.scheduler().Submit(Request("late", Prompt(4, 0), 3));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
}

TEST(SchedulerTest, EngineFailureFailsEveryRequestAndEndsTheLoop) {
  FakeEngine engine(2, 16, 4096);
  engine.set_fail_at_step(5);
  Harness h(&engine, {.max_num_seqs = 2, .max_num_batched_tokens = 16});
  auto a = h.scheduler().Submit(Request("a", Prompt(4, 0), 100));
  auto b = h.scheduler().Submit(Request("b", Prompt(4, 1), 100));
  auto c = h.scheduler().Submit(Request("c", Prompt(4, 2), 100));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (auto* s : {&*a, &*b, &*c}) {
    Outcome o = Drain(**s);
    EXPECT_EQ(o.error.code(), absl::StatusCode::kUnavailable) << o.error;
    EXPECT_NE(o.error.message().find("injected engine failure"), std::string::npos);
  }
  h.Stop();
  EXPECT_EQ(h.run_status().code(), absl::StatusCode::kInternal);
  auto late = h.scheduler().Submit(Request("late", Prompt(4, 0), 3));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
}

TEST(SchedulerTest, MetricsCountTokensAndOutcomes) {
  FakeEngine engine(4, 64, 256);
  Harness h(&engine, {.max_num_seqs = 4, .max_num_batched_tokens = 64});
  auto s = h.scheduler().Submit(Request("m", Prompt(7, 0), 9));
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE(Drain(**s).completion);
  const std::string text = h.metrics().Render();
  const std::map<std::string, std::string> model = {{"model_name", "fake"}};
  EXPECT_EQ(PromValue(text, "tritmoe_prompt_tokens_total", model), 7.0) << text;
  EXPECT_EQ(PromValue(text, "tritmoe_generation_tokens_total", model), 9.0);
  EXPECT_EQ(PromValue(text, "tritmoe_request_success_total",
                      {{"model_name", "fake"}, {"finished_reason", "length"}}),
            1.0);
  EXPECT_EQ(PromValue(text, "tritmoe_time_to_first_token_seconds_count", model), 1.0);
  EXPECT_EQ(PromValue(text, "tritmoe_inter_token_latency_seconds_count", model), 8.0);
  // One rank holds everything: its tokens are the prompt and the 8 samples fed back.
  EXPECT_EQ(PromValue(text, "tritmoe_rank_tokens_total", {{"model_name", "fake"}, {"rank", "0"}}),
            15.0);
}

// Two ranks with 40 KV tokens each. A (30 tokens) lands on rank 0, B (10) on rank 1; C (30) would
// land on rank 0 (fewest live sequences, ties to the lowest rank) where it does not fit, though
// the job as a whole (80) has room: it must wait until B ends and then run on rank 1. The fake
// engine places sequences by its own copy of the rule and flags a rank over its budget.
TEST(SchedulerTest, KvIsAccountedPerRankAndARequestWaitsForItsRank) {
  FakeEngine engine(8, 64, 256, 512, /*n_ranks=*/2);
  engine.set_kv_tokens_per_rank(40);
  Harness h(&engine,
            {.max_num_seqs = 8, .max_num_batched_tokens = 64, .kv_cache_tokens_per_rank = 40});
  EXPECT_EQ(h.scheduler().kv_budget_per_rank(), 40);
  engine.Hold();  // A's first step waits until B and C are queued
  auto a = h.scheduler().Submit(Request("a", Prompt(4, 0), 26));
  ASSERT_TRUE(a.ok());
  engine.WaitForStepEntered(1);
  auto b = h.scheduler().Submit(Request("b", Prompt(4, 1), 6));
  auto c = h.scheduler().Submit(Request("c", Prompt(4, 2), 26));
  ASSERT_TRUE(b.ok() && c.ok());
  // More than one rank's budget can never run, even with room job-wide.
  auto big = h.scheduler().Submit(Request("big", Prompt(4, 3), 37));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("one rank"), std::string::npos) << big.status();
  engine.Resume();

  EXPECT_EQ(Drain(**a).tokens, FakeReference(Prompt(4, 0), 26));
  EXPECT_EQ(Drain(**b).tokens, FakeReference(Prompt(4, 1), 6));
  EXPECT_EQ(Drain(**c).tokens, FakeReference(Prompt(4, 2), 26));
  EXPECT_TRUE(engine.violations().empty()) << engine.violations()[0];
  // C (engine id 3) started only after a release (B's), and then both ranks were in use.
  const std::vector<FakeStepRecord> log = engine.log();
  int releases_before_c = 0;
  bool c_seen = false;
  for (const FakeStepRecord& r : log) {
    if (std::find(r.item_ids.begin(), r.item_ids.end(), 3u) != r.item_ids.end()) {
      c_seen = true;
      EXPECT_EQ(r.kv_after[0], 30);
      EXPECT_EQ(r.kv_after[1], 30);
      break;
    }
    releases_before_c += r.releases;
  }
  EXPECT_TRUE(c_seen);
  EXPECT_GE(releases_before_c, 1);
  h.Stop();
  const SchedulerStats st = h.scheduler().stats();
  ASSERT_EQ(st.kv_usage_per_rank.size(), 2u);
  EXPECT_EQ(st.kv_usage_per_rank[0], 0.0);
  const std::string text = h.metrics().Render();
  for (const char* rank : {"0", "1"}) {
    EXPECT_EQ(
        PromValue(text, "tritmoe_kv_cache_usage_perc", {{"model_name", "fake"}, {"rank", rank}}),
        0.0)
        << text;
  }
}

// The per-rank phase counters add up to what the engine reported, the per-rank token counters to
// the tokens of every step, and each layer's imbalance is the closed form of the fake routing:
// 4 experts on 2 ranks ({0,1} and {2,3}); layer 0 sends each token to 0,1,2 (rank loads 2:1,
// max/mean 4/3), layer 1 to 0,3 (1:1 -> 1), layer 2 to 3 (0:1 -> 2).
TEST(SchedulerTest, StepPhasesRankTokensAndExpertLoadImbalance) {
  FakeEngine engine(8, 64, 256, 512, /*n_ranks=*/2);
  engine.set_routing(4, {{0, 1, 2}, {0, 3}, {3}});
  engine.set_step_delay_ms(2);
  Harness h(&engine, {.max_num_seqs = 8,
                      .max_num_batched_tokens = 64,
                      .routing_stats_interval = absl::Milliseconds(1)});
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 3; ++i) {
    auto s = h.scheduler().Submit(Request("p" + std::to_string(i), Prompt(5 + i, i), 8 + 2 * i));
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  for (auto& s : streams) ASSERT_TRUE(Drain(*s).completion);
  h.Stop();
  EXPECT_TRUE(engine.violations().empty()) << engine.violations()[0];
  EXPECT_GE(engine.routing_collections(), 1);
  const std::string text = h.metrics().Render();
  const std::vector<StepPhaseTimes> totals = engine.rank_totals();
  int64_t step_tokens = 0;
  for (const FakeStepRecord& r : engine.log()) step_tokens += r.tokens;
  double rank_tokens = 0;
  for (int rank = 0; rank < 2; ++rank) {
    const std::string rs = std::to_string(rank);
    auto phase = [&](const char* name) {
      return *PromValue(text, "tritmoe_step_phase_seconds_total",
                        {{"model_name", "fake"}, {"rank", rs}, {"phase", name}});
    };
    EXPECT_NEAR(phase("attention"), totals[rank].attention_s, 1e-9) << text;
    EXPECT_NEAR(phase("moe_compute"), totals[rank].moe_compute_s, 1e-9);
    EXPECT_NEAR(phase("dispatch"), totals[rank].dispatch_s, 1e-9);
    EXPECT_NEAR(phase("combine"), totals[rank].combine_s, 1e-9);
    EXPECT_NEAR(phase("other"), totals[rank].other_s, 1e-9);
    const double tokens =
        *PromValue(text, "tritmoe_rank_tokens_total", {{"model_name", "fake"}, {"rank", rs}});
    EXPECT_GT(tokens, 0) << "rank " << rank << " got no sequence";
    rank_tokens += tokens;
  }
  EXPECT_EQ(rank_tokens, static_cast<double>(step_tokens));
  auto imbalance = [&](const char* layer) {
    return PromValue(text, "tritmoe_expert_load_imbalance",
                     {{"model_name", "fake"}, {"layer", layer}});
  };
  ASSERT_TRUE(imbalance("0")) << text;
  EXPECT_NEAR(*imbalance("0"), 4.0 / 3.0, 1e-12);
  EXPECT_NEAR(*imbalance("1"), 1.0, 1e-12);
  EXPECT_NEAR(*imbalance("2"), 2.0, 1e-12);
}

// Serves one request on an engine without routing statistics or expert cache (the FakeEngine's
// defaults), collecting every millisecond; returns the metrics page after the scheduler stopped.
std::string ServeOneRequestWithoutStatistics(FakeEngine* engine) {
  engine->set_step_delay_ms(2);
  Harness h(engine, {.max_num_seqs = 4,
                     .max_num_batched_tokens = 64,
                     .routing_stats_interval = absl::Milliseconds(1)});
  auto s = h.scheduler().Submit(Request("n", Prompt(4, 0), 10));
  EXPECT_TRUE(s.ok());
  if (s.ok()) {
    EXPECT_TRUE(Drain(**s).completion);
  }
  h.Stop();
  EXPECT_TRUE(h.run_status().ok()) << h.run_status();
  return h.metrics().Render();
}

// An engine without routing statistics (FailedPrecondition: no MoE layers) is not collected
// from again and exports no imbalance.
TEST(SchedulerTest, NoRoutingStatisticsNoImbalance) {
  FakeEngine engine(4, 64, 256);
  const std::string text = ServeOneRequestWithoutStatistics(&engine);
  EXPECT_EQ(engine.routing_collections(), 0);
  EXPECT_EQ(text.find("tritmoe_expert_load_imbalance{"), std::string::npos);
}

// The expert cache series reach /metrics through the scheduler's collections, the end of the
// burst included (collected while idle): every layer's counters equal the engine's cumulative
// statistics once the requests are done, and the slots gauge its slots.
TEST(SchedulerTest, ExpertCacheStatisticsReachTheMetrics) {
  FakeEngine engine(8, 64, 256, 512, /*n_ranks=*/2);
  engine.set_expert_cache(/*n_layers=*/3, /*slots=*/5);
  Harness h(&engine, {.max_num_seqs = 8,
                      .max_num_batched_tokens = 64,
                      .routing_stats_interval = absl::Milliseconds(1)});
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 3; ++i) {
    auto s = h.scheduler().Submit(Request("c" + std::to_string(i), Prompt(5 + i, i), 6 + i));
    ASSERT_TRUE(s.ok());
    streams.push_back(*s);
  }
  for (auto& s : streams) ASSERT_TRUE(Drain(*s).completion);
  const ExpertCacheStats want = *engine.expert_cache();
  auto value = [&](const std::string& text, const char* name, int layer) {
    return PromValue(text, name, {{"model_name", "fake"}, {"layer", std::to_string(layer)}});
  };
  std::string text;
  for (int i = 0; i < 1000; ++i) {  // the idle loop collects within a few ms
    text = h.metrics().Render();
    if (value(text, "tritmoe_expert_cache_misses_total", 0) ==
        std::optional<double>(double(want.layers[0].misses))) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  h.Stop();
  EXPECT_TRUE(engine.violations().empty()) << engine.violations()[0];
  EXPECT_GE(engine.cache_collections(), 2) << "one after the first step, one while idle";
  ASSERT_GT(want.layers[0].misses, 0);
  for (int l = 0; l < 3; ++l) {
    const LayerCacheStats& w = want.layers[l];
    EXPECT_EQ(value(text, "tritmoe_expert_cache_hits_total", l), double(w.hits)) << text;
    EXPECT_EQ(value(text, "tritmoe_expert_cache_misses_total", l), double(w.misses));
    EXPECT_EQ(value(text, "tritmoe_expert_cache_bytes_streamed_total", l), double(w.bytes_read));
    EXPECT_NEAR(*value(text, "tritmoe_expert_cache_stall_seconds_total", l), w.stall_s, 1e-9);
  }
  EXPECT_EQ(PromValue(text, "tritmoe_expert_cache_slots_per_layer", {{"model_name", "fake"}}), 5.0);
}

// An engine without an expert cache is asked once and exports no cache series.
TEST(SchedulerTest, NoExpertCacheNoSeries) {
  FakeEngine engine(4, 64, 256);
  const std::string text = ServeOneRequestWithoutStatistics(&engine);
  EXPECT_EQ(engine.cache_collections(), 1);
  EXPECT_EQ(text.find("tritmoe_expert_cache_hits_total{"), std::string::npos) << text;
  EXPECT_EQ(text.find("tritmoe_expert_cache_hit_rate{"), std::string::npos);
}

TEST(SchedulerOptionsTest, Validate) {
  EXPECT_TRUE(SchedulerOptions{}.Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.max_num_seqs = 0}).Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.max_num_seqs = 8, .max_num_batched_tokens = 4}).Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.kv_cache_tokens_per_rank = -1}).Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.routing_stats_interval = absl::Seconds(-1)}).Validate().ok());
}

}  // namespace
}  // namespace tritmoe
