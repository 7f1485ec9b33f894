// The OpenAI API's JSON: what a request body reads as, which bodies are refused and how they
// are named, the chat template, and the shapes of responses and stream events.
#include "server/openai_api.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "runtime/model/model.h"
#include "server/chat_template.h"
#include "server/choice_output.h"

namespace seqboat::server {
namespace {

using json = nlohmann::json;

absl::StatusOr<OpenAiRequest> Completions(const char* body) {
  return ParseOpenAiRequest(json::parse(body), OpenAiEndpoint::kCompletions, ChatTemplate{});
}

absl::StatusOr<OpenAiRequest> Chat(const char* body, const ChatTemplate& chat_template = {}) {
  return ParseOpenAiRequest(json::parse(body), OpenAiEndpoint::kChat, chat_template);
}

std::string ErrorOf(const absl::StatusOr<OpenAiRequest>& parsed) {
  EXPECT_FALSE(parsed.ok());
  if (parsed.ok()) return "";
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(parsed.status().message());
}

TEST(OpenAiParse, PromptTakesEveryShapeOfTheApi) {
  auto one = Completions(R"({"prompt": "The boat"})");
  ASSERT_TRUE(one.ok()) << one.status();
  ASSERT_EQ(one->prompts.size(), 1u);
  EXPECT_EQ(one->prompts[0].text, "The boat");
  EXPECT_EQ(one->prompts[0].request.text, "The boat");

  auto texts = Completions(R"({"prompt": ["a", "b", "c"]})");
  ASSERT_TRUE(texts.ok()) << texts.status();
  ASSERT_EQ(texts->prompts.size(), 3u);
  EXPECT_EQ(texts->prompts[2].request.text, "c");

  auto ids = Completions(R"({"prompt": [2, 40, 41]})");
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->prompts.size(), 1u);
  EXPECT_FALSE(ids->prompts[0].text.has_value());
  EXPECT_EQ(ids->prompts[0].request.tokens, (std::vector<int32_t>{2, 40, 41}));

  auto id_lists = Completions(R"({"prompt": [[2, 40], [2, 41, 42]]})");
  ASSERT_TRUE(id_lists.ok()) << id_lists.status();
  ASSERT_EQ(id_lists->prompts.size(), 2u);
  EXPECT_EQ(id_lists->prompts[1].request.tokens, (std::vector<int32_t>{2, 41, 42}));
}

TEST(OpenAiParse, FieldsReachTheBuilderUnderTheirMeaning) {
  auto r =
      Completions(R"({"prompt": "x", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": -1,
                           "min_p": 0.1, "repetition_penalty": 1.2, "presence_penalty": 0.3,
                           "frequency_penalty": 0.4, "stop": "END", "stop_token_ids": [5, 6],
                           "ignore_eos": true, "logit_bias": {"9": -100, "3": 2.5}, "n": 3, "seed": 11,
                           "stream": true, "stream_options": {"include_usage": true},
                           "include_stop_str_in_output": true, "user": "u", "model": "m",
                           "an_unknown_field": [1, 2]})");
  ASSERT_TRUE(r.ok()) << r.status();
  const GenerationRequest& g = r->prompts[0].request;
  EXPECT_EQ(g.max_new_tokens, 7);
  EXPECT_FLOAT_EQ(*g.temperature, 0.5f);
  EXPECT_FLOAT_EQ(*g.top_p, 0.9f);
  EXPECT_EQ(g.top_k, 0);  // vLLM's -1: no top-k
  EXPECT_FLOAT_EQ(g.min_p, 0.1f);
  EXPECT_FLOAT_EQ(*g.repetition_penalty, 1.2f);
  EXPECT_FLOAT_EQ(g.presence_penalty, 0.3f);
  EXPECT_FLOAT_EQ(g.frequency_penalty, 0.4f);
  EXPECT_EQ(g.stop, (std::vector<std::string>{"END"}));
  EXPECT_EQ(g.stop_token_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_TRUE(g.ignore_eos);
  EXPECT_EQ(g.logit_bias, (std::vector<std::pair<int32_t, float>>{{3, 2.5f}, {9, -100.0f}}));
  EXPECT_EQ(g.n, 3);
  EXPECT_FALSE(g.activation_bias.has_value());
  EXPECT_TRUE(g.layer_activation_bias.empty());
  EXPECT_EQ(r->n, 3);
  EXPECT_EQ(r->seed, 11u);
  EXPECT_TRUE(r->stream);
  EXPECT_TRUE(r->include_usage);
  EXPECT_TRUE(r->include_stop);
  EXPECT_EQ(r->model, "m");
  EXPECT_FALSE(r->logprobs.has_value());
}

TEST(OpenAiParse, RoutingCarriesTheActivationBias) {
  auto r = Completions(R"({"prompt": "x", "routing": {"activation_bias": 1.5}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompts[0].request.activation_bias, 1.5f);
  r = Chat(R"({"messages": [{"role": "user", "content": "hi"}],
               "routing": {"activation_bias": 2, "layer_activation_bias": [-1, 0, 0.25]}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompts[0].request.activation_bias, 2.0f);
  EXPECT_EQ(r->prompts[0].request.layer_activation_bias, (std::vector<float>{-1.0f, 0.0f, 0.25f}));
}

TEST(OpenAiParse, EchoWithLogprobsScoresThePrompt) {
  auto scored =
      Completions(R"({"prompt": [2, 40, 41], "echo": true, "logprobs": 3, "max_tokens": 0})");
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_TRUE(scored->echo);
  EXPECT_EQ(scored->logprobs, 3);
  EXPECT_EQ(scored->prompts[0].request.prompt_logprobs, 3);
  EXPECT_EQ(scored->prompts[0].request.logprobs, 3);
  EXPECT_TRUE(scored->prompts[0].request.token_logprobs);
  // Echo of max_tokens 0 without logprobs still runs the prompt (scored, nothing sampled).
  auto bare = Completions(R"({"prompt": "x", "echo": true, "max_tokens": 0})");
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->prompts[0].request.prompt_logprobs, 0);
  // Without echo, nothing scores the prompt.
  auto plain = Completions(R"({"prompt": "x", "logprobs": 2})");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->prompts[0].request.prompt_logprobs, -1);
  // vLLM's prompt_logprobs asks for it directly.
  auto vllm = Completions(R"({"prompt": "x", "prompt_logprobs": 1})");
  ASSERT_TRUE(vllm.ok()) << vllm.status();
  EXPECT_EQ(vllm->prompts[0].request.prompt_logprobs, 1);
}

