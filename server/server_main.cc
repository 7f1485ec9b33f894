// seqboat-server: loads a model file, starts the engine on a backend, serves the
// seqboat.v1.SeqBoat gRPC API with health and reflection, and exports Prometheus metrics.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <unistd.h>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/fault_injecting_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "runtime/util/status_macros.h"
#include "server/api_keys.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/service.h"
#ifdef SEQBOAT_HAVE_CUDA
#include "kernels/cuda_backend.h"
#endif

ABSL_FLAG(std::string, model, "", "Model file (.safetensors) made by seqboat-convert. Required.");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "gRPC address HOST:PORT; port 0 picks a free port.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address HOST:PORT; empty turns metrics off; port 0 picks a free port.");
ABSL_FLAG(std::string, metrics_api_keys_file, "",
          "File with the keys a scrape of /metrics must carry as 'Authorization: Bearer KEY' (format as "
          "--api_keys_file); empty: /metrics is open.");
ABSL_FLAG(std::string, device, "cpu", "Backend: cpu or cuda.");
ABSL_FLAG(int32_t, cuda_device, 0, "With --device cuda: the CUDA device ordinal.");
ABSL_FLAG(std::string, weight_dtype, "as_stored",
          "Matrices (and FIFO keys/values) on the device: as_stored, f32, f16 or bf16 (--device cuda; "
          "the CPU backend computes in f32 whatever the file holds).");
ABSL_FLAG(bool, cuda_graphs, true, "With --device cuda: replay decode steps from CUDA graphs.");
ABSL_FLAG(int64_t, state_memory_mb, 0,
          "Memory for all sequence state (request slots and prefix cache) in MiB; 0 = no limit. The "
          "--max_batch request slots must fit; the prefix cache gets the rest, at most --prefix_cache_mb.");
ABSL_FLAG(int32_t, threads, 0, "CPU backend threads; 0 = every hardware thread.");
ABSL_FLAG(int32_t, sampling_threads, 0,
          "Threads sampling each iteration's tokens (pays off for large vocabularies and batches); "
          "0 = half the hardware threads, at most 8.");
ABSL_FLAG(std::string, ema_horizon, "exact", "MD-EMA horizon: exact (untruncated) or trained (truncated kernel).");
ABSL_FLAG(int32_t, fifo_capacity, 0, "FIFO bound for SeqBoat-full models (chunk_size <= 0); 0 takes the model's w.");
ABSL_FLAG(int32_t, max_batch, 8, "Sequences decoded together (state slots for requests).");
ABSL_FLAG(int32_t, max_waiting, 64,
          "Requests queued beyond the --max_batch slots; beyond them Generate answers RESOURCE_EXHAUSTED (0: no "
          "queue, a request needs a free slot).");
ABSL_FLAG(int64_t, prefill_chunk, 256, "Prompt tokens per engine iteration over all prefilling requests.");
ABSL_FLAG(int64_t, max_prompt_tokens, 8192, "Longest prompt in tokens.");
ABSL_FLAG(int32_t, max_new_tokens_limit, 4096, "Cap on a request's max_new_tokens.");
ABSL_FLAG(int64_t, prefix_cache_mb, 256, "Memory for prefix-state snapshots in MiB; 0 turns the cache off.");
ABSL_FLAG(int64_t, prefix_cache_block, 32,
          "Prefix-cache snapshots are taken at multiples of this many prompt tokens.");
ABSL_FLAG(int64_t, max_text_bytes, 256 << 10,
          "Longest GenerateRequest.text and TokenizeRequest.text in bytes, refused before they are read.");
ABSL_FLAG(int64_t, max_request_bytes, 0,
          "Largest request message gRPC accepts, in bytes (RESOURCE_EXHAUSTED beyond); 0 = room for the longest "
          "text or token prompt and every other field.");
ABSL_FLAG(int64_t, max_metadata_bytes, 16 << 10,
          "Largest request metadata (HTTP/2 headers) gRPC accepts, in bytes. gRPC answers a larger one with "
          "RESOURCE_EXHAUSTED and may end the other streams on that connection too (server/README.md).");
