// seqboat-cli: the command-line client of seqboat-server (gRPC; bench also over HTTP).
//   seqboat-cli generate "PROMPT" [--max_new_tokens N --temperature T ... --json]
//   seqboat-cli info | tokenize "TEXT" | health [SERVICE] | bench --concurrency N --requests N ...
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_lib.h"
#include "client/http_stream.h"
#include "google/protobuf/util/json_util.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "seqboat/v1/seqboat.grpc.pb.h"

// Connection.
ABSL_FLAG(std::string, server, "127.0.0.1:50051",
          "Server address HOST:PORT, or a gRPC target naming several replicas: "
          "ipv4:HOST:PORT,HOST:PORT,... or dns:///NAME:PORT (a headless Service).");
ABSL_FLAG(std::string, lb_policy, "round_robin",
          "How calls spread over the addresses --server resolves to: round_robin (each call to "
          "the next ready one) or pick_first (one connection).");
ABSL_FLAG(bool, health_check, true,
          "round_robin over an ipv4:, ipv6: or dns: target: watch each address's gRPC health "
          "(service seqboat.v1.SeqBoat) and send no call to one that reports NOT_SERVING, as a "
          "draining server does. Never for a plain HOST:PORT, which may be a proxy (whose health "
          "would be that of one replica behind it).");
ABSL_FLAG(int32_t, max_attempts, 1,
          "Tries of a call that fails UNAVAILABLE before any output (a replica that went away or "
          "refused it while draining), each to the next address; 1 = no retry, at most 5.");
ABSL_FLAG(std::string, api_key, "", "Sent as 'authorization: Bearer KEY'.");
ABSL_FLAG(std::string, tls_ca, "", "PEM root certificate: connect with TLS (else plaintext).");
ABSL_FLAG(std::string, tls_server_name, "",
          "With --tls_ca: the name the certificate must hold, if not the host.");
ABSL_FLAG(double, timeout_s, 0, "Deadline of each call in seconds; 0 = none.");
ABSL_FLAG(bool, json, false, "Print the server's messages as JSON lines instead of text.");
// generate: every field of the request, named as in the proto.
ABSL_FLAG(std::string, tokens, "", "generate: prompt token ids (2,17,9) instead of the text.");
ABSL_FLAG(std::optional<int32_t>, max_new_tokens, std::nullopt,
          "Tokens to generate at most (server default 16).");
ABSL_FLAG(std::optional<float>, temperature, std::nullopt, "0 = greedy (server default 1).");
ABSL_FLAG(int32_t, top_k, 0, "Keep the k most likely tokens; 0 = off.");
ABSL_FLAG(std::optional<float>, top_p, std::nullopt, "Nucleus mass in (0, 1].");
ABSL_FLAG(float, min_p, 0, "Drop tokens below min_p times the most likely one's probability.");
ABSL_FLAG(std::optional<float>, repetition_penalty, std::nullopt,
          "> 1 discourages tokens already seen.");
ABSL_FLAG(float, presence_penalty, 0, "Subtracted once from the logit of each generated token.");
ABSL_FLAG(float, frequency_penalty, 0,
          "Subtracted per occurrence from the logit of each generated token.");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "Sampling seed (the server draws one if unset).");
ABSL_FLAG(std::string, stop, "", "Stop sequences, comma-separated ('\\,' is a comma).");
ABSL_FLAG(std::string, stop_token_ids, "", "Stop token ids, comma-separated.");
ABSL_FLAG(bool, ignore_eos, false, "Keep generating past </s>.");
ABSL_FLAG(int32_t, logprobs, 0, "Alternatives reported per token (--json shows them).");
ABSL_FLAG(bool, return_activations, false,
          "Per token, which layers ran the GAU (--json shows them).");
ABSL_FLAG(std::optional<float>, activation_bias, std::nullopt,
          "Router activation bias for every layer: > 0 runs attention for fewer tokens, < 0 for "
          "more (server default when absent).");
ABSL_FLAG(std::string, layer_activation_bias, "",
          "One activation bias per layer, comma-separated (overrides --activation_bias).");
