// The request builder: one rule, named in each front-end's own terms.
#include "server/request_builder.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "runtime/model/model.h"

namespace seqboat::server {
namespace {

class RequestBuilderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto model = Model::Load(std::string(SEQBOAT_FIXTURES_DIR) + "/enwik8_tiny/model.safetensors");
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    auto tokenizer = Tokenizer::FromJson(model_->tokenizer_json());
    ASSERT_TRUE(tokenizer.ok());
    tokenizer_ = std::make_unique<Tokenizer>(*std::move(tokenizer));
  }

  std::string Error(const GenerationRequest& request, const FieldNames& names) {
    GenerationParams params;
    std::vector<std::string> stops;
    absl::Status status =
        BuildGeneration(request, *tokenizer_, model_->config(), rules_, names, 1, &params, &stops);
    EXPECT_FALSE(status.ok());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    return std::string(status.message());
  }

  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tokenizer_;
  RequestRules rules_;
};

// An OpenAI-style naming, as an HTTP front-end would give it.
std::string HttpName(ApiField field) {
  switch (field) {
    case ApiField::kMaxNewTokens: return "max_tokens";
    case ApiField::kText: return "prompt";
    case ApiField::kStop: return "stop";
    default: return "other";
  }
}

TEST_F(RequestBuilderTest, OneRuleIsNamedInEachFrontEndsTerms) {
  GenerationRequest request;
  request.text = "hello";
  request.max_new_tokens = 0;
  EXPECT_EQ(Error(request, HttpName), "max_tokens: 0 is outside 1..4096");
  EXPECT_EQ(Error(request, [](ApiField) { return std::string("stopping.max_new_tokens"); }),
            "stopping.max_new_tokens: 0 is outside 1..4096");
  request.max_new_tokens = 4;
  request.stop = {""};
  EXPECT_EQ(Error(request, HttpName), "stop[0]: 0 bytes; expected 1..256");
  request.stop.clear();
  rules_.engine.max_prompt_tokens = 3;
  EXPECT_EQ(Error(request, HttpName), "prompt: encodes to more than 3 tokens with the start token");
}

TEST_F(RequestBuilderTest, ThePromptErrorNamesItsForm) {
  auto names = [](ApiField field) {
    return std::string(field == ApiField::kTokens ? "tokens"
                       : field == ApiField::kText ? "text"
                                                  : "prompt");
  };
  GenerationRequest request;
  EXPECT_EQ(Error(request, names), "prompt: give a text or token ids");
  request.tokens = std::vector<int32_t>{2, 1};
  EXPECT_EQ(Error(request, names), "tokens[1]: the padding id 1 is not a token a model reads");
  request.tokens.reset();
  request.text = "";
  EXPECT_EQ(Error(request, names), "text: empty; give a prompt");
}

// The activation bias: one value for every layer (the request's or the server's default) or
// one per layer; all zeros is no bias at all.
TEST_F(RequestBuilderTest, TheActivationBiasResolvesToOneValuePerLayer) {
  auto names = [](ApiField field) {
    return std::string(field == ApiField::kActivationBias        ? "routing.activation_bias"
                       : field == ApiField::kLayerActivationBias ? "routing.layer_activation_bias"
                                                                 : "other");
  };
  auto build = [&](const GenerationRequest& request) {
    GenerationParams params;
    std::vector<std::string> stops;
    EXPECT_TRUE(
        BuildGeneration(request, *tokenizer_, model_->config(), rules_, names, 1, &params, &stops)
            .ok());
    return params.activation_bias;
  };
  GenerationRequest request;
  request.text = "hello";
  EXPECT_TRUE(build(request).empty());
  rules_.default_activation_bias = 0.5f;
  EXPECT_EQ(build(request), (std::vector<float>{0.5f, 0.5f, 0.5f}));
  request.activation_bias = -2.0f;
  EXPECT_EQ(build(request), (std::vector<float>{-2.0f, -2.0f, -2.0f}));
  request.activation_bias = 0.0f;  // a request's own 0 overrides the default
  EXPECT_TRUE(build(request).empty());
  request.layer_activation_bias = {1.0f, 0.0f, -1.0f};
  EXPECT_EQ(build(request), (std::vector<float>{1.0f, 0.0f, -1.0f}));
  request.layer_activation_bias = {0.0f, -0.0f, 0.0f};
  EXPECT_TRUE(build(request).empty());

  request.layer_activation_bias = {1.0f, 2.0f};
  EXPECT_EQ(Error(request, names),
            "routing.layer_activation_bias: 2 values; expected one per layer (3) or none");
  request.layer_activation_bias = {1.0f, std::nanf(""), 0.0f};
  EXPECT_EQ(Error(request, names), "routing.layer_activation_bias[1]: nan is outside -1000..1000");
  request.layer_activation_bias.clear();
  request.activation_bias = 1e6f;
  EXPECT_EQ(Error(request, names), "routing.activation_bias: 1e+06 is outside -1000..1000");
  request.activation_bias = -std::numeric_limits<float>::infinity();
  rules_.engine.max_activation_bias = 4.0f;
  EXPECT_EQ(Error(request, names), "routing.activation_bias: -inf is outside -4..4");
}

}  // namespace
}  // namespace seqboat::server
