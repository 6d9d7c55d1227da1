// The OpenAI wire format and request validation, without a server: every bad-input case gets
// InvalidArgument (or NotFound) naming the field, and the response/SSE bodies have OpenAI's
// shapes. RequestBuilder runs on the synthetic vocabulary of generated test models.
#include "runtime/serve/openai_protocol.h"

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/serve/field_error.h"
#include "runtime/serve/request_builder.h"
#include "runtime/text/synthetic_vocab.h"

namespace tritmoe {
namespace {

using json = nlohmann::json;

absl::Status ParseError(OpenAiEndpoint e, const std::string& body) {
  return ParseOpenAiRequest(e, body).status();
}

void ExpectField(const absl::Status& s, const std::string& field,
                 absl::StatusCode code = absl::StatusCode::kInvalidArgument) {
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_EQ(ErrorField(s), field) << s;
  EXPECT_EQ(s.message().substr(0, field.size()), field) << s;
}

TEST(OpenAiParseTest, MalformedJson) {
  absl::Status s = ParseError(OpenAiEndpoint::kChat, "{\"messages\": [");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not valid JSON"), std::string::npos) << s;
  s = ParseError(OpenAiEndpoint::kChat, "[1, 2]");
  EXPECT_NE(s.message().find("must be a JSON object"), std::string::npos) << s;
  EXPECT_FALSE(ParseOpenAiRequest(OpenAiEndpoint::kCompletions, "").ok());
}

TEST(OpenAiParseTest, WrongFieldTypes) {
  const std::string msgs = R"("messages": [{"role": "user", "content": "hi"}])";
  ExpectField(ParseError(OpenAiEndpoint::kChat, "{" + msgs + R"(, "max_tokens": "ten"})"),
              "max_tokens");
  ExpectField(ParseError(OpenAiEndpoint::kChat, "{" + msgs + R"(, "max_tokens": 2.5})"),
              "max_tokens");
  ExpectField(ParseError(OpenAiEndpoint::kChat, "{" + msgs + R"(, "temperature": "hot"})"),
              "temperature");
  ExpectField(ParseError(OpenAiEndpoint::kChat, "{" + msgs + R"(, "stream": "yes"})"), "stream");
  ExpectField(ParseError(OpenAiEndpoint::kChat, "{" + msgs + R"(, "stop": 5})"), "stop");
  ExpectField(ParseError(OpenAiEndpoint::kChat, "{" + msgs + R"(, "model": 3})"), "model");
  ExpectField(ParseError(OpenAiEndpoint::kChat, R"({"messages": "hi"})"), "messages");
  ExpectField(
      ParseError(OpenAiEndpoint::kChat, R"({"messages": [{"role": "user", "content": 7}]})"),
      "messages[0].content");
  ExpectField(ParseError(OpenAiEndpoint::kChat, R"({"messages": [{"content": "x"}]})"),
              "messages[0].role");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": {"a": 1}})"), "prompt");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": [1, "x"]})"), "prompt[1]");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": ["a", "b"]})"), "prompt");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({})"), "prompt");
}

TEST(OpenAiParseTest, UnsupportedFeaturesNameTheField) {
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": "a", "n": 2})"), "n");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": "a", "presence_penalty": 1})"),
              "presence_penalty");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": "a", "logprobs": 3})"),
              "logprobs");
  ExpectField(ParseError(OpenAiEndpoint::kCompletions, R"({"prompt": "a", "echo": true})"), "echo");
  // Neutral values and unknown fields are fine.
  EXPECT_TRUE(ParseOpenAiRequest(OpenAiEndpoint::kCompletions,
                                 R"({"prompt": "a", "n": 1, "presence_penalty": 0,
                                     "logprobs": null, "whatever": {"x": 1}})")
                  .ok());
}

