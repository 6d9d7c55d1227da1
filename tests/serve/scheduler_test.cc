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
#include "runtime/serve/request_stream.h"

namespace tritmoe {
namespace {

using ::tritmoe::testing::FakeEngine;
using ::tritmoe::testing::FakeReference;
using ::tritmoe::testing::FakeStepRecord;
using ::tritmoe::testing::LetterToken;

// Runs a scheduler's loop on its own thread for the duration of a test.
class Harness {
 public:
  Harness(FakeEngine* engine, SchedulerOptions options) : metrics_("fake", 1) {
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
  // Let "short" start decoding, then add a 40-token prompt: it needs >= 6 steps of <= 7 tokens.
  while (h.scheduler().stats().steps < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto b = h.scheduler().Submit(Request("long", Prompt(40, 3), 5));
  ASSERT_TRUE(b.ok());
  Outcome ob = Drain(**b), oa = Drain(**a);
  ASSERT_TRUE(oa.completion && ob.completion);
  EXPECT_EQ(oa.tokens, FakeReference(Prompt(2, 0), 30));
  EXPECT_EQ(ob.tokens, FakeReference(Prompt(40, 3), 5));
  int steps_with_both = 0;
  for (const FakeStepRecord& r : engine.log()) {
    steps_with_both += r.decode_items == 1 && r.prefill_items == 1 && r.tokens == 8;
  }
  EXPECT_GE(steps_with_both, 5);
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
  Harness h(&engine, {.max_num_seqs = 8, .max_num_batched_tokens = 64, .kv_cache_tokens = 40});
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
  EXPECT_NE(text.find("tritmoe_prompt_tokens_total{model_name=\"fake\"} 7\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("tritmoe_generation_tokens_total{model_name=\"fake\"} 9\n"),
            std::string::npos);
  EXPECT_NE(
      text.find(
          "tritmoe_request_success_total{model_name=\"fake\",finished_reason=\"length\"} 1\n"),
      std::string::npos);
  EXPECT_NE(text.find("tritmoe_time_to_first_token_seconds_count{model_name=\"fake\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("tritmoe_inter_token_latency_seconds_count{model_name=\"fake\"} 8\n"),
            std::string::npos);
}

TEST(SchedulerOptionsTest, Validate) {
  EXPECT_TRUE(SchedulerOptions{}.Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.max_num_seqs = 0}).Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.max_num_seqs = 8, .max_num_batched_tokens = 4}).Validate().ok());
  EXPECT_FALSE((SchedulerOptions{.kv_cache_tokens = -1}).Validate().ok());
}

}  // namespace
}  // namespace tritmoe
