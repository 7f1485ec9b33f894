// seqboat-server's flags, and the one function that reads them into a ServerConfig.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"
#include "server/api_keys.h"
#include "server/server_config.h"

ABSL_FLAG(std::string, model, "", "Model file (.safetensors) made by seqboat-convert. Required.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC address HOST:PORT; port 0 picks a free port.");
ABSL_FLAG(
    std::string, metrics_listen, "127.0.0.1:9464",
    "Prometheus /metrics address HOST:PORT; empty turns metrics off; port 0 picks a free port.");
ABSL_FLAG(
    std::string, metrics_api_keys_file, "",
    "File with the keys a scrape of /metrics must carry as 'Authorization: Bearer KEY' (format as "
    "--api_keys_file); empty: /metrics is open.");
ABSL_FLAG(std::string, http_listen, "127.0.0.1:8000",
          "OpenAI-compatible HTTP API address HOST:PORT (/v1/completions, /v1/chat/completions, "
          "/v1/models, "
          "/health, /tokenize, /detokenize); empty turns it off; port 0 picks a free port.");
ABSL_FLAG(std::string, served_model_name, "",
          "The model's name in the HTTP API (/v1/models, the `model` field); empty: the model "
          "file's name "
          "without its extension.");
ABSL_FLAG(
    std::string, chat_template, "",
    "JSON file {\"message\": \"...{role}...{content}...\", \"generation_prompt\": \"...\"} for "
    "/v1/chat/completions; empty: the model file's, else \"{role}: {content}\\n\" and "
    "\"assistant:\".");
ABSL_FLAG(int32_t, http_threads, 2, "Threads polling the HTTP API's connections.");
ABSL_FLAG(int32_t, http_max_connections, 1024,
          "Open connections the HTTP API accepts (idle ones included).");
ABSL_FLAG(std::string, playground, "auto",
          "The playground page at GET / on the HTTP API's port: on, off, or auto (on when "
          "--http_listen is a loopback address).");
ABSL_FLAG(std::string, device, "cpu", "Backend: cpu or cuda.");
ABSL_FLAG(int32_t, cuda_device, 0, "With --device cuda: the CUDA device ordinal.");
ABSL_FLAG(
    std::string, weight_dtype, "as_stored",
    "The weight matrices' dtype, accumulation always fp32. --device cpu: as_stored or f32 (exact, "
    "f32 whatever the file holds), bf16 or int8 (converted at load, for speed). --device cuda: "
    "as_stored, f32, f16 or bf16, FIFO keys/values and activations in the same dtype.");
ABSL_FLAG(std::string, fifo_dtype, "as_stored",
          "The FIFO keys' and values' dtype. --device cpu: as_stored or f32, or bf16 (half the "
          "FIFO bytes of every sequence's state; attention still accumulates in fp32). --device "
          "cuda: as_stored (the --weight_dtype), or that dtype named.");
ABSL_FLAG(bool, cuda_graphs, true, "With --device cuda: replay decode steps from CUDA graphs.");
ABSL_FLAG(
    int64_t, state_memory_mb, 0,
    "Memory for all sequence state (request slots and prefix cache) in MiB; 0 = no limit. The "
    "--max_batch request slots must fit; the prefix cache gets the rest, at most "
    "--prefix_cache_mb, and keeps the request slots that no request holds.");
ABSL_FLAG(int32_t, threads, 0, "CPU backend threads; 0 = every hardware thread.");
ABSL_FLAG(int32_t, sampling_threads, 0,
          "Threads sampling each iteration's tokens (pays off for large vocabularies and batches); "
          "0 = half the hardware threads, at most 8.");
ABSL_FLAG(std::string, ema_horizon, "exact",
          "MD-EMA horizon: exact (untruncated) or trained (truncated kernel).");
ABSL_FLAG(int32_t, fifo_capacity, 0,
          "FIFO bound for SeqBoat-full models (window <= 0); 0 takes the model's w.");
ABSL_FLAG(int32_t, max_batch, 8, "Sequences decoded together (state slots for requests).");
ABSL_FLAG(int32_t, max_waiting, 64,
          "Requests queued beyond the --max_batch slots; beyond them Generate answers "
          "RESOURCE_EXHAUSTED (0: no "
          "queue, a request needs a free slot).");