TEST(OpenAiParse, WrongTypesAndUnsupportedFieldsAreNamed) {
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "max_tokens": "ten"})")),
            "max_tokens: expected an integer, got string");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "max_tokens": 1.5})")),
            "max_tokens: expected an integer, got number");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "max_tokens": 99999999999})")),
            "max_tokens: 99999999999 is out of range");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "temperature": true})")),
            "temperature: expected a number, got boolean");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "stream": 1})")),
            "stream: expected true or false, got number");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "stop": ["a", 3]})")),
            "stop[1]: expected a string, got number");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "logit_bias": {"one": 1}})")),
            "logit_bias: key \"one\" is not a token id");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "logit_bias": {"1": "big"}})")),
            "logit_bias[\"1\"]: expected a number, got string");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "routing": 1})")),
            "routing: expected an object, got number");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "routing": {"activation_bias": "up"}})")),
            "routing.activation_bias: expected a number, got string");
  EXPECT_EQ(
      ErrorOf(Completions(R"({"prompt": "x", "routing": {"layer_activation_bias": [1, null]}})")),
      "routing.layer_activation_bias[1]: expected a number, got null");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "routing": {"layer_activation_bias": 2}})")),
            "routing.layer_activation_bias: expected an array of numbers, got number");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "routing": {"activation": 2}})")),
            "routing.activation: unknown field; expected activation_bias or "
            "layer_activation_bias");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "user": 5})")),
            "user: expected a string, got number");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "suffix": "y"})")),
            "suffix: not supported by this server");
  EXPECT_EQ(ErrorOf(Completions(R"({"prompt": "x", "best_of": 2})")),
            "best_of: only best_of equal to n is supported");
  EXPECT_TRUE(Completions(R"({"prompt": "x", "best_of": 1})").ok());
  EXPECT_EQ(ErrorOf(Chat(R"({"messages": [{"role": "user", "content": "hi"}], "tools": []})")),
            "tools: not supported by this server");
  EXPECT_EQ(
      ErrorOf(Chat(R"({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2})")),
      "top_logprobs: needs logprobs: true");
  EXPECT_EQ(ErrorOf(Completions(R"([1, 2])")), "body: expected a JSON object, got array");
  // null reads as absent, as the SDKs send it.
  EXPECT_TRUE(Completions(R"({"prompt": "x", "max_tokens": null, "stop": null})").ok());
  for (const char* body : {R"({})", R"({"prompt": 5})", R"({"prompt": []})",
                           R"({"prompt": [1, "a"]})", R"({"prompt": {"a": 1}})"}) {
    EXPECT_EQ(ErrorParam(ErrorOf(Completions(body))), "prompt") << body;
  }
  for (const char* body :
       {R"({})", R"({"messages": []})", R"({"messages": ["hi"]})",
        R"({"messages": [{"role": "user"}]})", R"({"messages": [{"content": "hi"}]})"}) {
    EXPECT_EQ(ErrorParam(ErrorOf(Chat(body))), "messages") << body;
  }
}

