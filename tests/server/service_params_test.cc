// GenerateRequest -> GenerationParams: defaults, the start token, and one INVALID_ARGUMENT
// naming the field for every bad value.
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "server/service.h"

namespace seqboat::server {
namespace {

namespace v1 = ::seqboat::v1;

class ServiceParamsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto model = Model::Load(std::string(SEQBOAT_FIXTURES_DIR) + "/enwik8_tiny/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    config_ = new ModelConfig((*model)->config());
    auto tokenizer = Tokenizer::FromJson((*model)->tokenizer_json());
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = new Tokenizer(*std::move(tokenizer));
  }

  absl::Status Build(const v1::GenerateRequest& request, GenerationParams* params = nullptr,
                     std::vector<std::string>* stops = nullptr) {
    GenerationParams local_params;
    std::vector<std::string> local_stops;
    return BuildGenerationParams(request, *tokenizer_, *config_, limits_.rules, /*seed=*/77,
                                 params ? params : &local_params, stops ? stops : &local_stops);
  }

  // The status of a request that starts valid and is then broken by `edit`.
  template <typename Edit>
  absl::Status Broken(Edit edit) {
    v1::GenerateRequest request;
    request.mutable_tokens()->add_ids(kEosId);
    edit(request);
    return Build(request);
  }

  static ModelConfig* config_;
  static Tokenizer* tokenizer_;
  ServiceLimits limits_;
};

ModelConfig* ServiceParamsTest::config_ = nullptr;
Tokenizer* ServiceParamsTest::tokenizer_ = nullptr;

TEST_F(ServiceParamsTest, TextPromptStartsWithTheStartTokenAndDefaultsApply) {
  v1::GenerateRequest request;
  request.set_text("hi");
  GenerationParams params;
  ASSERT_TRUE(Build(request, &params).ok());
  auto encoded = tokenizer_->Encode("hi");
  ASSERT_TRUE(encoded.ok());
  std::vector<int32_t> expected = {kEosId};
  expected.insert(expected.end(), encoded->begin(), encoded->end());
  EXPECT_EQ(params.prompt, expected);
  EXPECT_EQ(params.sampling.temperature, 1.0f);
  EXPECT_EQ(params.sampling.top_p, 1.0f);
  EXPECT_EQ(params.sampling.repetition_penalty, 1.0f);
  EXPECT_EQ(params.sampling.seed, 77u);
  EXPECT_EQ(params.max_new_tokens, limits_.rules.default_max_new_tokens);
  EXPECT_FALSE(params.ignore_eos);
}

TEST_F(ServiceParamsTest, TokenPromptAndExplicitFieldsPassThrough) {
  v1::GenerateRequest request;
  for (int id : {2, 10, 11}) request.mutable_tokens()->add_ids(id);
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_sampling()->set_top_k(5);
  request.mutable_sampling()->set_seed(9);  // the caller passes the request's seed in
  request.mutable_stopping()->set_max_new_tokens(3);
  request.mutable_stopping()->add_stop("ab");
  request.mutable_stopping()->add_stop_token_ids(7);
  request.mutable_stopping()->set_ignore_eos(true);
  request.set_logprobs(4);
  request.set_return_activations(true);
  GenerationParams params;
  std::vector<std::string> stops;
  ASSERT_TRUE(Build(request, &params, &stops).ok());
  EXPECT_EQ(params.prompt, (std::vector<int32_t>{2, 10, 11}));
  EXPECT_EQ(params.sampling.temperature, 0.0f);
  EXPECT_EQ(params.sampling.top_k, 5);
  EXPECT_EQ(params.max_new_tokens, 3);
  EXPECT_EQ(stops, (std::vector<std::string>{"ab"}));
  EXPECT_EQ(params.sampling.stop_token_ids, (std::vector<int32_t>{7}));
  EXPECT_TRUE(params.ignore_eos);
  EXPECT_EQ(params.top_logprobs, 4);
  EXPECT_TRUE(params.return_activations);
}

void ExpectInvalid(const absl::Status& status, const std::string& field) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(std::string(status.message()).rfind(field, 0), 0u)
      << "message should start with '" << field << "': " << status.message();
}