ABSL_FLAG(std::string, request_id, "", "Request id echoed by the server.");
// bench.
ABSL_FLAG(int32_t, concurrency, 1, "bench: requests in flight at once.");
ABSL_FLAG(int64_t, requests, 0, "bench: requests to send (default 100 unless --duration_s).");
ABSL_FLAG(double, duration_s, 0, "bench: send requests for this long instead of --requests.");
ABSL_FLAG(int32_t, prompt_tokens, 128, "bench: prompt length in tokens.");
ABSL_FLAG(int32_t, output_tokens, 128, "bench: tokens generated per request (ignore_eos, exact).");
ABSL_FLAG(double, shared_prefix_ratio, 0,
          "bench: fraction of each prompt shared by all requests (prefix cache).");
ABSL_FLAG(std::string, json_out, "", "bench: also write the JSON report to this file.");
ABSL_FLAG(
    std::string, api, "grpc",
    "bench: the front-end the requests go to: grpc (--server) or http (the OpenAI API's "
    "/v1/completions at --http_server, streamed; the model's facts still come from --server).");
ABSL_FLAG(std::string, http_server, "127.0.0.1:8000",
          "bench --api http: the HTTP API's HOST:PORT.");
ABSL_FLAG(int32_t, turns, 1,
          "bench: each request is a conversation of this many turns; a turn's prompt is the "
          "previous prompt, its answer and --turn_tokens new tokens (gRPC).");
ABSL_FLAG(int32_t, turn_tokens, 200, "bench --turns: new prompt tokens per turn after the first.");
ABSL_FLAG(int32_t, n, 1,
          "bench: choices per request (one prefill, forked states); its TTFT is the first "
          "choice's first token, its tokens all choices'.");

namespace seqboat::cli {
namespace {

namespace v1 = ::seqboat::v1;
using Clock = std::chrono::steady_clock;

constexpr int kUsageError = 2;
constexpr int kCallError = 1;

int Fail(int code, const std::string& message) {
  fprintf(stderr, "seqboat-cli: %s\n", message.c_str());
  return code;
}

// gRPC and absl number their status codes alike; absl names them.
std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int CallFailed(const grpc::Status& status) {
  return Fail(kCallError,
              absl::StrCat(CodeName(status.error_code()), ": ", status.error_message()));
}

std::string ToJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect() {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments arguments;
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    std::ifstream in(ca, std::ios::binary);
    if (!in) return absl::InvalidArgumentError(absl::StrCat("--tls_ca: cannot read ", ca));
    grpc::SslCredentialsOptions options;
    options.pem_root_certs.assign(std::istreambuf_iterator<char>(in),
                                  std::istreambuf_iterator<char>());
    credentials = grpc::SslCredentials(options);
    if (const std::string name = absl::GetFlag(FLAGS_tls_server_name); !name.empty()) {
      arguments.SetSslTargetNameOverride(name);
    }
  }
  // The service config: the balancing policy, health checking and the retry policy.
  const std::string policy = absl::GetFlag(FLAGS_lb_policy);
  if (policy != "round_robin" && policy != "pick_first")
    return absl::InvalidArgumentError(
        absl::StrCat("--lb_policy: '", policy, "'; expected round_robin or pick_first"));
  const int attempts = absl::GetFlag(FLAGS_max_attempts);
  // gRPC caps a retry policy at 5 attempts.
  if (attempts < 1 || attempts > 5)
    return absl::InvalidArgumentError(
        absl::StrCat("--max_attempts: ", attempts, "; expected 1 to 5"));
  nlohmann::json config = {{"loadBalancingConfig", {{{policy, nlohmann::json::object()}}}}};
  const std::string target = absl::GetFlag(FLAGS_server);
  const bool balanced_here = absl::StartsWith(target, "ipv4:") ||
                             absl::StartsWith(target, "ipv6:") || absl::StartsWith(target, "dns:");
  if (policy == "round_robin" && balanced_here && absl::GetFlag(FLAGS_health_check)) {
    config["healthCheckConfig"] = {{"serviceName", v1::SeqBoat::service_full_name()}};
  }
  if (attempts > 1) {
    // A streaming call is retried only until its first response message arrives, so a
    // generation is never repeated after output reached the client.
    config["methodConfig"] = {{{"name", {{{"service", v1::SeqBoat::service_full_name()}}}},
                               {"retryPolicy",
                                {{"maxAttempts", attempts},
                                 {"initialBackoff", "0.05s"},
                                 {"maxBackoff", "1s"},
                                 {"backoffMultiplier", 2},
                                 {"retryableStatusCodes", {"UNAVAILABLE"}}}}}};
  }
  arguments.SetServiceConfigJSON(config.dump());
  return grpc::CreateCustomChannel(target, credentials, arguments);
}

void Prepare(grpc::ClientContext* context) {
  if (const std::string key = absl::GetFlag(FLAGS_api_key); !key.empty()) {
    context->AddMetadata("authorization", "Bearer " + key);
  }
  if (const double timeout = absl::GetFlag(FLAGS_timeout_s); timeout > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(timeout * 1e6)));
  }
}

