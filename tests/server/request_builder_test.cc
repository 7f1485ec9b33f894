// The request builder: one rule, named in each front-end's own terms.
#include "server/request_builder.h"

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

}  // namespace
}  // namespace seqboat::server