ABSL_FLAG(int64_t, stream_buffer_kb, 4096,
          "A Generate stream whose client has not read this many KiB of it (about: serialized size) ends with "
          "RESOURCE_EXHAUSTED; the server holds no more for a slow client.");
ABSL_FLAG(double, stream_write_timeout_s, 30,
          "A Generate stream whose client reads nothing for this long ends with DEADLINE_EXCEEDED.");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain: serve TLS (with --tls_key).");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for --tls_cert.");
ABSL_FLAG(std::string, api_keys_file, "",
          "File with one API key per line ('#' starts a comment); calls then need 'authorization: Bearer KEY'.");
ABSL_FLAG(double, shutdown_grace_s, 30, "On SIGTERM/SIGINT, seconds in-flight streams get to finish.");
ABSL_FLAG(double, heartbeat_timeout_s, 10, "Health turns NOT_SERVING when the engine loop is silent this long.");
ABSL_FLAG(int32_t, debug_step_delay_ms, 0, "Testing: sleep this long after every engine iteration (a slow device).");
ABSL_FLAG(int64_t, debug_fail_forward, 0,
          "Testing: fail the Nth backend forward call as a device error would (0 = never).");
ABSL_FLAG(bool, debug_fail_sticky, false,
          "Testing: with --debug_fail_forward, that call and every later one fail and the backend reports "
          "itself unusable, as a lost device would.");