absl::Status FillRequest(const std::string& prompt, v1::GenerateRequest* request) {
  if (const std::string tokens = absl::GetFlag(FLAGS_tokens); !tokens.empty()) {
    auto ids = ParseIdList(tokens, "tokens");
    if (!ids.ok()) return ids.status();
    for (int32_t id : *ids) request->mutable_tokens()->add_ids(id);
  } else {
    request->set_text(prompt);
  }
  v1::SamplingParams* sampling = request->mutable_sampling();
  if (auto t = absl::GetFlag(FLAGS_temperature)) sampling->set_temperature(*t);
  sampling->set_top_k(absl::GetFlag(FLAGS_top_k));
  if (auto p = absl::GetFlag(FLAGS_top_p)) sampling->set_top_p(*p);
  sampling->set_min_p(absl::GetFlag(FLAGS_min_p));
  if (auto r = absl::GetFlag(FLAGS_repetition_penalty)) sampling->set_repetition_penalty(*r);
  sampling->set_presence_penalty(absl::GetFlag(FLAGS_presence_penalty));
  sampling->set_frequency_penalty(absl::GetFlag(FLAGS_frequency_penalty));
  if (auto s = absl::GetFlag(FLAGS_seed)) sampling->set_seed(*s);
  v1::StoppingParams* stopping = request->mutable_stopping();
  if (auto n = absl::GetFlag(FLAGS_max_new_tokens)) stopping->set_max_new_tokens(*n);
  auto stops = ParseStringList(absl::GetFlag(FLAGS_stop), "stop");
  if (!stops.ok()) return stops.status();
  for (const std::string& stop : *stops) stopping->add_stop(stop);
  auto stop_ids = ParseIdList(absl::GetFlag(FLAGS_stop_token_ids), "stop_token_ids");
  if (!stop_ids.ok()) return stop_ids.status();
  for (int32_t id : *stop_ids) stopping->add_stop_token_ids(id);
  stopping->set_ignore_eos(absl::GetFlag(FLAGS_ignore_eos));
  request->set_logprobs(absl::GetFlag(FLAGS_logprobs));
  request->set_return_activations(absl::GetFlag(FLAGS_return_activations));
  v1::RoutingParams* routing = request->mutable_routing();
  if (auto bias = absl::GetFlag(FLAGS_activation_bias)) routing->set_activation_bias(*bias);
  auto layer_bias =
      ParseNumberList(absl::GetFlag(FLAGS_layer_activation_bias), "layer_activation_bias");
  if (!layer_bias.ok()) return layer_bias.status();
  for (float bias : *layer_bias) routing->add_layer_activation_bias(bias);
  request->set_request_id(absl::GetFlag(FLAGS_request_id));
  return absl::OkStatus();
}

int Generate(v1::SeqBoat::Stub& stub, const std::vector<char*>& args) {
  if (args.size() != 1 && absl::GetFlag(FLAGS_tokens).empty()) {
    return Fail(kUsageError, "generate: expected one PROMPT argument (quote it), or --tokens");
  }
  v1::GenerateRequest request;
  if (absl::Status filled = FillRequest(args.empty() ? "" : args[0], &request); !filled.ok()) {
    return Fail(kUsageError, std::string(filled.message()));
  }
  grpc::ClientContext context;
  Prepare(&context);
  const bool json = absl::GetFlag(FLAGS_json);
  const auto start = Clock::now();
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  v1::FinishInfo finish;
  while (reader->Read(&response)) {
    if (json) {
      printf("%s\n", ToJson(response).c_str());
    } else {
      fwrite(response.text().data(), 1, response.text().size(), stdout);
    }
    fflush(stdout);
    if (response.has_finish()) finish = response.finish();
  }
  grpc::Status status = reader->Finish();
  if (!json) printf("\n");
  fflush(stdout);  // the summary on stderr comes after the text, also when both are piped
  if (!status.ok()) return CallFailed(status);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  fprintf(
      stderr,
      "[%s: %lld prompt + %lld generated tokens (%lld from the prefix cache); first token %.1f ms, "
      "total %.1f ms, %.1f tokens/s; seed %llu]\n",
      v1::FinishReason_Name(finish.reason()).c_str(),
      static_cast<long long>(finish.prompt_tokens()),
      static_cast<long long>(finish.generated_tokens()),
      static_cast<long long>(finish.cached_prompt_tokens()),
      1e3 * finish.time_to_first_token_seconds(), 1e3 * seconds,
      finish.generated_tokens() / std::max(seconds, 1e-9),
      static_cast<unsigned long long>(finish.seed()));
  return 0;
}