TEST_F(ServiceParamsTest, BadValuesNameTheirField) {
  ExpectInvalid(Build(v1::GenerateRequest()), "prompt");
  {
    v1::GenerateRequest request;
    request.set_text("");
    ExpectInvalid(Build(request), "text");
  }
  ExpectInvalid(Broken([](auto& r) { r.mutable_tokens()->clear_ids(); }), "tokens.ids");
  ExpectInvalid(Broken([&](auto& r) { r.mutable_tokens()->add_ids(config_->vocab_size); }),
                "tokens.ids[1]");
  ExpectInvalid(Broken([](auto& r) { r.mutable_tokens()->add_ids(-1); }), "tokens.ids[1]");
  ExpectInvalid(Broken([](auto& r) { r.mutable_tokens()->add_ids(kPadId); }), "tokens.ids[1]");
  ExpectInvalid(Broken([](auto& r) { r.mutable_sampling()->set_temperature(-0.5f); }),
                "sampling.temperature");
  ExpectInvalid(Broken([](auto& r) { r.mutable_sampling()->set_top_p(0.0f); }), "sampling.top_p");
  ExpectInvalid(Broken([](auto& r) { r.mutable_sampling()->set_top_p(1.5f); }), "sampling.top_p");
  ExpectInvalid(Broken([](auto& r) { r.mutable_sampling()->set_top_k(-1); }), "sampling.top_k");
  ExpectInvalid(Broken([](auto& r) { r.mutable_sampling()->set_min_p(2.0f); }), "sampling.min_p");
  ExpectInvalid(Broken([](auto& r) { r.mutable_sampling()->set_repetition_penalty(0.0f); }),
                "sampling.repetition_penalty");
  ExpectInvalid(
      Broken([&](auto& r) { r.mutable_stopping()->add_stop_token_ids(config_->vocab_size); }),
      "stopping.stop_token_ids[0]");
  ExpectInvalid(Broken([&](auto& r) {
                  for (int i = 0; i <= limits_.rules.max_stop_sequences; ++i)
                    r.mutable_stopping()->add_stop("x");
                }),
                "stopping.stop");
  ExpectInvalid(Broken([](auto& r) { r.mutable_stopping()->add_stop(""); }), "stopping.stop[0]");
  ExpectInvalid(
      Broken([&](auto& r) {
        r.mutable_stopping()->add_stop(std::string(limits_.rules.max_stop_bytes + 1, 'x'));
      }),
      "stopping.stop[0]");
  ExpectInvalid(Broken([](auto& r) { r.mutable_stopping()->add_stop("\xC3"); }),
                "stopping.stop[0]");
  ExpectInvalid(Broken([&](auto& r) { r.set_logprobs(limits_.rules.engine.max_top_logprobs + 1); }),
                "logprobs");
  ExpectInvalid(Broken([](auto& r) { r.set_logprobs(-1); }), "logprobs");
  ExpectInvalid(Broken([](auto& r) { r.set_request_id(std::string(300, 'r')); }), "request_id");
  // Engine rules, named by their path in the request.
  ExpectInvalid(Broken([](auto& r) { r.mutable_stopping()->set_max_new_tokens(0); }),
                "stopping.max_new_tokens");
  ExpectInvalid(
      Broken([&](auto& r) {
        r.mutable_stopping()->set_max_new_tokens(limits_.rules.engine.max_new_tokens_limit + 1);
      }),
      "stopping.max_new_tokens");
  ExpectInvalid(Broken([&](auto& r) { r.mutable_sampling()->set_top_k(config_->vocab_size + 1); }),
                "sampling.top_k");
  for (float bad : {1e-40f, 1e38f}) {
    ExpectInvalid(Broken([&](auto& r) { r.mutable_sampling()->set_repetition_penalty(bad); }),
                  "sampling.repetition_penalty");
  }
  ExpectInvalid(Broken([&](auto& r) {
                  for (int i = 0; i <= limits_.rules.engine.max_stop_token_ids; ++i)
                    r.mutable_stopping()->add_stop_token_ids(5);
                }),
                "stopping.stop_token_ids:");
}

TEST_F(ServiceParamsTest, PromptLimitsNameTheFormOfThePrompt) {
  limits_.rules.engine.max_prompt_tokens = 8;
  limits_.rules.max_text_bytes = 64;
  v1::GenerateRequest request;
  for (int i = 0; i < 9; ++i) request.mutable_tokens()->add_ids(5);
  ExpectInvalid(Build(request), "tokens.ids: 9 tokens; at most 8");
  request.mutable_tokens()->mutable_ids()->RemoveLast();
  EXPECT_TRUE(Build(request).ok());
  // The byte tokenizer: a token a byte, after the start token.
  request.set_text("1234567");
  EXPECT_TRUE(Build(request).ok());
  request.set_text("12345678");
  ExpectInvalid(Build(request), "text: encodes to more than 8 tokens with the start token");
  request.set_text(std::string(65, 'x'));  // refused by size, before the tokenizer runs
  ExpectInvalid(Build(request), "text: 65 bytes; at most 64");
}

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

TEST(ParseRequestTest, InvalidUtf8NamesTheFieldByItsPath) {
  v1::GenerateRequest request;
  // Field 1 (text), length 2: "a\xFF".
  absl::Status status = ParseRequest(Bytes(std::string("\x0a\x02"
                                                       "a\xff",
                                                       4)),
                                     &request);
  ExpectInvalid(status, "text: not valid UTF-8");
  // Field 4 (stopping) holding field 2 (stop) = "\xC3".
  status = ParseRequest(Bytes(std::string("\x22\x03\x12\x01\xc3", 5)), &request);
  ExpectInvalid(status, "stopping.stop: not valid UTF-8");
  status = ParseRequest(Bytes(std::string("\x3a\x01\xfe", 3)), &request);
  ExpectInvalid(status, "request_id: not valid UTF-8");
  v1::TokenizeRequest tokenize;
  ExpectInvalid(ParseRequest(Bytes(std::string("\x0a\x01\x80", 3)), &tokenize),
                "text: not valid UTF-8");
}

TEST(ParseRequestTest, MalformedBytesSayWhatWasExpected) {
  v1::GenerateRequest request;
  ExpectInvalid(ParseRequest(Bytes("\xff\xff\xff"), &request),
                "the request is not a valid seqboat.v1.GenerateRequest");
  // A valid message parses.
  v1::GenerateRequest valid;
  valid.set_text("caf\xC3\xA9");
  valid.mutable_stopping()->add_stop("\n");
  ASSERT_TRUE(ParseRequest(Bytes(valid.SerializeAsString()), &request).ok());
  EXPECT_EQ(request.text(), "caf\xC3\xA9");
}

}  // namespace
}  // namespace seqboat::server