TEST(ChatTemplateTest, TheDefaultRendersPlainTurns) {
  auto r = Chat(R"({"messages": [{"role": "system", "content": "Be terse."},
                                  {"role": "user", "content": "Hi {role}"}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  // A message's own "{role}" is text, not a placeholder.
  EXPECT_EQ(r->prompts[0].text, "system: Be terse.\nuser: Hi {role}\nassistant:");
  // Content as an array of text parts, as the chat API allows.
  auto parts = Chat(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                   {"type": "text", "text": "b"}]}]})");
  ASSERT_TRUE(parts.ok()) << parts.status();
  EXPECT_EQ(parts->prompts[0].text, "user: ab\nassistant:");
}

TEST(ChatTemplateTest, FromJsonReadsOneAndNamesWhatIsWrong) {
  auto t = ChatTemplate::FromJson(
      R"({"message": "<{role}>{content}</{role}>", "generation_prompt": "<bot>"})", "chat.json");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->Render({{"user", "hey"}, {"bot", "yo"}}), "<user>hey</user><bot>yo</bot><bot>");
  auto r = Chat(R"({"messages": [{"role": "user", "content": "x"}]})", *t);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prompts[0].text, "<user>x</user><bot>");
  EXPECT_EQ(
      ChatTemplate::FromJson("[1]", "chat.json").status().message(),
      "chat.json: a chat template is a JSON object {\"message\": \"...{role}...{content}...\", "
      "\"generation_prompt\": \"...\"}");
  EXPECT_EQ(ChatTemplate::FromJson(R"({"message": "{role}"})", "f").status().message(),
            "f: message has no {content}");
  EXPECT_EQ(ChatTemplate::FromJson(R"({"template": "x"})", "f").status().message(),
            "f: unknown key \"template\"; expected message and generation_prompt");
  EXPECT_EQ(ChatTemplate::FromJson(R"({"message": 3})", "f").status().message(),
            "f: message is not a string");
}

TEST(OpenAiErrors, StatusesParamsAndTypes) {
  EXPECT_EQ(HttpStatusFor(absl::InvalidArgumentError("x")), 400);
  EXPECT_EQ(HttpStatusFor(absl::ResourceExhaustedError("x")), 429);
  EXPECT_EQ(HttpStatusFor(absl::UnavailableError("x")), 503);
  EXPECT_EQ(HttpStatusFor(absl::UnauthenticatedError("x")), 401);
  EXPECT_EQ(HttpStatusFor(absl::InternalError("x")), 500);
  EXPECT_EQ(ErrorParam("max_tokens: 0 is outside 1..4096"), "max_tokens");
  EXPECT_EQ(ErrorParam("stop[3]: 0 bytes"), "stop");
  EXPECT_EQ(ErrorParam("the server is full: 3 streams"), "");
  EXPECT_EQ(ErrorParam("no colon"), "");
  const json body = ErrorBody(400, "top_p: 2 is outside (0, 1]", "top_p");
  EXPECT_EQ(body["error"]["message"], "top_p: 2 is outside (0, 1]");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "top_p");
  EXPECT_EQ(body["error"]["code"], 400);
  EXPECT_TRUE(ErrorBody(429, "full")["error"]["param"].is_null());
  EXPECT_EQ(ErrorBody(429, "full")["error"]["type"], "rate_limit_error");
  EXPECT_EQ(ErrorBody(401, "key")["error"]["type"], "authentication_error");
  EXPECT_EQ(ErrorBody(503, "draining")["error"]["type"], "service_unavailable_error");
  EXPECT_EQ(ErrorBody(500, "backend")["error"]["type"], "internal_error");
  // Invalid UTF-8 in a message never makes invalid JSON.
  EXPECT_NO_THROW(ErrorBody(400, std::string("prompt: bad \xff byte")).dump());
  EXPECT_STREQ(OpenAiFinishReason(FinishReason::kEos), "stop");
  EXPECT_STREQ(OpenAiFinishReason(FinishReason::kStop), "stop");
  EXPECT_STREQ(OpenAiFinishReason(FinishReason::kStopToken), "stop");
  EXPECT_STREQ(OpenAiFinishReason(FinishReason::kLength), "length");
  EXPECT_STREQ(OpenAiFinishReason(FinishReason::kCancelled), "abort");
}

class OpenAiResponseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Load(std::string(SEQBOAT_FIXTURES_DIR) + "/enwik8_tiny/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    auto tokenizer = Tokenizer::FromJson((*model)->tokenizer_json());
    ASSERT_TRUE(tokenizer.ok());
    tokenizer_ = std::make_unique<Tokenizer>(*std::move(tokenizer));
  }

  static GeneratedToken Scored(int32_t id, float logprob) {
    GeneratedToken t;
    t.token = id;
    t.logprob = logprob;
    t.top = {{id, logprob}};
    return t;
  }

  std::unique_ptr<Tokenizer> tokenizer_;
  ResponseIdentity identity_{"cmpl-1", "tiny", 1700000000};
};

TEST_F(OpenAiResponseTest, EchoedTokenPromptHasAnUnscoredFirstToken) {
  auto request =
      Completions(R"({"prompt": [2, 40, 41], "echo": true, "logprobs": 1, "max_tokens": 1})");
  ASSERT_TRUE(request.ok());
  PromptResult result;
  result.prompt_tokens = {2, 40, 41};
  result.prompt_scores = {Scored(40, -1.5f), Scored(41, -0.5f)};
  ChoiceResult choice;
  choice.tokens = {Scored(42, -0.25f)};
  choice.text = tokenizer_->TokenText(42);
  choice.generated_tokens = 1;
  result.choices = {choice};
  const json body = CompletionResponse(*request, {result}, *tokenizer_, identity_);
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["id"], "cmpl-1");
  const json& c = body["choices"][0];
  EXPECT_EQ(c["text"], tokenizer_->Decode({2, 40, 41}) + choice.text);
  EXPECT_EQ(c["logprobs"]["tokens"].size(), 4u);
  EXPECT_TRUE(c["logprobs"]["token_logprobs"][0].is_null());
  EXPECT_TRUE(c["logprobs"]["top_logprobs"][0].is_null());
  EXPECT_FLOAT_EQ(c["logprobs"]["token_logprobs"][1].get<float>(), -1.5f);
  EXPECT_FLOAT_EQ(c["logprobs"]["token_logprobs"][3].get<float>(), -0.25f);
  EXPECT_EQ(body["usage"]["prompt_tokens"], 3);
  EXPECT_EQ(body["usage"]["completion_tokens"], 1);
  EXPECT_EQ(body["usage"]["total_tokens"], 4);
}

TEST_F(OpenAiResponseTest, StreamEventsHaveTheirApisShapes) {
  auto chat = Chat(R"({"messages": [{"role": "user", "content": "hi"}], "stream": true, "n": 2})");
  ASSERT_TRUE(chat.ok());
  PromptResult result;
  const auto start = StreamStartEvent(*chat, 1, chat->prompts[0], result, *tokenizer_, identity_);
  ASSERT_TRUE(start.has_value());
  EXPECT_EQ((*start)["object"], "chat.completion.chunk");
  EXPECT_EQ((*start)["choices"][0]["index"], 1);
  EXPECT_EQ((*start)["choices"][0]["delta"]["role"], "assistant");
  const json delta = StreamDeltaEvent(*chat, 1, "ab", {}, {}, 0, *tokenizer_, identity_);
  EXPECT_EQ(delta["choices"][0]["delta"], json({{"content", "ab"}}));
  const json finish = StreamFinishEvent(*chat, 1, FinishReason::kLength, identity_);
  EXPECT_EQ(finish["choices"][0]["delta"], json::object());
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "length");
  const json usage = StreamUsageEvent(*chat, {result}, identity_);
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 0);
  // A completion without echo has no start event; its deltas carry text and offsets.
  auto completion = Completions(R"({"prompt": "x", "stream": true, "logprobs": 0})");
  ASSERT_TRUE(completion.ok());
  EXPECT_FALSE(
      StreamStartEvent(*completion, 0, completion->prompts[0], result, *tokenizer_, identity_));
  auto ids = tokenizer_->Encode("ab");
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 2u);
  const std::string a = tokenizer_->TokenText((*ids)[0]), b = tokenizer_->TokenText((*ids)[1]);
  const json text =
      StreamDeltaEvent(*completion, 0, a + b, {Scored((*ids)[0], -1), Scored((*ids)[1], -2)}, {},
                       10, *tokenizer_, identity_);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], a + b);
  EXPECT_EQ(text["choices"][0]["logprobs"]["text_offset"],
            json({10, 10 + static_cast<int>(a.size())}));
}