ABSL_FLAG(int64_t, prefill_budget, 256,
          "Prompt tokens per engine iteration over all prefilling requests.");
ABSL_FLAG(int64_t, max_prompt_tokens, int64_t{1} << 20,
          "Longest prompt in tokens. A state's size does not grow with the context, so the limit "
          "is only the message: a prompt must also fit --max_request_bytes (and a text prompt "
          "--max_text_bytes).");
ABSL_FLAG(int32_t, max_new_tokens_limit, 4096, "Cap on a request's max_new_tokens.");
ABSL_FLAG(double, activation_bias, 0,
          "The router's activation bias of a request that gives none (RoutingParams): added to "
          "each layer's \"not activated\" router logit, so a positive value runs the attention "
          "unit for fewer tokens. 0: the model's own routing.");
ABSL_FLAG(double, max_activation_bias, 1000,
          "Largest |activation bias| a request may give (and --activation_bias may be).");
ABSL_FLAG(int64_t, prefix_cache_mb, 256,
          "Memory for prefix-state snapshots beyond the --max_batch request slots, in MiB (the "
          "cache also keeps the request slots no request holds); 0 turns the cache off.");
ABSL_FLAG(int64_t, prefix_cache_block, 32,
          "Prefix-cache snapshots are taken at multiples of this many prompt tokens.");
ABSL_FLAG(bool, prefix_cache_branch_points, true,
          "Also snapshot where a prompt leaves (or ends on) a cached sequence, so that a shared "
          "prefix is cached to its last token, not to its last --prefix_cache_block boundary.");
ABSL_FLAG(bool, prefix_cache_finished, true,
          "A request that ends (but by an error) leaves its state in the prefix cache, so that "
          "the next turn of a conversation runs only its new tokens.");
ABSL_FLAG(int64_t, max_text_bytes, 256 << 10,
          "Longest GenerateRequest.text and TokenizeRequest.text in bytes, refused before they are "
          "read.");
ABSL_FLAG(int64_t, max_request_bytes, 0,
          "Largest request message gRPC accepts, in bytes (RESOURCE_EXHAUSTED beyond); 0 = room "
          "for the longest "
          "text or token prompt and every other field.");
ABSL_FLAG(
    int64_t, max_metadata_bytes, 16 << 10,
    "Largest request metadata (HTTP/2 headers) gRPC accepts, in bytes. gRPC answers a larger one "
    "with "
    "RESOURCE_EXHAUSTED and may end the other streams on that connection too (server/README.md).");
ABSL_FLAG(int64_t, stream_buffer_kb, 4096,
          "A Generate stream whose client has not read this many KiB of it (about: serialized "
          "size) ends with "
          "RESOURCE_EXHAUSTED; the server holds no more for a slow client.");
ABSL_FLAG(
    double, stream_write_timeout_s, 30,
    "A Generate stream whose client reads nothing for this long ends with DEADLINE_EXCEEDED.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert.");
ABSL_FLAG(std::string, api_keys_file, "",
          "File with one API key per line ('#' starts a comment); calls then need 'authorization: "
          "Bearer KEY'.");
ABSL_FLAG(double, shutdown_grace_s, 30,
          "On SIGTERM/SIGINT, seconds in-flight streams get to finish.");
ABSL_FLAG(double, drain_delay_s, 0,
          "On SIGTERM/SIGINT, seconds health reports NOT_SERVING while new calls are still "
          "served, before the drain (the time balancers take to stop sending here).");
ABSL_FLAG(double, heap_trim_interval_s, 10,
          "Every this many seconds, free C heap pages go back to the OS (malloc_trim), so that "
          "resident memory follows what is in use; 0 = never.");
ABSL_FLAG(double, heartbeat_timeout_s, 10,
          "Health turns NOT_SERVING when the engine loop is silent this long.");
ABSL_FLAG(int32_t, debug_step_delay_ms, 0,
          "Testing: sleep this long after every engine iteration (a slow device).");