TEST(OpenAiParseTest, FieldsReachTheInput) {
  auto r = ParseOpenAiRequest(OpenAiEndpoint::kChat, R"({
      "model": "m", "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": [{"type": "text", "text": "a"},
                                                              {"type": "text", "text": "b"}]}],
      "stream": true, "stream_options": {"include_usage": true}, "max_completion_tokens": 7,
      "max_tokens": 99, "temperature": 0, "top_p": 0.5, "top_k": 3, "min_p": 0.1, "seed": 42,
      "stop": "END", "ignore_eos": true, "stop_token_ids": [5, 6], "min_tokens": 2})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  const GenerationInput& in = r->input;
  EXPECT_EQ(in.model, "m");
  ASSERT_TRUE(in.messages);
  ASSERT_EQ(in.messages->size(), 2u);
  EXPECT_EQ((*in.messages)[1].content, "ab");
  EXPECT_EQ(in.max_tokens, 7);
  EXPECT_EQ(in.temperature, 0.0);
  EXPECT_EQ(in.top_k, 3);
  EXPECT_EQ(in.seed, 42u);
  EXPECT_EQ(in.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(in.stop_token_ids, (std::vector<int64_t>{5, 6}));
  EXPECT_TRUE(in.ignore_eos);
  EXPECT_EQ(in.min_tokens, 2);

  auto c = ParseOpenAiRequest(OpenAiEndpoint::kCompletions, R"({"prompt": [[1, 2, 3]]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->input.token_ids, (std::vector<int64_t>{1, 2, 3}));
}

class RequestBuilderTest : public ::testing::Test {
 protected:
  RequestBuilderTest() : tokenizer_(*Tokenizer::Create(*MakeSyntheticVocab(512, 7))) {
    model_.name = "tiny";
    model_.max_model_len = 64;
    model_.tokenizer = &tokenizer_;
  }
  GenerationInput Text(const std::string& text) {
    GenerationInput in;
    in.text = text;
    return in;
  }
  absl::Status Build(const GenerationInput& in) {
    return RequestBuilder(&model_, FieldNaming::kOpenAi).Build(in, "cmpl-").status();
  }

  Tokenizer tokenizer_;
  ServedModel model_;
};

TEST_F(RequestBuilderTest, Defaults) {
  auto r = RequestBuilder(&model_, FieldNaming::kOpenAi).Build(Text("hello"), "cmpl-");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->request_id.substr(0, 5), "cmpl-");
  EXPECT_EQ(r->request_id.size(), 5u + 32u);
  EXPECT_EQ(r->prompt.front(), tokenizer_.bos_id());
  EXPECT_EQ(r->sampling.max_tokens, 64 - static_cast<int>(r->prompt.size()));
  EXPECT_FALSE(r->separate_reasoning);
  GenerationInput chat;
  chat.messages = std::vector<ChatMessage>{{"user", "hi"}};
  auto c = RequestBuilder(&model_, FieldNaming::kOpenAi).Build(chat, "chatcmpl-");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->separate_reasoning);
  EXPECT_TRUE(c->starts_in_reasoning);
}

TEST_F(RequestBuilderTest, BadValuesNameTheField) {
  GenerationInput in = Text("hello");
  in.max_tokens = -3;
  ExpectField(Build(in), "max_tokens");
  in = Text("hello");
  in.max_tokens = 0;
  ExpectField(Build(in), "max_tokens");
  in = Text("hello");
  in.temperature = -0.5;
  ExpectField(Build(in), "temperature");
  in = Text("hello");
  in.temperature = std::nan("");
  ExpectField(Build(in), "temperature");
  in = Text("hello");
  in.top_p = 0;
  ExpectField(Build(in), "top_p");
  in = Text("hello");
  in.top_k = -2;
  ExpectField(Build(in), "top_k");
  in = Text("hello");
  in.min_p = 1.5;
  ExpectField(Build(in), "min_p");
  in = Text("hello");
  in.stop = {""};
  ExpectField(Build(in), "stop");
  in = Text("hello");
  in.stop_token_ids = {512};
  ExpectField(Build(in), "stop_token_ids");
  in = Text("hello");
  in.max_tokens = 5;
  in.min_tokens = 6;
  ExpectField(Build(in), "min_tokens");
  in = GenerationInput();
  in.token_ids = std::vector<int64_t>{1, 600};
  ExpectField(Build(in), "prompt");
  in = GenerationInput();
  in.messages = std::vector<ChatMessage>{{"robot", "hi"}};
  ExpectField(Build(in), "messages");
  in = Text("hello");
  in.model = "gpt-4";
  ExpectField(Build(in), "model", absl::StatusCode::kNotFound);
  EXPECT_EQ(ErrorCode(Build(in)), "model_not_found");
  // gRPC spelling.
  in = Text("hello");
  in.max_tokens = -1;
  absl::Status s = RequestBuilder(&model_, FieldNaming::kProto).Build(in, "gen-").status();
  ExpectField(s, "stopping.max_tokens");
}