namespace seqboat::server {
namespace {

constexpr char kServiceName[] = "seqboat.v1.SeqBoat";
constexpr int kMaxStateSlots = 1 << 16;  // the backends' limit on state slots (requests + prefix cache)
constexpr char kVersion[] = "0.1.0";

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

absl::Status CheckFlags() {
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model: required (a .safetensors file)");
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("--device: '", device, "'; expected cpu or cuda"));
  }
  const std::string weight_dtype = absl::GetFlag(FLAGS_weight_dtype);
  if (weight_dtype != "as_stored" && weight_dtype != "f32" && weight_dtype != "f16" && weight_dtype != "bf16") {
    return absl::InvalidArgumentError(
        absl::StrCat("--weight_dtype: '", weight_dtype, "'; expected as_stored, f32, f16 or bf16"));
  }
  if (device == "cpu" && weight_dtype != "as_stored" && weight_dtype != "f32") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--weight_dtype ", weight_dtype, ": the CPU backend computes in f32; use f32 or as_stored (or --device cuda)"));
  }
  const std::string horizon = absl::GetFlag(FLAGS_ema_horizon);
  if (horizon != "exact" && horizon != "trained") {
    return absl::InvalidArgumentError(absl::StrCat("--ema_horizon: '", horizon, "'; expected exact or trained"));
  }
  auto positive = [](const char* name, int64_t value) -> absl::Status {
    if (value < 1) return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", value, "; expected >= 1"));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(positive("max_batch", absl::GetFlag(FLAGS_max_batch)));
  if (absl::GetFlag(FLAGS_max_batch) > kMaxStateSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_batch: ", absl::GetFlag(FLAGS_max_batch), "; expected at most ", kMaxStateSlots));
  }
  RETURN_IF_ERROR(positive("prefill_chunk", absl::GetFlag(FLAGS_prefill_chunk)));
  RETURN_IF_ERROR(positive("max_prompt_tokens", absl::GetFlag(FLAGS_max_prompt_tokens)));
  RETURN_IF_ERROR(positive("max_new_tokens_limit", absl::GetFlag(FLAGS_max_new_tokens_limit)));
  RETURN_IF_ERROR(positive("prefix_cache_block", absl::GetFlag(FLAGS_prefix_cache_block)));
  RETURN_IF_ERROR(positive("max_text_bytes", absl::GetFlag(FLAGS_max_text_bytes)));
  RETURN_IF_ERROR(positive("stream_buffer_kb", absl::GetFlag(FLAGS_stream_buffer_kb)));
  RETURN_IF_ERROR(positive("max_metadata_bytes", absl::GetFlag(FLAGS_max_metadata_bytes)));
  for (const auto& [name, value] : {std::pair{"max_text_bytes", absl::GetFlag(FLAGS_max_text_bytes)},
                                    std::pair{"max_request_bytes", absl::GetFlag(FLAGS_max_request_bytes)},
                                    std::pair{"max_metadata_bytes", absl::GetFlag(FLAGS_max_metadata_bytes)},
                                    std::pair{"stream_buffer_kb", absl::GetFlag(FLAGS_stream_buffer_kb)}}) {
    if (value > (int64_t{1} << 30)) {  // gRPC's sizes are ints; 1 GiB is more than any request
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", value, "; expected at most ", int64_t{1} << 30));
    }
  }
  if (!(absl::GetFlag(FLAGS_stream_write_timeout_s) > 0)) {
    return absl::InvalidArgumentError("--stream_write_timeout_s: expected > 0");
  }
  auto non_negative = [](const char* name, double value) -> absl::Status {
    if (!(value >= 0)) return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", value, "; expected >= 0"));
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(non_negative("max_waiting", absl::GetFlag(FLAGS_max_waiting)));
  RETURN_IF_ERROR(non_negative("max_request_bytes", static_cast<double>(absl::GetFlag(FLAGS_max_request_bytes))));
  RETURN_IF_ERROR(non_negative("threads", absl::GetFlag(FLAGS_threads)));
  RETURN_IF_ERROR(non_negative("sampling_threads", absl::GetFlag(FLAGS_sampling_threads)));
  RETURN_IF_ERROR(non_negative("fifo_capacity", absl::GetFlag(FLAGS_fifo_capacity)));
  RETURN_IF_ERROR(non_negative("prefix_cache_mb", static_cast<double>(absl::GetFlag(FLAGS_prefix_cache_mb))));
  RETURN_IF_ERROR(non_negative("state_memory_mb", static_cast<double>(absl::GetFlag(FLAGS_state_memory_mb))));
  RETURN_IF_ERROR(non_negative("cuda_device", absl::GetFlag(FLAGS_cuda_device)));
  for (const auto& [name, mib] : {std::pair{"prefix_cache_mb", absl::GetFlag(FLAGS_prefix_cache_mb)},
                                  std::pair{"state_memory_mb", absl::GetFlag(FLAGS_state_memory_mb)}}) {
    if (mib > (int64_t{1} << 30)) {  // 1 PiB: MiB counts that still fit in bytes
      return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", mib, "; expected at most ", int64_t{1} << 30));
    }
  }
  RETURN_IF_ERROR(non_negative("shutdown_grace_s", absl::GetFlag(FLAGS_shutdown_grace_s)));
  RETURN_IF_ERROR(non_negative("debug_step_delay_ms", absl::GetFlag(FLAGS_debug_step_delay_ms)));
  RETURN_IF_ERROR(non_negative("debug_fail_forward", static_cast<double>(absl::GetFlag(FLAGS_debug_fail_forward))));
  if (absl::GetFlag(FLAGS_debug_fail_sticky) && absl::GetFlag(FLAGS_debug_fail_forward) == 0) {
    return absl::InvalidArgumentError("--debug_fail_sticky: needs --debug_fail_forward N (the call that loses the device)");
  }
  if (!(absl::GetFlag(FLAGS_heartbeat_timeout_s) > 0)) {
    return absl::InvalidArgumentError("--heartbeat_timeout_s: expected > 0");
  }
  if (absl::GetFlag(FLAGS_tls_cert).empty() != absl::GetFlag(FLAGS_tls_key).empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key: give both or neither");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const Model& model, int slots) {
  const EmaHorizon horizon =
      absl::GetFlag(FLAGS_ema_horizon) == "trained" ? EmaHorizon::kTrained : EmaHorizon::kExact;
  if (absl::GetFlag(FLAGS_device) == "cuda") {
#ifdef SEQBOAT_HAVE_CUDA
    CudaBackendOptions options;
    options.num_slots = slots;
    options.ema_horizon = horizon;
    options.fifo_capacity = absl::GetFlag(FLAGS_fifo_capacity);
    options.device = absl::GetFlag(FLAGS_cuda_device);
    ASSIGN_OR_RETURN(options.weight_dtype, ParseCudaWeightDType(absl::GetFlag(FLAGS_weight_dtype)));
    options.use_cuda_graphs = absl::GetFlag(FLAGS_cuda_graphs);
    options.state_memory_budget_bytes = static_cast<size_t>(absl::GetFlag(FLAGS_state_memory_mb)) << 20;
    return CreateCudaBackend(model, options);
#else
    return absl::FailedPreconditionError(
        "--device cuda: this binary was built without the CUDA backend (build with the cuda preset)");
#endif
  }
  CpuBackendOptions options;
  options.num_slots = slots;
  options.ema_horizon = horizon;
  options.fifo_capacity = absl::GetFlag(FLAGS_fifo_capacity);
  options.num_threads = absl::GetFlag(FLAGS_threads);
  ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> backend, CpuBackend::Create(model, options));
  return std::unique_ptr<Backend>(std::move(backend));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeServingBackend(const Model& model, int slots) {
  ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(model, slots));
  if (const int64_t fail = absl::GetFlag(FLAGS_debug_fail_forward); fail > 0) {
    return std::unique_ptr<Backend>(
        std::make_unique<FaultInjectingBackend>(std::move(backend), fail, absl::GetFlag(FLAGS_debug_fail_sticky)));
  }
  return backend;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials() {
  if (absl::GetFlag(FLAGS_tls_cert).empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  ASSIGN_OR_RETURN(std::string cert, ReadFile(absl::GetFlag(FLAGS_tls_cert), "tls_cert"));
  ASSIGN_OR_RETURN(std::string key, ReadFile(absl::GetFlag(FLAGS_tls_key), "tls_key"));
  options.pem_key_cert_pairs.push_back({key, cert});
  return grpc::SslServerCredentials(options);
}

// Runs until SIGTERM/SIGINT; returns the process exit code.
int Serve() {
  if (absl::Status flags = CheckFlags(); !flags.ok()) {
    fprintf(stderr, "seqboat-server: %s\n", std::string(flags.message()).c_str());
    return 2;
  }
  std::vector<std::string> api_keys, metrics_api_keys;
  for (auto [flag, path, keys] : {std::tuple{"api_keys_file", absl::GetFlag(FLAGS_api_keys_file), &api_keys},
                                  std::tuple{"metrics_api_keys_file", absl::GetFlag(FLAGS_metrics_api_keys_file),
                                             &metrics_api_keys}}) {
    if (path.empty()) continue;
    absl::StatusOr<std::vector<std::string>> read = ReadApiKeysFile(path, flag);
    if (!read.ok()) {
      fprintf(stderr, "seqboat-server: %s\n", std::string(read.status().message()).c_str());
      return 2;
    }
    *keys = *std::move(read);
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = MakeCredentials();
  if (!credentials.ok()) {
    fprintf(stderr, "seqboat-server: %s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }

  const std::string model_path = absl::GetFlag(FLAGS_model);
  const absl::Time load_start = absl::Now();
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(model_path);
  if (!model.ok()) {
    fprintf(stderr, "seqboat-server: --model %s: %s\n", model_path.c_str(), std::string(model.status().message()).c_str());
    return 2;
  }
  const ModelConfig& config = (*model)->config();
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromJson((*model)->tokenizer_json());
  if (!tokenizer.ok()) {
    fprintf(stderr, "seqboat-server: --model %s: tokenizer: %s\n", model_path.c_str(),
            std::string(tokenizer.status().message()).c_str());
    return 2;
  }

  // A one-slot probe tells the state size, which sizes the prefix cache.
  const int max_batch = absl::GetFlag(FLAGS_max_batch);
  size_t state_bytes = 0;
  {
    absl::StatusOr<std::unique_ptr<Backend>> probe = MakeBackend(**model, 1);
    if (!probe.ok()) {
      fprintf(stderr, "seqboat-server: backend: %s\n", std::string(probe.status().message()).c_str());
      return 2;
    }
    state_bytes = (*probe)->state_bytes_per_slot();
  }
  int64_t cache_budget = absl::GetFlag(FLAGS_prefix_cache_mb) << 20;
  const int64_t state_budget = absl::GetFlag(FLAGS_state_memory_mb) << 20;
  if (state_budget > 0) {
    const int64_t request_bytes = static_cast<int64_t>(state_bytes) * max_batch;
    if (request_bytes > state_budget) {
      fprintf(stderr,
              "seqboat-server: --state_memory_mb %lld holds %lld sequences of %.2f MB; --max_batch %d needs %.1f MiB\n",
              static_cast<long long>(absl::GetFlag(FLAGS_state_memory_mb)),
              static_cast<long long>(state_budget / static_cast<int64_t>(state_bytes)), state_bytes / 1e6, max_batch,
              request_bytes / 1048576.0);
      return 2;
    }
    cache_budget = std::min(cache_budget, state_budget - request_bytes);
  }
  const int cache_slots = static_cast<int>(
      std::min<int64_t>({cache_budget / static_cast<int64_t>(state_bytes), 4096, kMaxStateSlots - max_batch}));
  absl::StatusOr<std::unique_ptr<Backend>> backend = MakeServingBackend(**model, max_batch + cache_slots);
  if (!backend.ok()) {
    fprintf(stderr, "seqboat-server: backend with %d state slots: %s\n", max_batch + cache_slots,
            std::string(backend.status().message()).c_str());
    return 2;
  }
  fprintf(stderr, "seqboat-server: loaded %s (%lld parameters, %s backend) in %.2f s; %d request slots and %d prefix-cache slots of %.2f MB\n",
          model_path.c_str(), static_cast<long long>((*model)->parameter_count()), (*backend)->name(),
          absl::ToDoubleSeconds(absl::Now() - load_start), max_batch, cache_slots, state_bytes / 1e6);

  Metrics metrics(config.layers);
  metrics.SetStateMemory(max_batch, static_cast<int64_t>(state_bytes),
                         static_cast<int64_t>(state_bytes) * (max_batch + cache_slots), state_budget);
  std::unique_ptr<MetricsHttpServer> metrics_server;
  const std::string metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!metrics_listen.empty()) {
    MetricsHttpOptions metrics_options;
    metrics_options.api_keys = metrics_api_keys;
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started =
        MetricsHttpServer::Start(metrics_listen, metrics.registry(), std::move(metrics_options));
    if (!started.ok()) {
      fprintf(stderr, "seqboat-server: --metrics_listen: %s\n", std::string(started.status().message()).c_str());
      return 2;
    }
    metrics_server = *std::move(started);
  }

  EngineOptions engine_options;
  engine_options.max_running = max_batch;
  engine_options.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  engine_options.prefill_budget = absl::GetFlag(FLAGS_prefill_chunk);
  engine_options.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  engine_options.max_new_tokens_limit = absl::GetFlag(FLAGS_max_new_tokens_limit);
  engine_options.prefix_cache_slots = cache_slots;
  engine_options.prefix_cache_block = absl::GetFlag(FLAGS_prefix_cache_block);
  engine_options.iteration_delay = absl::Milliseconds(absl::GetFlag(FLAGS_debug_step_delay_ms));
  engine_options.sampling_threads = absl::GetFlag(FLAGS_sampling_threads);
  if (engine_options.sampling_threads == 0) {
    engine_options.sampling_threads = std::clamp(static_cast<int>(std::thread::hardware_concurrency()) / 2, 1, 8);
  }
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(backend->get(), config, engine_options, &metrics);
  if (!engine.ok()) {
    fprintf(stderr, "seqboat-server: engine: %s\n", std::string(engine.status().message()).c_str());
    return 2;
  }

  ServiceLimits limits;
  limits.max_text_bytes = absl::GetFlag(FLAGS_max_text_bytes);
  limits.request = engine_options.request_limits();
  limits.max_open_streams = int64_t{max_batch} + engine_options.max_waiting;
  limits.stream_buffer_bytes = absl::GetFlag(FLAGS_stream_buffer_kb) << 10;
  limits.stream_write_timeout = absl::Seconds(absl::GetFlag(FLAGS_stream_write_timeout_s));
  limits.default_max_new_tokens = std::min(limits.default_max_new_tokens, engine_options.max_new_tokens_limit);
  // A request holds its text or its token ids (5 bytes each at most) and small fields.
  int64_t max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  if (max_request_bytes == 0) {
    max_request_bytes = std::max(limits.max_text_bytes, 5 * engine_options.max_prompt_tokens) + (64 << 10);
  }
  seqboat::v1::ModelInfo info;
  info.set_model_file(model_path);
  info.set_config_json(ModelConfigToJson(config));
  info.set_layers(config.layers);
  info.set_embed_dim(config.embed_dim);
  info.set_z_dim(config.z_dim);
  info.set_hidden_dim(config.hidden_dim);
  info.set_n_dim(config.n_dim);
  info.set_window(config.chunk_size > 0 ? config.chunk_size : absl::GetFlag(FLAGS_fifo_capacity));
  info.set_vocab_size(config.vocab_size);
  info.set_tokenizer_style(TokenizerStyleName(tokenizer->style()));
  info.set_attention(AttentionKindName(config.attention));
  info.set_backend((*backend)->name());
  info.set_ema_horizon(absl::GetFlag(FLAGS_ema_horizon));
  info.set_state_bytes_per_sequence(static_cast<int64_t>(state_bytes));
  info.set_parameters((*model)->parameter_count());
  info.set_prefix_cache_bytes(static_cast<int64_t>(cache_slots) * static_cast<int64_t>(state_bytes));
  info.set_server_version(kVersion);
  info.set_start_token_id(kEosId);
  info.set_special_tokens(kNumSpecialIds);
  seqboat::v1::Limits* limit_info = info.mutable_limits();
  limit_info->set_max_batch(max_batch);
  limit_info->set_max_waiting(engine_options.max_waiting);
  limit_info->set_max_prompt_tokens(engine_options.max_prompt_tokens);
  limit_info->set_max_new_tokens_limit(engine_options.max_new_tokens_limit);
  limit_info->set_max_stop_sequences(limits.max_stop_sequences);
  limit_info->set_max_stop_bytes(limits.max_stop_bytes);
  limit_info->set_max_logprobs(limits.request.max_top_logprobs);
  limit_info->set_prefill_chunk(engine_options.prefill_budget);
  limit_info->set_max_stop_token_ids(limits.request.max_stop_token_ids);
  limit_info->set_max_text_bytes(limits.max_text_bytes);
  limit_info->set_max_request_bytes(max_request_bytes);
  limit_info->set_stream_buffer_bytes(limits.stream_buffer_bytes);

  SeqBoatService service(engine->get(), &*tokenizer, config, info, limits, api_keys, &metrics);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(static_cast<int>(max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, static_cast<int>(absl::GetFlag(FLAGS_max_metadata_bytes)));
  int port = 0;
  const std::string listen = absl::GetFlag(FLAGS_listen);
  builder.AddListeningPort(listen, *credentials, &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    fprintf(stderr, "seqboat-server: --listen %s: cannot listen there (expected a free HOST:PORT)\n", listen.c_str());
    (*engine)->Shutdown(absl::ZeroDuration());
    return 2;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  auto set_serving = [&](bool serving) {
    health->SetServingStatus(serving);
    health->SetServingStatus(kServiceName, serving);
    metrics.SetServing(serving);
  };
  set_serving(true);

  const std::string host = listen.substr(0, listen.rfind(':'));
  printf("seqboat-server: listening on %s:%d\n", host.c_str(), port);
  if (metrics_server != nullptr) {
    const std::string metrics_host = metrics_listen.substr(0, metrics_listen.rfind(':'));
    printf("seqboat-server: metrics on http://%s:%d/metrics\n", metrics_host.c_str(), metrics_server->port());
  }
  printf("seqboat-server: ready\n");
  fflush(stdout);

  // Watchdog: health follows the engine's heartbeat and the backend's usability; the queue
  // gauges follow the engine.
  absl::Notification draining;
  const absl::Duration heartbeat_timeout = absl::Seconds(absl::GetFlag(FLAGS_heartbeat_timeout_s));
  std::thread watchdog([&] {
    bool serving = true;
    while (!draining.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      const bool fresh = absl::Now() - (*engine)->last_heartbeat() < heartbeat_timeout;
      const bool usable = (*engine)->backend_status().ok();
      if ((fresh && usable) != serving) {
        serving = fresh && usable;
        set_serving(serving);
        fprintf(stderr, "seqboat-server: %s\n",
                serving ? "engine responsive again: SERVING"
                        : (usable ? "engine silent: NOT_SERVING" : "backend unusable: NOT_SERVING"));
      }
      metrics.SetQueue((*engine)->running(), (*engine)->waiting());
    }
  });

  // The signal mask was set in main before any thread started: only this wait sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  int signal_number = 0;
  sigwait(&signals, &signal_number);

  const absl::Duration grace = absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_s));
  fprintf(stderr, "seqboat-server: %s: draining (grace %.1f s)\n", strsignal(signal_number),
          absl::ToDoubleSeconds(grace));
  draining.Notify();
  watchdog.join();
  set_serving(false);
  service.StopAccepting();
  // The engine ends what is still running when the grace period is over (reason CANCELLED).
  // Streams then get what is left of the grace period to be read, and at least
  // kFinalMessageTime for their last message; gRPC cancels those whose client is not reading.
  constexpr absl::Duration kFinalMessageTime = absl::Milliseconds(500);
  const absl::Time drain_start = absl::Now();
  (*engine)->Shutdown(grace);
  server->Shutdown(absl::ToChronoTime(std::max(drain_start + grace, absl::Now() + kFinalMessageTime)));
  metrics.SetQueue(0, 0);
  fprintf(stderr, "seqboat-server: stopped\n");
  return 0;
}

}  // namespace
}  // namespace seqboat::server

int main(int argc, char** argv) {
  // SIGTERM/SIGINT are taken by sigwait in Serve: block them before any thread exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A crash (SIGSEGV, SIGABRT, ...) prints a symbolized stack trace to stderr before the
  // process dies, so that a failure in production or CI names where it happened. SIGTERM
  // stays blocked above and is still taken by sigwait.
  absl::InitializeSymbolizer(argv[0]);
  absl::InstallFailureSignalHandler(absl::FailureSignalHandlerOptions());

  absl::SetProgramUsageMessage(
      "Serves a SeqBoat model over gRPC (seqboat.v1.SeqBoat) with Prometheus metrics.\n"
      "  seqboat-server --model model.safetensors [--listen 127.0.0.1:50051] [--device cpu|cuda] ...");
  // absl ends the process with code 1 on a bad flag; this server promises 2.
  bool help = false;
  for (int i = 1; i < argc; ++i) help |= absl::string_view(argv[i]).substr(0, 6) == "--help";
  static bool parsing = true;
  if (!help) std::atexit([] {
      if (parsing) _exit(2);
    });
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  parsing = false;
  if (rest.size() > 1) {
    fprintf(stderr, "seqboat-server: unexpected argument '%s'; every option is a --flag\n", rest[1]);
    return 2;
  }
  return seqboat::server::Serve();
}