ABSL_FLAG(int64_t, debug_fail_forward, 0,
          "Testing: fail the Nth backend forward call as a device error would (0 = never).");
ABSL_FLAG(bool, debug_fail_sticky, false,
          "Testing: with --debug_fail_forward, that call and every later one fail and the backend "
          "reports "
          "itself unusable, as a lost device would.");

namespace seqboat::server {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

absl::Status AtLeast(const char* flag, double value, double least) {
  if (!(value >= least))
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", value, "; expected >= ", least));
  return absl::OkStatus();
}

absl::Status AtMost(const char* flag, int64_t value, int64_t most) {
  if (value > most)
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", value, "; expected at most ", most));
  return absl::OkStatus();
}

absl::Status Positive(const char* flag, double value) {
  if (!(value > 0))
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", value, "; expected > 0"));
  return absl::OkStatus();
}

// Prefixes an error about a flag's value with the flag.
absl::Status ForFlag(const char* flag, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("--", flag, ": ", status.message()));
}

// HOST:PORT names this machine only: 127.x.x.x, [::1] or localhost.
bool IsLoopback(const std::string& address) {
  const std::string host = address.substr(0, address.rfind(':'));
  return absl::StartsWith(host, "127.") || host == "[::1]" || host == "localhost";
}

}  // namespace

