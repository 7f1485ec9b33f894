// libFuzzer target: a serialized GenerateRequest (the bytes a client sends to Generate) through
// the path every request takes before it reaches the model: protobuf parsing, the request
// builder (defaults, the tokenizer, every rule), the engine's checks (Engine::Submit), then a
// sampler built from it drawing a few tokens. No input may crash it.
#include <google/protobuf/stubs/logging.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "runtime/engine/engine.h"
#include "runtime/engine/request.h"
#include "runtime/engine/sampler.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "server/generate_request.h"

namespace {

struct Setup {
  Setup() {
    // Protobuf logs each string field with invalid UTF-8: noise here.
    google::protobuf::SetLogHandler(
        [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
    auto model =
        seqboat::Model::Load(std::string(SEQBOAT_FIXTURES_DIR) + "/enwik8_tiny/model.safetensors");
    if (!model.ok()) std::abort();
    config = (*model)->config();
    auto parsed = seqboat::Tokenizer::FromJson((*model)->tokenizer_json());
    if (!parsed.ok()) std::abort();
    tokenizer = std::make_unique<seqboat::Tokenizer>(*std::move(parsed));
    rules.engine = seqboat::EngineOptions().request_limits();
  }
  seqboat::ModelConfig config;
  std::unique_ptr<seqboat::Tokenizer> tokenizer;
  seqboat::server::RequestRules rules;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Setup* setup = new Setup();
  seqboat::v1::GenerateRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
  seqboat::GenerationParams params;
  std::vector<std::string> stops;
  if (!seqboat::server::BuildGenerationParams(request, *setup->tokenizer, setup->config,
                                              setup->rules, /*seed=*/1, &params, &stops)
           .ok()) {
    return 0;
  }
  const int V = setup->config.vocab_size, L = setup->config.layers;
  if (seqboat::CheckGenerationParams(params, setup->rules.engine, V, L).has_value()) return 0;
  // An accepted activation bias is none or one finite value per layer, as backends require.
  if (!params.activation_bias.empty() && static_cast<int>(params.activation_bias.size()) != L)
    std::abort();
  for (float b : params.activation_bias) {
    if (!std::isfinite(b)) std::abort();
  }
  // What the engine does with an accepted request: a sampler per fork, the prompt observed,
  // then draws from logits (made from the input, so that they vary).
  seqboat::Sampler sampler(params.sampling, V);
  sampler.ObservePrompt(params.prompt);
  std::vector<float> logits(V);
  for (int step = 0; step < 4; ++step) {
    for (int v = 0; v < V; ++v) {
      logits[v] = static_cast<float>(data[(v * 31 + step) % size]) / 16.0f - 8.0f;
    }
    const int32_t token = sampler.Sample(logits);
    if (token < 0 || token >= V) std::abort();
    float logprob = 0.0f;
    std::vector<seqboat::TokenLogprob> top;
    seqboat::Sampler::TopLogprobs(logits, params.top_logprobs, token, &logprob, &top);
    if (!(logprob <= 0.0f)) std::abort();  // NaN or above 0 would be a bug
    sampler.ObserveGenerated(token);
    (void)sampler.IsStopToken(token);
  }
  return 0;
}