TEST_F(OpenAiResponseTest, ActivationsFollowTheTextOffsets) {
  auto ids = tokenizer_->Encode(
      "a\xc3\xa9"
      "b");  // a, two bytes of one character, b
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 4u);
  // The choice's output places each token where its text begins; the character's first byte
  // makes no text of its own and begins where the character does.
  ChoiceOutput output(*tokenizer_, {});
  for (size_t i = 0; i < ids->size(); ++i) {
    GeneratedToken t;
    t.token = (*ids)[i];
    t.activations = {static_cast<uint8_t>(i % 2), 1, 0};
    output.Append(t);
  }
  output.Finish(FinishReason::kLength);
  ChoiceOutput::Chunk chunk = output.Take();
  const std::string text =
      "a\xc3\xa9"
      "b";
  EXPECT_EQ(chunk.text, text);
  ASSERT_EQ(chunk.tokens.size(), 4u);
  EXPECT_EQ(chunk.text_offsets, (std::vector<int64_t>{0, 1, 1, 2}));
  const json layers = json({{0, 1, 0}, {1, 1, 0}, {0, 1, 0}, {1, 1, 0}});

  auto stream = Completions(R"({"prompt": "x", "stream": true, "return_activations": true})");
  ASSERT_TRUE(stream.ok()) << stream.status();
  EXPECT_TRUE(stream->return_activations);
  EXPECT_TRUE(stream->prompts[0].request.return_activations);
  const json delta =
      StreamDeltaEvent(*stream, 0, text, chunk.tokens, {7, 8, 8, 9}, 7, *tokenizer_, identity_);
  EXPECT_EQ(delta["choices"][0]["activations"]["text_offset"], json({7, 8, 8, 9}));
  EXPECT_EQ(delta["choices"][0]["activations"]["layers"], layers);

  // A whole response counts from the start of the choice's text, echoed prompt included.
  auto whole = Completions(R"({"prompt": "1234567", "echo": true, "return_activations": true})");
  ASSERT_TRUE(whole.ok()) << whole.status();
  PromptResult result;
  ChoiceResult choice;
  choice.tokens = chunk.tokens;
  choice.text_offsets = chunk.text_offsets;
  choice.text = text;
  result.choices = {choice};
  const json body = CompletionResponse(*whole, {result}, *tokenizer_, identity_);
  EXPECT_EQ(body["choices"][0]["text"], "1234567" + text);
  EXPECT_EQ(body["choices"][0]["activations"]["text_offset"], json({7, 8, 8, 9}));
  EXPECT_EQ(body["choices"][0]["activations"]["layers"], layers);

  auto chat =
      Chat(R"({"messages": [{"role": "user", "content": "hi"}], "return_activations": true})");
  ASSERT_TRUE(chat.ok()) << chat.status();
  const json message = CompletionResponse(*chat, {result}, *tokenizer_, identity_);
  EXPECT_EQ(message["choices"][0]["activations"]["text_offset"], json({0, 1, 1, 2}));
  // Not asked: no field.
  auto plain = Completions(R"({"prompt": "x"})");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(CompletionResponse(*plain, {result}, *tokenizer_, identity_)["choices"][0].contains(
      "activations"));
  EXPECT_NE(ErrorOf(Completions(R"({"prompt": "x", "return_activations": 1})"))
                .find("return_activations"),
            std::string::npos);
}

}  // namespace
}  // namespace seqboat::server