absl::StatusOr<ServerConfig> ServerConfigFromFlags() {
  ServerConfig c;
  c.model_path = absl::GetFlag(FLAGS_model);
  if (c.model_path.empty())
    return absl::InvalidArgumentError("--model: required (a .safetensors file)");
  c.device = absl::GetFlag(FLAGS_device);
  if (c.device != "cpu" && c.device != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: '", c.device, "'; expected cpu or cuda"));
  }
  c.cuda_device = absl::GetFlag(FLAGS_cuda_device);
  RETURN_IF_ERROR(AtLeast("cuda_device", c.cuda_device, 0));
  absl::StatusOr<WeightDType> dtype = ParseWeightDType(absl::GetFlag(FLAGS_weight_dtype));
  RETURN_IF_ERROR(ForFlag("weight_dtype", dtype.status()));
  c.weight_dtype = *dtype;
  absl::StatusOr<WeightDType> fifo_dtype = ParseWeightDType(absl::GetFlag(FLAGS_fifo_dtype));
  RETURN_IF_ERROR(ForFlag("fifo_dtype", fifo_dtype.status()));
  c.fifo_dtype = *fifo_dtype;
  c.cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
  absl::StatusOr<EmaHorizon> horizon = ParseEmaHorizon(absl::GetFlag(FLAGS_ema_horizon));
  RETURN_IF_ERROR(ForFlag("ema_horizon", horizon.status()));
  c.ema_horizon = *horizon;
  c.fifo_capacity = absl::GetFlag(FLAGS_fifo_capacity);
  RETURN_IF_ERROR(AtLeast("fifo_capacity", c.fifo_capacity, 0));
  c.threads = absl::GetFlag(FLAGS_threads);
  RETURN_IF_ERROR(AtLeast("threads", c.threads, 0));

  c.max_batch = absl::GetFlag(FLAGS_max_batch);
  RETURN_IF_ERROR(AtLeast("max_batch", c.max_batch, 1));
  RETURN_IF_ERROR(AtMost("max_batch", c.max_batch, kMaxSlots));
  c.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  RETURN_IF_ERROR(AtLeast("max_waiting", c.max_waiting, 0));
  c.prefill_budget = absl::GetFlag(FLAGS_prefill_budget);
  RETURN_IF_ERROR(AtLeast("prefill_budget", static_cast<double>(c.prefill_budget), 1));
  c.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  RETURN_IF_ERROR(AtLeast("max_prompt_tokens", static_cast<double>(c.max_prompt_tokens), 1));
  c.max_new_tokens_limit = absl::GetFlag(FLAGS_max_new_tokens_limit);
  RETURN_IF_ERROR(AtLeast("max_new_tokens_limit", c.max_new_tokens_limit, 1));
  const double max_bias = absl::GetFlag(FLAGS_max_activation_bias);
  if (!(max_bias >= 0 && max_bias <= 1e30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_activation_bias: ", max_bias, "; expected 0..1e30"));
  }
  c.max_activation_bias = static_cast<float>(max_bias);
  const double bias = absl::GetFlag(FLAGS_activation_bias);
  if (!(std::fabs(bias) <= max_bias)) {
    return absl::InvalidArgumentError(absl::StrCat("--activation_bias: ", bias, "; expected -",
                                                   max_bias, "..", max_bias,
                                                   " (--max_activation_bias)"));
  }
  c.default_activation_bias = static_cast<float>(bias);
  c.sampling_threads = absl::GetFlag(FLAGS_sampling_threads);
  RETURN_IF_ERROR(AtLeast("sampling_threads", c.sampling_threads, 0));
  if (c.sampling_threads == 0) {
    c.sampling_threads =
        std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 2, 1, 8);
  }
  for (const auto& [flag, mib, bytes] :
       {std::tuple{"prefix_cache_mb", absl::GetFlag(FLAGS_prefix_cache_mb), &c.prefix_cache_bytes},
        std::tuple{"state_memory_mb", absl::GetFlag(FLAGS_state_memory_mb),
                   &c.state_memory_bytes}}) {
    RETURN_IF_ERROR(AtLeast(flag, static_cast<double>(mib), 0));
    RETURN_IF_ERROR(
        AtMost(flag, mib, int64_t{1} << 30));  // 1 PiB: MiB counts that still fit in bytes
    *bytes = mib << 20;
  }
  c.prefix_cache_block = absl::GetFlag(FLAGS_prefix_cache_block);
  c.prefix_cache_finished = absl::GetFlag(FLAGS_prefix_cache_finished);
  c.prefix_cache_branch_points = absl::GetFlag(FLAGS_prefix_cache_branch_points);
  RETURN_IF_ERROR(AtLeast("prefix_cache_block", static_cast<double>(c.prefix_cache_block), 1));

  c.listen = absl::GetFlag(FLAGS_listen);
  c.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  c.http_listen = absl::GetFlag(FLAGS_http_listen);
  c.served_model_name = absl::GetFlag(FLAGS_served_model_name);
  if (c.served_model_name.empty()) {
    const std::string file = c.model_path.substr(c.model_path.find_last_of('/') + 1);
    c.served_model_name = file.substr(0, file.rfind('.'));
    if (c.served_model_name.empty()) c.served_model_name = file;
  }
  if (!absl::GetFlag(FLAGS_chat_template).empty()) {
    ASSIGN_OR_RETURN(c.chat_template_json,
                     ReadFile(absl::GetFlag(FLAGS_chat_template), "chat_template"));
  }
  c.http_threads = absl::GetFlag(FLAGS_http_threads);
  RETURN_IF_ERROR(AtLeast("http_threads", c.http_threads, 1));
  RETURN_IF_ERROR(AtMost("http_threads", c.http_threads, 64));
  c.http_max_connections = absl::GetFlag(FLAGS_http_max_connections);
  RETURN_IF_ERROR(AtLeast("http_max_connections", c.http_max_connections, 1));
  const std::string playground = absl::GetFlag(FLAGS_playground);
  if (playground != "auto" && playground != "on" && playground != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--playground: '", playground, "'; expected on, off or auto"));
  }
  c.playground = playground == "on" || (playground == "auto" && IsLoopback(c.http_listen));
  for (const auto& [flag, path, keys] :
       {std::tuple{"api_keys_file", absl::GetFlag(FLAGS_api_keys_file), &c.api_keys},
        std::tuple{"metrics_api_keys_file", absl::GetFlag(FLAGS_metrics_api_keys_file),
                   &c.metrics_api_keys}}) {
    if (path.empty()) continue;
    ASSIGN_OR_RETURN(*keys, ReadApiKeysFile(path, flag));
  }
  if (absl::GetFlag(FLAGS_tls_cert).empty() != absl::GetFlag(FLAGS_tls_key).empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key: give both or neither");
  }
  if (!absl::GetFlag(FLAGS_tls_cert).empty()) {
    ASSIGN_OR_RETURN(c.tls_cert_pem, ReadFile(absl::GetFlag(FLAGS_tls_cert), "tls_cert"));
    ASSIGN_OR_RETURN(c.tls_key_pem, ReadFile(absl::GetFlag(FLAGS_tls_key), "tls_key"));
  }
  // gRPC's sizes are ints; 1 GiB is more than any request.
  c.max_text_bytes = absl::GetFlag(FLAGS_max_text_bytes);
  RETURN_IF_ERROR(AtLeast("max_text_bytes", static_cast<double>(c.max_text_bytes), 1));
  RETURN_IF_ERROR(AtMost("max_text_bytes", c.max_text_bytes, int64_t{1} << 30));
  c.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  RETURN_IF_ERROR(AtLeast("max_request_bytes", static_cast<double>(c.max_request_bytes), 0));
  RETURN_IF_ERROR(AtMost("max_request_bytes", c.max_request_bytes, int64_t{1} << 30));
  if (c.max_request_bytes == 0) {
    // A request holds its text or its token ids and small fields. Packed varint ids below 2^21
    // (every vocabulary size we know of) take at most 3 bytes each.
    c.max_request_bytes = std::max(c.max_text_bytes, 3 * c.max_prompt_tokens) + (64 << 10);
  }
  c.max_metadata_bytes = absl::GetFlag(FLAGS_max_metadata_bytes);
  RETURN_IF_ERROR(AtLeast("max_metadata_bytes", static_cast<double>(c.max_metadata_bytes), 1));
  RETURN_IF_ERROR(AtMost("max_metadata_bytes", c.max_metadata_bytes, int64_t{1} << 30));
  const int64_t buffer_kb = absl::GetFlag(FLAGS_stream_buffer_kb);
  RETURN_IF_ERROR(AtLeast("stream_buffer_kb", static_cast<double>(buffer_kb), 1));
  RETURN_IF_ERROR(AtMost("stream_buffer_kb", buffer_kb, int64_t{1} << 30));
  c.stream_buffer_bytes = buffer_kb << 10;
  RETURN_IF_ERROR(Positive("stream_write_timeout_s", absl::GetFlag(FLAGS_stream_write_timeout_s)));
  c.stream_write_timeout = absl::Seconds(absl::GetFlag(FLAGS_stream_write_timeout_s));

  RETURN_IF_ERROR(AtLeast("shutdown_grace_s", absl::GetFlag(FLAGS_shutdown_grace_s), 0));
  c.shutdown_grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));
  RETURN_IF_ERROR(AtLeast("drain_delay_s", absl::GetFlag(FLAGS_drain_delay_s), 0));
  c.drain_delay = absl::Seconds(absl::GetFlag(FLAGS_drain_delay_s));
  RETURN_IF_ERROR(AtLeast("heap_trim_interval_s", absl::GetFlag(FLAGS_heap_trim_interval_s), 0));
  c.heap_trim_interval = absl::Seconds(absl::GetFlag(FLAGS_heap_trim_interval_s));
  RETURN_IF_ERROR(Positive("heartbeat_timeout_s", absl::GetFlag(FLAGS_heartbeat_timeout_s)));
  c.heartbeat_timeout = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_timeout_s));

  RETURN_IF_ERROR(AtLeast("debug_step_delay_ms", absl::GetFlag(FLAGS_debug_step_delay_ms), 0));
  c.debug_step_delay = absl::Milliseconds(absl::GetFlag(FLAGS_debug_step_delay_ms));
  c.debug_fail_forward = absl::GetFlag(FLAGS_debug_fail_forward);
  RETURN_IF_ERROR(AtLeast("debug_fail_forward", static_cast<double>(c.debug_fail_forward), 0));
  c.debug_fail_sticky = absl::GetFlag(FLAGS_debug_fail_sticky);
  if (c.debug_fail_sticky && c.debug_fail_forward == 0) {
    return absl::InvalidArgumentError(
        "--debug_fail_sticky: needs --debug_fail_forward N (the call that loses the device)");
  }
  return c;
}

}  // namespace seqboat::server
