// The OpenAI-compatible HTTP API over the engine, on libmicrohttpd: completions and chat
// completions (streamed as server-sent events or whole), models, health, tokenize and
// detokenize; SeqBoat's model info, and the playground page (server/playground/). The same
// request builder, engine, API keys, TLS certificate and stream limits as the gRPC service.
//
// One event-driven polling thread (a small pool) serves every connection: a request waiting
// for tokens is suspended, so it holds a connection slot and its buffers, not a thread, and
// the engine resumes it when output arrives. A watchdog notices clients that hang up while
// suspended (within 100 ms) and cancels their requests.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/engine/engine.h"
#include "runtime/model/config.h"
#include "runtime/model/tokenizer.h"
#include "server/chat_template.h"
#include "server/metrics.h"
#include "server/request_builder.h"
#include "server/stream_capacity.h"

namespace seqboat::server {

struct HttpApiOptions {
  std::string listen = "127.0.0.1:8000";  // HOST:PORT; port 0 picks a free port
  std::vector<std::string> api_keys;  // empty: none needed (/health and /v1/models never need one)
  std::string tls_cert_pem, tls_key_pem;  // both or neither: HTTPS
  std::string served_model_name;          // the one model /v1/models lists
  ChatTemplate chat_template;
  RequestRules rules;
  int threads = 2;             // polling threads
  int max_connections = 1024;  // open connections (idle keep-alive ones included)
  // A connection that sends or reads nothing this long is closed (a request waiting for
  // tokens does not count as idle): the write timeout of a client that stopped reading.
  absl::Duration idle_timeout = absl::Seconds(30);
  int64_t max_body_bytes = 1 << 20;       // a larger body is refused (413) before it is read
  int64_t stream_buffer_bytes = 4 << 20;  // unread output per request before it is ended
  bool playground = false;                // serve the playground page at GET /
  // GetModelInfo's fields as JSON (protobuf's mapping, proto field names): GET /model_info.
  std::string model_info_json = "{}";
};

// The engine, the tokenizer, `capacity`, `metrics` (may be null) and `serving` must outlive
// the server. `serving` answers /health.
class HttpApi {
 public:
  static absl::StatusOr<std::unique_ptr<HttpApi>> Start(HttpApiOptions options, Engine* engine,
                                                        const Tokenizer* tokenizer,
                                                        const ModelConfig& config,
                                                        StreamCapacity* capacity, Metrics* metrics,
                                                        std::function<bool()> serving);
  ~HttpApi();  // resumes every suspended connection, then stops; the engine must have drained

  int port() const;
  // From now on generation requests answer 503 (the server drains).
  void StopAccepting();
  // Waits until no request is open or `deadline` passes (the drain's end).
  void WaitIdle(absl::Time deadline);

  struct Impl;

 private:
  explicit HttpApi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace seqboat::server
