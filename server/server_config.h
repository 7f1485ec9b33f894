// seqboat-server's configuration: every flag read, checked and resolved once at start-up
// (files read, derived defaults filled in), so that nothing later reads a flag.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/backend.h"

namespace seqboat::server {

struct ServerConfig {
  // The model and its backend.
  std::string model_path;
  std::string device = "cpu";  // cpu | cuda
  int cuda_device = 0;
  WeightDType weight_dtype = WeightDType::kAsStored;
  WeightDType fifo_dtype = WeightDType::kAsStored;
  bool cuda_graphs = true;
  EmaHorizon ema_horizon = EmaHorizon::kExact;
  int fifo_capacity = 0;  // 0: the model's window
  int threads = 0;        // CPU backend threads; 0 = every hardware thread

  // The engine.
  int max_batch = 8;             // request slots
  int max_waiting = 64;          // requests queued beyond the slots
  int64_t prefill_budget = 256;  // prompt tokens per iteration
  int64_t max_prompt_tokens = int64_t{1} << 20;
  int32_t max_new_tokens_limit = 4096;
  float default_activation_bias = 0.0f;  // of a request that gives none
  float max_activation_bias = 1000.0f;   // |activation bias| allowed
  int sampling_threads = 1;
  int64_t prefix_cache_bytes = 256 << 20;  // at most; 0 turns the cache off
  int64_t prefix_cache_block = 32;
  bool prefix_cache_finished = true;       // requests leave their end state in the cache
  bool prefix_cache_branch_points = true;  // snapshots where a prompt leaves a cached sequence
  int64_t state_memory_bytes = 0;          // 0 = no limit

  // The front-ends.
  std::string listen = "127.0.0.1:50051";
  std::string metrics_listen = "127.0.0.1:9464";  // empty: no metrics endpoint
  std::string http_listen = "127.0.0.1:8000";     // empty: no OpenAI-compatible HTTP API
  std::string served_model_name;                  // resolved: never empty
  std::string chat_template_json;                 // --chat_template's file; empty: none given
  int http_threads = 2;
  int http_max_connections = 1024;
  bool playground = true;  // resolved from --playground (auto: on when http_listen is loopback)
  std::vector<std::string> api_keys;  // empty: no key needed
  std::vector<std::string> metrics_api_keys;
  std::string tls_cert_pem, tls_key_pem;  // empty: plaintext
  int64_t max_text_bytes = 256 << 10;
  int64_t max_request_bytes = 0;  // resolved: never 0
  int64_t max_metadata_bytes = 16 << 10;
  int64_t stream_buffer_bytes = 4 << 20;
  absl::Duration stream_write_timeout = absl::Seconds(30);

  // The process.
  absl::Duration shutdown_grace = absl::Seconds(30);
  absl::Duration drain_delay = absl::ZeroDuration();
  absl::Duration heartbeat_timeout = absl::Seconds(10);
  absl::Duration heap_trim_interval = absl::Seconds(10);  // zero: never

  // Testing.
  absl::Duration debug_step_delay = absl::ZeroDuration();
  int64_t debug_fail_forward = 0;
  bool debug_fail_sticky = false;
};

// The configuration the command line's flags give, or an error naming the flag at fault.
absl::StatusOr<ServerConfig> ServerConfigFromFlags();

}  // namespace seqboat::server