TEST_F(RequestBuilderTest, PromptMustLeaveRoomInTheContext) {
  GenerationInput in;
  in.token_ids = std::vector<int64_t>(64, 300);
  absl::Status s = Build(in);
  ExpectField(s, "prompt");
  EXPECT_EQ(ErrorCode(s), "context_length_exceeded");
  in.token_ids = std::vector<int64_t>(60, 300);
  in.max_tokens = 5;
  ExpectField(Build(in), "max_tokens");
  in.max_tokens = 4;
  EXPECT_TRUE(Build(in).ok());
}

TEST(OpenAiResponseTest, ChatStreamShape) {
  OpenAiResponseBuilder b(OpenAiEndpoint::kChat, "chatcmpl-1", "tiny", 1700000000, true);
  const std::string start = b.StreamStart();
  ASSERT_EQ(start.substr(0, 6), "data: ");
  ASSERT_EQ(start.substr(start.size() - 2), "\n\n");
  json j = json::parse(start.substr(6));
  EXPECT_EQ(j["object"], "chat.completion.chunk");
  EXPECT_EQ(j["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(j["usage"].is_null());
  StreamChunk chunk;
  chunk.reasoning = "think";
  chunk.text = "say";
  j = json::parse(b.StreamChunk(chunk).substr(6));
  EXPECT_EQ(j["choices"][0]["delta"]["reasoning_content"], "think");
  EXPECT_EQ(j["choices"][0]["delta"]["content"], "say");
  EXPECT_EQ(b.StreamChunk(StreamChunk{}), "");  // nothing to say: no event
  StreamCompletion done;
  done.finish = ServeFinish::kLength;
  done.prompt_tokens = 3;
  done.completion_tokens = 4;
  done.reasoning_tokens = 1;
  const std::string end = b.StreamEnd(done);
  const size_t first = end.find("\n\n");
  json fin = json::parse(end.substr(6, first - 6));
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  const size_t second = end.find("\n\n", first + 2);
  json usage = json::parse(end.substr(first + 2 + 6, second - first - 2 - 6));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
  EXPECT_EQ(usage["usage"]["completion_tokens_details"]["reasoning_tokens"], 1);
  EXPECT_EQ(end.substr(second + 2), "data: [DONE]\n\n");
}

TEST(OpenAiResponseTest, WholeCompletionAndErrors) {
  OpenAiResponseBuilder b(OpenAiEndpoint::kCompletions, "cmpl-1", "tiny", 1, false);
  StreamChunk c;
  c.text = "ab";
  b.Collect(c);
  c.text = "c";
  b.Collect(c);
  StreamCompletion done;
  done.finish = ServeFinish::kStopString;
  done.matched_stop = "zz";
  done.prompt_tokens = 2;
  done.completion_tokens = 3;
  json r = b.Response(done);
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["text"], "abc");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][0]["stop_reason"], "zz");
  EXPECT_EQ(r["usage"]["prompt_tokens"], 2);

  HttpError e = ToHttpError(FieldError("max_tokens", "must be >= 1, got -1"));
  EXPECT_EQ(e.status, 400);
  EXPECT_EQ(e.body["error"]["param"], "max_tokens");
  EXPECT_EQ(e.body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(ToHttpError(absl::ResourceExhaustedError("full")).status, 429);
  EXPECT_EQ(ToHttpError(absl::UnavailableError("down")).status, 503);
  const std::string sse = OpenAiResponseBuilder::StreamError(absl::InternalError("boom"));
  EXPECT_EQ(sse.substr(sse.size() - 14), "data: [DONE]\n\n");
  EXPECT_EQ(json::parse(sse.substr(6, sse.find("\n\n") - 6))["error"]["message"], "boom");
}

}  // namespace
}  // namespace tritmoe