int Info(v1::SeqBoat::Stub& stub) {
  grpc::ClientContext context;
  Prepare(&context);
  v1::ModelInfo info;
  grpc::Status status = stub.GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) return CallFailed(status);
  if (absl::GetFlag(FLAGS_json)) {
    printf("%s\n", ToJson(info).c_str());
    return 0;
  }
  printf("model file        %s\n", info.model_file().c_str());
  printf("parameters        %lld\n", static_cast<long long>(info.parameters()));
  printf("layers            %d (D=%d Z=%d H=%d N=%d), window w=%d, %s attention\n", info.layers(),
         info.embed_dim(), info.z_dim(), info.hidden_dim(), info.n_dim(), info.window(),
         info.attention().c_str());
  printf("vocabulary        %d (%s)\n", info.vocab_size(), info.tokenizer_style().c_str());
  printf("backend           %s, EMA horizon %s, %s matrices, %s FIFO\n", info.backend().c_str(),
         info.ema_horizon().c_str(), info.weight_dtype().c_str(), info.fifo_dtype().c_str());
  printf("state / sequence  %.3f MB\n", info.state_bytes_per_sequence() / 1e6);
  printf("prefix cache      %.1f MB\n", info.prefix_cache_bytes() / 1e6);
  const v1::Limits& l = info.limits();
  printf(
      "limits            batch %d, waiting %d, prompt %lld tokens, max_new_tokens %d, %d stop "
      "sequences of "
      "%d bytes, %d logprobs, prefill budget %lld\n",
      l.max_batch(), l.max_waiting(), static_cast<long long>(l.max_prompt_tokens()),
      l.max_new_tokens_limit(), l.max_stop_sequences(), l.max_stop_bytes(), l.max_logprobs(),
      static_cast<long long>(l.prefill_budget()));
  printf(
      "                  text %lld bytes, request %lld bytes, %d stop token ids, stream buffer "
      "%lld bytes\n",
      static_cast<long long>(l.max_text_bytes()), static_cast<long long>(l.max_request_bytes()),
      l.max_stop_token_ids(), static_cast<long long>(l.stream_buffer_bytes()));
  printf("server            seqboat-server %s\n", info.server_version().c_str());
  return 0;
}

int Tokenize(v1::SeqBoat::Stub& stub, const std::vector<char*>& args) {
  if (args.size() != 1) return Fail(kUsageError, "tokenize: expected one TEXT argument (quote it)");
  grpc::ClientContext context;
  Prepare(&context);
  v1::TokenizeRequest request;
  request.set_text(args[0]);
  v1::TokenizeResponse response;
  grpc::Status status = stub.Tokenize(&context, request, &response);
  if (!status.ok()) return CallFailed(status);
  if (absl::GetFlag(FLAGS_json)) {
    printf("%s\n", ToJson(response).c_str());
    return 0;
  }
  for (int i = 0; i < response.token_ids_size(); ++i) {
    printf("%6d  %s\n", response.token_ids(i), nlohmann::json(response.pieces(i)).dump().c_str());
  }
  return 0;
}

