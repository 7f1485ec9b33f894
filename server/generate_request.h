// A GenerateRequest (the gRPC API's message) through the request builder: the message's fields
// as the builder reads them, and the paths errors name. Needs the protobuf messages only, not
// gRPC (the request fuzzer builds it alone).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/engine/request.h"
#include "runtime/model/config.h"
#include "runtime/model/tokenizer.h"
#include "seqboat/v1/seqboat.pb.h"
#include "server/request_builder.h"

namespace seqboat::server {

// A field's path in a GenerateRequest, for error messages.
std::string GrpcFieldPath(ApiField field);

// What a GenerateRequest asks for, before any rule is applied.
GenerationRequest FromProto(const seqboat::v1::GenerateRequest& r);

// The gRPC request through the request builder; InvalidArgument naming the field by its path
// in the request. `seed` is used when the request sets none.
absl::Status BuildGenerationParams(const seqboat::v1::GenerateRequest& request,
                                   const Tokenizer& tokenizer, const ModelConfig& config,
                                   const RequestRules& rules, uint64_t seed,
                                   GenerationParams* params,
                                   std::vector<std::string>* stop_sequences);

}  // namespace seqboat::server
