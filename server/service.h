// The seqboat.v1.SeqBoat gRPC service (callback API) over the engine: one reactor per call,
// at most one write in flight per stream, never a blocking wait inside a callback.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/model/config.h"
#include "runtime/model/tokenizer.h"
#include "seqboat/v1/seqboat.grpc.pb.h"
#include "server/metrics.h"

namespace seqboat::server {

struct ServiceLimits {
  int32_t max_stop_sequences = 16;
  int32_t max_stop_bytes = 256;
  int32_t max_logprobs = 20;
  int32_t default_max_new_tokens = 16;
  // The engine's own deadline is the call's deadline less this, so that a request that runs
  // out of time still gets its final message (finish reason DEADLINE) before gRPC ends it.
  absl::Duration deadline_margin = absl::Milliseconds(20);
};

class SeqBoatService final : public seqboat::v1::SeqBoat::CallbackService {
 public:
  // `engine`, `tokenizer` and `metrics` (may be null) must outlive the service.
  SeqBoatService(Engine* engine, const Tokenizer* tokenizer, const ModelConfig& config, seqboat::v1::ModelInfo info,
                 const ServiceLimits& limits, std::vector<std::string> api_keys, Metrics* metrics);

  grpc::ServerWriteReactor<seqboat::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const seqboat::v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context, const seqboat::v1::TokenizeRequest* request,
                                     seqboat::v1::TokenizeResponse* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const seqboat::v1::GetModelInfoRequest* request,
                                         seqboat::v1::ModelInfo* response) override;

  // From now on Generate answers UNAVAILABLE (the server drains).
  void StopAccepting() { accepting_.store(false); }

  // Everything the reactors share (read-only after construction, except the seed source).
  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
  std::atomic<bool> accepting_{true};
};

// Builds a GenerationParams from a request; InvalidArgument naming the field. Exposed for
// tests; `seed` is used when the request sets none.
absl::Status BuildGenerationParams(const seqboat::v1::GenerateRequest& request, const Tokenizer& tokenizer,
                                   const ModelConfig& config, const ServiceLimits& limits, uint64_t seed,
                                   GenerationParams* params, std::vector<std::string>* stop_sequences);

// Valid UTF-8 stays as it is; every byte of an invalid sequence becomes the four characters
// \xNN (protobuf strings must be valid UTF-8).
std::string EscapeInvalidUtf8(const std::string& bytes);

}  // namespace seqboat::server