// ---- health -----------------------------------------------------------------------------
// The probe a kubelet makes (grpc.health.v1.Health/Check), for an exec probe or a script:
// prints the status and exits 0 when it is SERVING.
int Health(const std::shared_ptr<grpc::Channel>& channel, const std::vector<char*>& args) {
  if (args.size() > 1) return Fail(kUsageError, "health: expected at most one SERVICE argument");
  grpc::health::v1::HealthCheckRequest request;
  if (!args.empty()) request.set_service(args[0]);
  grpc::ClientContext context;
  Prepare(&context);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status =
      grpc::health::v1::Health::NewStub(channel)->Check(&context, request, &response);
  if (!status.ok()) return CallFailed(status);
  printf("%s\n",
         grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : kCallError;
}

// ---- bench ------------------------------------------------------------------------------
struct Sample {
  double ttft = -1, e2e = 0;
  std::vector<double> itl;
  int64_t tokens = 0;
  std::string code = "OK";  // a gRPC status name, or "HTTP 429" and the like
  int turn = 0;             // --turns: which turn of its conversation
  int64_t cached_tokens = 0;
  std::vector<int32_t> answer;  // the generated ids (gRPC)
};

// One streamed request over gRPC.
Sample RunGrpc(v1::SeqBoat::Stub& stub, const v1::GenerateRequest& request,
               std::atomic<int64_t>* tokens_out) {
  grpc::ClientContext context;
  Prepare(&context);
  Sample sample;
  const auto sent = Clock::now();
  auto previous = sent;
  auto reader = stub.Generate(&context, request);
  v1::GenerateResponse response;
  while (reader->Read(&response)) {
    if (response.has_finish()) sample.cached_tokens = response.finish().cached_prompt_tokens();
    const int k = response.token_ids_size();
    if (k == 0) continue;
    const auto now = Clock::now();
    const double gap = std::chrono::duration<double>(now - previous).count();
    if (sample.ttft < 0) {
      sample.ttft = gap;
      // The first token's message may carry more: their share of the wait is unknown.
    } else {
      // Coalesced tokens share the gap since the previous message equally.
      for (int i = 0; i < k; ++i) sample.itl.push_back(gap / k);
    }
    previous = now;
    sample.tokens += k;
    *tokens_out += k;
    sample.answer.insert(sample.answer.end(), response.token_ids().begin(),
                         response.token_ids().end());
  }
  sample.code = CodeName(reader->Finish().error_code());
  sample.e2e = std::chrono::duration<double>(Clock::now() - sent).count();
  return sample;
}

// The same request over the HTTP API, streamed. Its events carry text, not token counts: the
// first event with text is the first token, the usage event counts them, and the inter-token
// latency of a request is its mean gap (its tokens after the first share the time they took).
Sample RunHttp(const HttpTarget& target, const v1::GenerateRequest& request,
               std::atomic<int64_t>* tokens_out) {
  nlohmann::json body = {{"prompt", std::vector<int32_t>(request.tokens().ids().begin(),
                                                         request.tokens().ids().end())},
                         {"max_tokens", request.stopping().max_new_tokens()},
                         {"n", std::max(1, request.n())},
                         {"temperature", request.sampling().temperature()},
                         {"seed", request.sampling().seed()},
                         {"ignore_eos", true},
                         {"stream", true},
                         {"stream_options", {{"include_usage", true}}}};
  Sample sample;
  const auto sent = Clock::now();
  auto last = sent;
  std::string stream_error;
  auto on_data = [&](absl::string_view data) {
    if (data == "[DONE]") return;
    // Only the rare events are parsed (the load generator shares the machine with the server).
    if (absl::StrContains(data, "\"usage\"") || absl::StartsWith(data, "{\"error\"")) {
      const nlohmann::json event = nlohmann::json::parse(data, nullptr, /*allow_exceptions=*/false);
      if (event.is_object() && event.contains("error")) {
        stream_error = "stream error event";
        return;
      }
      if (event.is_object() && event.contains("usage") && event["usage"].is_object()) {
        sample.tokens = event["usage"].value("completion_tokens", int64_t{0});
        return;
      }
    }
    const auto now = Clock::now();
    if (sample.ttft < 0) sample.ttft = std::chrono::duration<double>(now - sent).count();
    last = now;
  };
  std::string error_body;
  absl::StatusOr<int> status = PostStreaming(target, body.dump(), on_data, &error_body);
  sample.e2e = std::chrono::duration<double>(Clock::now() - sent).count();
  if (!status.ok()) {
    sample.code = "UNAVAILABLE";
  } else if (*status != 200) {
    sample.code = absl::StrCat("HTTP ", *status);
  } else if (!stream_error.empty()) {
    sample.code = "HTTP 200 with an error event";
  }
  if (sample.tokens > 1 && sample.ttft >= 0) {
    const double spread = std::chrono::duration<double>(last - sent).count() - sample.ttft;
    sample.itl.assign(static_cast<size_t>(sample.tokens - 1),
                      spread / static_cast<double>(sample.tokens - 1));
  }
  *tokens_out += sample.tokens;
  return sample;
}

int Bench(const std::shared_ptr<grpc::Channel>& channel) {
  const int concurrency = absl::GetFlag(FLAGS_concurrency);
  const double duration = absl::GetFlag(FLAGS_duration_s);
  int64_t requests = absl::GetFlag(FLAGS_requests);
  const int prompt_tokens = absl::GetFlag(FLAGS_prompt_tokens),
            output_tokens = absl::GetFlag(FLAGS_output_tokens);
  const double shared = absl::GetFlag(FLAGS_shared_prefix_ratio);
  if (concurrency < 1) return Fail(kUsageError, "--concurrency: expected >= 1");
  if (requests < 0 || duration < 0)
    return Fail(kUsageError, "--requests and --duration_s: expected >= 0");
  if (requests > 0 && duration > 0)
    return Fail(kUsageError, "bench: give --requests or --duration_s, not both");
  if (requests == 0 && duration == 0) requests = 100;
  if (prompt_tokens < 1 || output_tokens < 1)
    return Fail(kUsageError, "--prompt_tokens, --output_tokens: expected >= 1");
  if (!(shared >= 0 && shared <= 1))
    return Fail(kUsageError, "--shared_prefix_ratio: expected in [0, 1]");
  const std::string api = absl::GetFlag(FLAGS_api);
  if (api != "grpc" && api != "http")
    return Fail(kUsageError, absl::StrCat("--api: '", api, "'; expected grpc or http"));
  const int turns = absl::GetFlag(FLAGS_turns), turn_tokens = absl::GetFlag(FLAGS_turn_tokens);
  if (turns < 1 || turn_tokens < 1)
    return Fail(kUsageError, "--turns, --turn_tokens: expected >= 1");
  if (turns > 1 && api != "grpc") return Fail(kUsageError, "--turns: with --api grpc only");
  const int choices = absl::GetFlag(FLAGS_n);
  if (choices < 1) return Fail(kUsageError, "--n: expected >= 1");
  if (turns > 1 && choices > 1) return Fail(kUsageError, "--turns and --n: one or the other");
  const bool tls = !absl::GetFlag(FLAGS_tls_ca).empty();
  const HttpTarget http{absl::StrCat(tls ? "https://" : "http://", absl::GetFlag(FLAGS_http_server),
                                     "/v1/completions"),
                        absl::GetFlag(FLAGS_api_key), absl::GetFlag(FLAGS_tls_ca),
                        absl::GetFlag(FLAGS_timeout_s)};

  auto stub = v1::SeqBoat::NewStub(channel);
  grpc::ClientContext info_context;
  Prepare(&info_context);
  v1::ModelInfo info;
  if (grpc::Status status = stub->GetModelInfo(&info_context, v1::GetModelInfoRequest(), &info);
      !status.ok()) {
    return CallFailed(status);
  }
  // Prompt tokens are drawn from the model's own symbols, after the special ids.
  const int first = info.special_tokens(), symbols = info.vocab_size() - info.special_tokens();
  if (symbols < 1)
    return Fail(kCallError,
                absl::StrCat("the model has no symbols beyond its ", first, " special ids"));
  auto draw = [&](std::mt19937_64& rng) { return first + static_cast<int32_t>(rng() % symbols); };
  const uint64_t seed = absl::GetFlag(FLAGS_seed).value_or(1);
  // Prompts: the start token, then a prefix shared by every request, then tokens of its own.
  const int shared_tokens = static_cast<int>(std::lround(shared * (prompt_tokens - 1)));
  std::vector<int32_t> prefix = {info.start_token_id()};
  {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < shared_tokens; ++i) prefix.push_back(draw(rng));
  }

  std::mutex mu;
  std::vector<Sample> samples;
  std::atomic<int64_t> next{0}, done{0}, tokens_out{0}, errors{0};
  const auto start = Clock::now();
  auto keep_going = [&](int64_t index) {
    if (requests > 0) return index < requests;
    return std::chrono::duration<double>(Clock::now() - start).count() < duration;
  };
  auto worker = [&](int w) {
    for (int64_t index = next++; keep_going(index); index = next++) {
      v1::GenerateRequest request;
      auto* ids = request.mutable_tokens();
      for (int32_t id : prefix) ids->add_ids(id);
      std::mt19937_64 rng(seed * 1000003 + index);
      while (ids->ids_size() < prompt_tokens) ids->add_ids(draw(rng));
      request.mutable_sampling()->set_temperature(absl::GetFlag(FLAGS_temperature).value_or(1.0f));
      request.mutable_sampling()->set_seed(seed + index);
      request.mutable_stopping()->set_max_new_tokens(output_tokens);
      request.mutable_stopping()->set_ignore_eos(true);
      request.set_n(choices);
      for (int turn = 0; turn < turns; ++turn) {
        Sample sample = api == "http" ? RunHttp(http, request, &tokens_out)
                                      : RunGrpc(*stub, request, &tokens_out);
        sample.turn = turn;
        const bool ok = sample.code == "OK";
        if (!ok) ++errors;
        // The next turn: this prompt, its answer, and new tokens.
        for (int32_t id : sample.answer) ids->add_ids(id);
        for (int i = 0; i < turn_tokens; ++i) ids->add_ids(draw(rng));
        request.mutable_sampling()->set_seed(seed + index + 7919 * (turn + 1));
        sample.answer.clear();
        std::lock_guard<std::mutex> lock(mu);
        samples.push_back(std::move(sample));
        if (!ok) break;
      }
      ++done;
    }
  };
  std::vector<std::thread> threads;
  for (int w = 0; w < concurrency; ++w) threads.emplace_back(worker, w);
  std::mutex progress_mu;
  std::condition_variable progress_cv;
  bool finished = false;
  std::thread progress([&] {
    std::unique_lock<std::mutex> lock(progress_mu);
    while (!progress_cv.wait_for(lock, std::chrono::milliseconds(200), [&] { return finished; })) {
      const double t = std::chrono::duration<double>(Clock::now() - start).count();
      fprintf(stderr, "\r%lld%s requests done, %.0f tokens/s, %lld errors, %.1f s   ",
              static_cast<long long>(done.load()),
              requests > 0 ? absl::StrCat("/", requests).c_str() : "",
              tokens_out.load() / std::max(t, 1e-9), static_cast<long long>(errors.load()), t);
    }
  });
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  {
    std::lock_guard<std::mutex> lock(progress_mu);
    finished = true;
  }
  progress_cv.notify_one();
  progress.join();
  fprintf(stderr, "\n");

  std::vector<double> ttft, itl, e2e;
  std::map<std::string, int64_t> by_code;
  int64_t ok = 0, generated = 0;
  for (const Sample& s : samples) {
    ++by_code[s.code];
    if (s.code != "OK") continue;
    ++ok;
    generated += s.tokens;
    if (s.ttft >= 0) ttft.push_back(s.ttft * 1e3);
    for (double x : s.itl) itl.push_back(x * 1e3);
    e2e.push_back(s.e2e * 1e3);
  }
  const LatencySummary t = Summarize(ttft), i = Summarize(itl), e = Summarize(e2e);
  const std::string target = api == "http" ? http.url : absl::GetFlag(FLAGS_server);
  printf(
      "seqboat-cli bench: %s %s, concurrency %d, prompt %d tokens (%d shared), %d output tokens, "
      "n %d\n",
      api.c_str(), target.c_str(), concurrency, prompt_tokens, shared_tokens + 1, output_tokens,
      choices);
  printf("requests ok %lld, failed %lld; wall %.2f s; %.1f output tokens/s; %.2f requests/s\n",
         static_cast<long long>(ok), static_cast<long long>(samples.size() - ok), wall,
         generated / wall, ok / wall);
  printf("%-26s %10s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99", "max");
  auto row = [](const char* name, const LatencySummary& s) {
    printf("%-26s %10.2f %10.2f %10.2f %10.2f %10.2f\n", name, s.mean, s.p50, s.p90, s.p99, s.max);
  };
  row("time to first token", t);
  row("inter-token latency", i);
  row("end to end", e);
  // --turns: time to first token and cached prompt tokens by turn.
  nlohmann::json by_turn = nlohmann::json::array();
  if (turns > 1) {
    printf("%-6s %14s %14s %14s %18s\n", "turn", "prompt tokens", "TTFT p50 ms", "TTFT p99 ms",
           "cached tokens p50");
    for (int turn = 0; turn < turns; ++turn) {
      std::vector<double> turn_ttft, cached;
      for (const Sample& s : samples) {
        if (s.turn != turn || s.code != "OK" || s.ttft < 0) continue;
        turn_ttft.push_back(s.ttft * 1e3);
        cached.push_back(static_cast<double>(s.cached_tokens));
      }
      const int64_t tokens =
          prompt_tokens + static_cast<int64_t>(turn) * (output_tokens + turn_tokens);
      const LatencySummary ts = Summarize(turn_ttft), cs = Summarize(cached);
      printf("%-6d %14lld %14.2f %14.2f %18.0f\n", turn + 1, static_cast<long long>(tokens), ts.p50,
             ts.p99, cs.p50);
      by_turn.push_back({{"turn", turn + 1},
                         {"prompt_tokens", tokens},
                         {"ttft_ms", {{"p50", ts.p50}, {"p99", ts.p99}, {"count", ts.count}}},
                         {"cached_tokens_p50", cs.p50}});
    }
  }
  auto summary = [](const LatencySummary& s) {
    return nlohmann::json{{"count", s.count}, {"mean", s.mean}, {"p50", s.p50},
                          {"p90", s.p90},     {"p99", s.p99},   {"max", s.max}};
  };
  nlohmann::json report = {
      {"api", api},
      {"server", target},
      {"concurrency", concurrency},
      {"prompt_tokens", prompt_tokens},
      {"shared_prefix_tokens", shared_tokens + 1},
      {"output_tokens", output_tokens},
      {"requests_ok", ok},
      {"requests_by_code", by_code},
      {"wall_s", wall},
      {"output_tokens_per_s", generated / wall},
      {"requests_per_s", ok / wall},
      {"ttft_ms", summary(t)},
      {"itl_ms", summary(i)},
      {"e2e_ms", summary(e)},
      {"n", choices},
      {"turns", turns},
      {"turn_tokens", turn_tokens},
      {"by_turn", by_turn},
      {"model", {{"parameters", info.parameters()}, {"backend", info.backend()}}}};
  printf("%s\n", report.dump().c_str());
  if (const std::string path = absl::GetFlag(FLAGS_json_out); !path.empty()) {
    std::ofstream(path) << report.dump(2) << "\n";
  }
  return errors.load() == 0 ? 0 : kCallError;
}

