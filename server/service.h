// The seqboat.v1.SeqBoat gRPC service (callback API) over the engine: one reactor per call,
// at most one write in flight per stream, never a blocking wait inside a callback.
//
// The methods take and give raw bytes, parsed and serialized here, so that a request
// protobuf rejects (a string field with invalid UTF-8, malformed bytes) still gets
// INVALID_ARGUMENT naming the field, and so that a stream knows the bytes it holds.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/model/config.h"
#include "runtime/model/tokenizer.h"
#include "seqboat/v1/seqboat.grpc.pb.h"
#include "server/generate_request.h"
#include "server/metrics.h"
#include "server/request_builder.h"
#include "server/stream_capacity.h"

namespace seqboat::server {

struct ServiceLimits {
  RequestRules rules;  // the request builder's
  // A stream ends with RESOURCE_EXHAUSTED when more than this many bytes (about: their
  // serialized size) wait for its client to read them ...
  int64_t stream_buffer_bytes = 4 << 20;
  // ... and with DEADLINE_EXCEEDED when one write has waited this long for the client.
  absl::Duration stream_write_timeout = absl::Seconds(30);
  // The engine's own deadline is the call's deadline less this, so that a request that runs
  // out of time still gets its final message (finish reason DEADLINE) before gRPC ends it.
  absl::Duration deadline_margin = absl::Milliseconds(20);
};

using SeqBoatRawService = seqboat::v1::SeqBoat::WithRawCallbackMethod_Generate<
    seqboat::v1::SeqBoat::WithRawCallbackMethod_Tokenize<
        seqboat::v1::SeqBoat::WithRawCallbackMethod_GetModelInfo<seqboat::v1::SeqBoat::Service>>>;

class SeqBoatService final : public SeqBoatRawService {
 public:
  // `engine`, `tokenizer`, `capacity` (the open streams, shared with the HTTP API) and
  // `metrics` (may be null) must outlive the service.
  SeqBoatService(Engine* engine, const Tokenizer* tokenizer, const ModelConfig& config,
                 seqboat::v1::ModelInfo info, const ServiceLimits& limits,
                 std::vector<std::string> api_keys, StreamCapacity* capacity, Metrics* metrics);
  ~SeqBoatService() override;  // after the gRPC server has shut down

  grpc::ServerWriteReactor<grpc::ByteBuffer>* Generate(grpc::CallbackServerContext* context,
                                                       const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetModelInfo(grpc::CallbackServerContext* context,
                                         const grpc::ByteBuffer* request,
                                         grpc::ByteBuffer* response) override;

  // From now on Generate answers UNAVAILABLE (the server drains).
  void StopAccepting() { accepting_.store(false); }
  // From now on a stream whose client has read nothing for `timeout` is cancelled, if that is
  // sooner than the write timeout (a drain cut short: the last messages get this long).
  void ShortenWriteTimeout(absl::Duration timeout);
  // Generate streams (in choices) open now, of the capacity shared with the HTTP API.
  int64_t open_streams() const;

  // Everything the reactors share.
  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
  std::atomic<bool> accepting_{true};
  absl::Notification stop_watchdog_;
  std::thread watchdog_;  // ends streams whose client stopped reading
};

// Parses `bytes` as `message`; InvalidArgument naming the field when a string field holds
// invalid UTF-8 (protobuf refuses those), or saying the bytes are not such a message.
absl::Status ParseRequest(const grpc::ByteBuffer& bytes, google::protobuf::Message* message);

// Routes protobuf's log lines: while ParseRequest runs they become its error message;
// otherwise they go to stderr, at most one a second (a flood of bad requests cannot flood
// the log). The service and ParseRequest install it; later calls do nothing.
void InstallProtobufLogHandler();

}  // namespace seqboat::server