constexpr char kUsage[] =
    "seqboat-cli: talks to seqboat-server over gRPC.\n"
    "  seqboat-cli generate \"PROMPT\" [--max_new_tokens N] [--temperature T] [--top_k K] [--top_p "
    "P]\n"
    "              [--min_p P] [--seed S] [--stop a,b] [--stop_token_ids 2,5] [--ignore_eos] "
    "[--logprobs N]\n"
    "              [--return_activations] [--json] [--tokens 2,17,9]\n"
    "              [--activation_bias B | --layer_activation_bias B0,B1,...]\n"
    "  seqboat-cli info [--json]\n"
    "  seqboat-cli tokenize \"TEXT\" [--json]\n"
    "  seqboat-cli health [SERVICE]   (exit 0 when SERVING: an exec probe)\n"
    "  seqboat-cli bench [--concurrency N] [--requests N | --duration_s S] [--prompt_tokens N]\n"
    "              [--output_tokens N] [--shared_prefix_ratio R] [--json_out FILE]\n"
    "              [--api grpc|http] [--http_server HOST:PORT] [--turns N --turn_tokens M] [--n "
    "N]\n"
    "Every command: [--server HOST:PORT | ipv4:HOST:PORT,... | dns:///NAME:PORT]\n"
    "              [--lb_policy round_robin|pick_first] [--health_check] [--max_attempts N]\n"
    "              [--api_key KEY] [--tls_ca FILE] [--timeout_s S]";

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() < 2) return Fail(kUsageError, absl::StrCat("expected a command\n", kUsage));
  const std::string command = rest[1];
  const std::vector<char*> args(rest.begin() + 2, rest.end());
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
  if (!channel.ok()) return Fail(kUsageError, std::string(channel.status().message()));
  auto stub = v1::SeqBoat::NewStub(*channel);
  if (command == "generate") return Generate(*stub, args);
  if (command == "info" && args.empty()) return Info(*stub);
  if (command == "tokenize") return Tokenize(*stub, args);
  if (command == "health") return Health(*channel, args);
  if (command == "bench" && args.empty()) return Bench(*channel);
  return Fail(kUsageError,
              absl::StrCat("unknown command or extra arguments: '", command,
                           "'; expected generate, info, tokenize, health or bench\n", kUsage));
}

}  // namespace
}  // namespace seqboat::cli

int main(int argc, char** argv) { return seqboat::cli::Main(argc, argv); }
