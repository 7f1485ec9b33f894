// seqboat-server: loads a model file, starts the engine on a backend, serves the
// seqboat.v1.SeqBoat gRPC API with health and reflection, and exports Prometheus metrics.
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/debugging/failure_signal_handler.h"
#include "absl/debugging/symbolize.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/notification.h"
#include "runtime/cpu/cpu_backend.h"
#include "runtime/engine/engine.h"
#include "runtime/fault_injecting_backend.h"
#include "runtime/model/model.h"
#include "runtime/model/tokenizer.h"
#include "runtime/util/status_macros.h"
#include "server/chat_template.h"
#include "server/http_api.h"
#include "server/metrics.h"
#include "server/metrics_http.h"
#include "server/process_metrics.h"
#include "server/server_config.h"
#include "server/service.h"
#include "server/stream_capacity.h"
#ifdef SEQBOAT_HAVE_CUDA
#include "kernels/cuda_backend.h"
#endif

namespace seqboat::server {
namespace {

constexpr char kServiceName[] = "seqboat.v1.SeqBoat";
constexpr char kVersion[] = "0.1.0";

// A failure at start-up: the message is one line on stderr, then exit code 2.
int StartupError(const absl::Status& status) {
  fprintf(stderr, "seqboat-server: %s\n", std::string(status.message()).c_str());
  return 2;
}

// The options both backends take.
BackendOptions CommonOptions(const ServerConfig& config, int slots) {
  BackendOptions options;
  options.num_slots = slots;
  options.ema_horizon = config.ema_horizon;
  options.fifo_capacity = config.fifo_capacity;
  options.weight_dtype = config.weight_dtype;
  options.fifo_dtype = config.fifo_dtype;
  return options;
}

CpuBackendOptions CpuOptions(const ServerConfig& config, int slots) {
  CpuBackendOptions options;
  static_cast<BackendOptions&>(options) = CommonOptions(config, slots);
  options.num_threads = config.threads;
  return options;
}

#ifdef SEQBOAT_HAVE_CUDA
CudaBackendOptions CudaOptions(const ServerConfig& config, int slots) {
  CudaBackendOptions options;
  static_cast<BackendOptions&>(options) = CommonOptions(config, slots);
  options.device = config.cuda_device;
  options.use_cuda_graphs = config.cuda_graphs;
  options.state_memory_budget_bytes = static_cast<size_t>(config.state_memory_bytes);
  return options;
}
#endif

#ifndef SEQBOAT_HAVE_CUDA
absl::Status NoCuda() {
  return absl::FailedPreconditionError(
      "--device cuda: this binary was built without the CUDA backend (build with the cuda preset)");
}
#endif

// What one sequence's state takes on the configured backend, from the model alone.
absl::StatusOr<size_t> StateBytesPerSequence(const Model& model, const ServerConfig& config) {
  if (config.device == "cuda") {
#ifdef SEQBOAT_HAVE_CUDA
    return CudaStateBytesPerSlot(model, CudaOptions(config, 1));
#else
    return NoCuda();
#endif
  }
  return CpuBackend::StateBytesPerSlot(model.config(), CpuOptions(config, 1));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(const Model& model, const ServerConfig& config,
                                                     int slots) {
  std::unique_ptr<Backend> backend;
  if (config.device == "cuda") {
#ifdef SEQBOAT_HAVE_CUDA
    ASSIGN_OR_RETURN(backend, CreateCudaBackend(model, CudaOptions(config, slots)));
    // The CUDA backend keeps its FIFOs in its compute dtype: a --fifo_dtype must name it.
    if (config.fifo_dtype != WeightDType::kAsStored &&
        absl::string_view(WeightDTypeName(config.fifo_dtype)) != backend->fifo_dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--fifo_dtype ", WeightDTypeName(config.fifo_dtype),
                       ": --device cuda keeps FIFO keys and values in its weight dtype (",
                       backend->fifo_dtype(), "); pass as_stored or ", backend->fifo_dtype()));
    }
#else
    return NoCuda();
#endif
  } else {
    ASSIGN_OR_RETURN(std::unique_ptr<CpuBackend> cpu,
                     CpuBackend::Create(model, CpuOptions(config, slots)));
    backend = std::move(cpu);
  }
  if (config.debug_fail_forward > 0) {
    backend = std::make_unique<FaultInjectingBackend>(std::move(backend), config.debug_fail_forward,
                                                      config.debug_fail_sticky);
  }
  return backend;
}

// The state slots: --max_batch for requests, then as many prefix-cache slots as the budgets
// allow (--prefix_cache_mb, and --state_memory_mb for all of them).
struct SlotPlan {
  int request_slots = 0;
  int cache_slots = 0;
  size_t state_bytes = 0;  // per slot
};

absl::StatusOr<SlotPlan> PlanSlots(const ServerConfig& config, size_t state_bytes) {
  const int64_t bytes = static_cast<int64_t>(state_bytes);
  int64_t cache_budget = config.prefix_cache_bytes;
  if (config.state_memory_bytes > 0) {
    const int64_t request_bytes = bytes * config.max_batch;
    if (request_bytes > config.state_memory_bytes) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "--state_memory_mb %d holds %d sequences of %.2f MB; --max_batch %d needs %.1f MiB",
          config.state_memory_bytes >> 20, config.state_memory_bytes / bytes, state_bytes / 1e6,
          config.max_batch, request_bytes / 1048576.0));
    }
    cache_budget = std::min(cache_budget, config.state_memory_bytes - request_bytes);
  }
  SlotPlan plan;
  plan.request_slots = config.max_batch;
  plan.cache_slots = static_cast<int>(
      std::min<int64_t>({cache_budget / bytes, 4096, kMaxSlots - config.max_batch}));
  plan.state_bytes = state_bytes;
  return plan;
}

EngineOptions MakeEngineOptions(const ServerConfig& config, const SlotPlan& slots) {
  EngineOptions options;
  options.max_running = slots.request_slots;
  options.max_waiting = config.max_waiting;
  options.prefill_budget = config.prefill_budget;
  options.max_prompt_tokens = config.max_prompt_tokens;
  options.max_new_tokens_limit = config.max_new_tokens_limit;
  options.max_activation_bias = config.max_activation_bias;
  options.prefix_cache_slots = slots.cache_slots;
  options.prefix_cache_block = config.prefix_cache_block;
  options.snapshot_finished = config.prefix_cache_finished;
  options.snapshot_branch_points = config.prefix_cache_branch_points;
  options.iteration_delay = config.debug_step_delay;
  options.sampling_threads = config.sampling_threads;
  return options;
}

ServiceLimits MakeServiceLimits(const ServerConfig& config, const EngineOptions& engine) {
  ServiceLimits limits;
  limits.rules.max_text_bytes = config.max_text_bytes;
  limits.rules.engine = engine.request_limits();
  limits.rules.default_activation_bias = config.default_activation_bias;
  limits.stream_buffer_bytes = config.stream_buffer_bytes;
  limits.stream_write_timeout = config.stream_write_timeout;
  limits.rules.default_max_new_tokens =
      std::min(limits.rules.default_max_new_tokens, engine.max_new_tokens_limit);
  return limits;
}

seqboat::v1::ModelInfo DescribeModel(const ServerConfig& config, const Model& model,
                                     const Tokenizer& tokenizer, const Backend& backend,
                                     const SlotPlan& slots, int window, const EngineOptions& engine,
                                     const ServiceLimits& limits) {
  const ModelConfig& c = model.config();
  seqboat::v1::ModelInfo info;
  info.set_model_file(config.model_path);
  info.set_config_json(ModelConfigToJson(c));
  info.set_layers(c.layers);
  info.set_embed_dim(c.embed_dim);
  info.set_z_dim(c.z_dim);
  info.set_hidden_dim(c.hidden_dim);
  info.set_n_dim(c.n_dim);
  info.set_window(window);
  info.set_vocab_size(c.vocab_size);
  info.set_tokenizer_style(TokenizerStyleName(tokenizer.style()));
  info.set_attention(AttentionKindName(c.attention));
  info.set_backend(backend.name());
  info.set_weight_dtype(backend.weight_dtype());
  info.set_fifo_dtype(backend.fifo_dtype());
  info.set_ema_horizon(EmaHorizonName(config.ema_horizon));
  info.set_state_bytes_per_sequence(static_cast<int64_t>(slots.state_bytes));
  info.set_parameters(model.parameter_count());
  info.set_prefix_cache_bytes(static_cast<int64_t>(slots.cache_slots) *
                              static_cast<int64_t>(slots.state_bytes));
  info.set_server_version(kVersion);
  info.set_start_token_id(kEosId);
  info.set_special_tokens(kNumSpecialIds);
  seqboat::v1::Limits* l = info.mutable_limits();
  l->set_max_batch(engine.max_running);
  l->set_max_waiting(engine.max_waiting);
  l->set_max_prompt_tokens(engine.max_prompt_tokens);
  l->set_max_new_tokens_limit(engine.max_new_tokens_limit);
  l->set_max_stop_sequences(limits.rules.max_stop_sequences);
  l->set_max_stop_bytes(limits.rules.max_stop_bytes);
  l->set_max_logprobs(limits.rules.engine.max_top_logprobs);
  l->set_prefill_budget(engine.prefill_budget);
  l->set_max_stop_token_ids(limits.rules.engine.max_stop_token_ids);
  l->set_max_text_bytes(limits.rules.max_text_bytes);
  l->set_max_request_bytes(config.max_request_bytes);
  l->set_stream_buffer_bytes(limits.stream_buffer_bytes);
  l->set_max_n(limits.rules.engine.max_n);
  l->set_max_activation_bias(limits.rules.engine.max_activation_bias);
  l->set_default_activation_bias(limits.rules.default_activation_bias);
  return info;
}

std::shared_ptr<grpc::ServerCredentials> Credentials(const ServerConfig& config) {
  if (config.tls_cert_pem.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back({config.tls_key_pem, config.tls_cert_pem});
  return grpc::SslServerCredentials(options);
}

// The gRPC server with our service, health and reflection; null (and *port 0) when it
// cannot listen.
std::unique_ptr<grpc::Server> StartGrpc(const ServerConfig& config, SeqBoatService* service,
                                        int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_request_bytes));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             static_cast<int>(config.max_metadata_bytes));
  builder.AddListeningPort(config.listen, Credentials(config), port);
  builder.RegisterService(service);
  return builder.BuildAndStart();
}

std::string Host(const std::string& address) { return address.substr(0, address.rfind(':')); }

// SIGTERM and SIGINT, whichever thread takes them, write their number to this pipe (the
// handler does nothing else, so it is async-signal-safe); Serve reads it. A 0 byte wakes the
// reader at exit.
int stop_signal_pipe[2] = {-1, -1};

void OnStopSignal(int signal_number) {
  const int saved = errno;
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] const ssize_t written = write(stop_signal_pipe[1], &byte, 1);
  errno = saved;
}

// Installs OnStopSignal for SIGTERM and SIGINT (after absl's failure handler, which would
// otherwise take SIGTERM for a crash).
bool InstallStopSignals() {
  // The write end never blocks: a handler must not wait (a full pipe drops the byte).
  if (pipe2(stop_signal_pipe, O_CLOEXEC) != 0 ||
      fcntl(stop_signal_pipe[1], F_SETFL, O_NONBLOCK) != 0) {
    return false;
  }
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  action.sa_flags = SA_RESTART;
  sigemptyset(&action.sa_mask);
  return sigaction(SIGTERM, &action, nullptr) == 0 && sigaction(SIGINT, &action, nullptr) == 0;
}

// Blocks until a stop signal (or the 0 byte of WakeSignalReader); returns its number, 0 for the
// wake-up.
int AwaitSignal() {
  char byte = 0;
  while (read(stop_signal_pipe[0], &byte, 1) != 1) {
    if (errno != EINTR) return 0;
  }
  return static_cast<unsigned char>(byte);
}

void WakeSignalReader() { OnStopSignal(0); }

// The model, its tokenizer, and a backend with every state slot, ready to serve.
struct Loaded {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
  SlotPlan slots;
  int window = 0;  // w, the FIFO entries per layer
  std::unique_ptr<Backend> backend;
};

absl::StatusOr<Loaded> Load(const ServerConfig& config) {
  const absl::Time start = absl::Now();
  Loaded loaded;
  absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(config.model_path);
  if (!model.ok()) {
    return absl::Status(model.status().code(), absl::StrCat("--model ", config.model_path, ": ",
                                                            model.status().message()));
  }
  loaded.model = *std::move(model);
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromJson(loaded.model->tokenizer_json());
  if (!tokenizer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model ", config.model_path, ": tokenizer: ", tokenizer.status().message()));
  }
  loaded.tokenizer = std::make_unique<Tokenizer>(*std::move(tokenizer));
  // The slots are sized from the model alone, before any backend exists.
  absl::StatusOr<SlotLayout> layout =
      MakeSlotLayout(loaded.model->config(), CommonOptions(config, 1));
  absl::StatusOr<size_t> state_bytes = StateBytesPerSequence(*loaded.model, config);
  if (!state_bytes.ok() || !layout.ok()) {
    const absl::Status& error = layout.ok() ? state_bytes.status() : layout.status();
    return absl::Status(error.code(), absl::StrCat("backend: ", error.message()));
  }
  loaded.window = layout->fifo_capacity;
  ASSIGN_OR_RETURN(loaded.slots, PlanSlots(config, *state_bytes));
  const int total_slots = loaded.slots.request_slots + loaded.slots.cache_slots;
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      MakeBackend(*loaded.model, config, total_slots);
  if (!backend.ok()) {
    return absl::Status(
        backend.status().code(),
        absl::StrCat("backend with ", total_slots, " state slots: ", backend.status().message()));
  }
  loaded.backend = *std::move(backend);
  fprintf(stderr,
          "seqboat-server: loaded %s (%lld parameters, %s backend, %s matrices, %s FIFO) in %.2f "
          "s; %d request slots and %d prefix-cache slots of %.2f MB\n",
          config.model_path.c_str(), static_cast<long long>(loaded.model->parameter_count()),
          loaded.backend->name(), loaded.backend->weight_dtype(), loaded.backend->fifo_dtype(),
          absl::ToDoubleSeconds(absl::Now() - start), loaded.slots.request_slots,
          loaded.slots.cache_slots, loaded.slots.state_bytes / 1e6);
  return loaded;
}

// Until `stop` is notified: health follows the engine's heartbeat and the backend's
// usability, the queue gauges follow the engine, and every `heap_trim_interval` (unless zero)
// the free pages malloc holds go back to the OS. Under a steady load malloc's free lists grow
// across its per-thread arenas (in the soak: about 10 MB in use throughout, free 3 -> 8 MB,
// RSS rising with it); trimming keeps resident memory near what is in use.
std::thread WatchHealth(const Engine& engine, absl::Duration heartbeat_timeout,
                        absl::Duration heap_trim_interval, std::function<void(bool)> set_serving,
                        Metrics* metrics, absl::Notification* stop) {
  return std::thread([&engine, heartbeat_timeout, heap_trim_interval, set_serving, metrics, stop] {
    bool serving = true;
    absl::Time last_trim = absl::Now();
    while (!stop->WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
      if (heap_trim_interval > absl::ZeroDuration() &&
          absl::Now() - last_trim >= heap_trim_interval) {
        malloc_trim(0);
        last_trim = absl::Now();
      }
      const bool fresh = absl::Now() - engine.last_heartbeat() < heartbeat_timeout;
      const bool usable = engine.backend_status().ok();
      if ((fresh && usable) != serving) {
        serving = fresh && usable;
        set_serving(serving);
        fprintf(stderr, "seqboat-server: %s\n",
                serving
                    ? "engine responsive again: SERVING"
                    : (usable ? "engine silent: NOT_SERVING" : "backend unusable: NOT_SERVING"));
      }
      metrics->SetQueue(engine.running(), engine.waiting());
    }
  });
}

// The chat template: --chat_template's file, else the model file's own ("chat_template" in its
// metadata), else the default.
absl::StatusOr<ChatTemplate> ResolveChatTemplate(const ServerConfig& config, const Model& model) {
  if (!config.chat_template_json.empty()) {
    return ChatTemplate::FromJson(config.chat_template_json, "--chat_template");
  }
  const std::map<std::string, std::string>& metadata = model.file().metadata();
  const auto it = metadata.find("chat_template");
  if (it != metadata.end()) {
    return ChatTemplate::FromJson(
        it->second, absl::StrCat("--model ", config.model_path, ": metadata chat_template"));
  }
  return ChatTemplate();
}

HttpApiOptions MakeHttpOptions(const ServerConfig& config, const ServiceLimits& limits,
                               const seqboat::v1::ModelInfo& model_info,
                               ChatTemplate chat_template) {
  HttpApiOptions options;
  google::protobuf::util::JsonPrintOptions json;
  json.preserve_proto_field_names = true;
  json.always_print_primitive_fields = true;
  std::string info_json;  // MessageToJsonString appends
  if (google::protobuf::util::MessageToJsonString(model_info, &info_json, json).ok()) {
    options.model_info_json = std::move(info_json);
  }
  options.listen = config.http_listen;
  options.api_keys = config.api_keys;
  options.tls_cert_pem = config.tls_cert_pem;
  options.tls_key_pem = config.tls_key_pem;
  options.served_model_name = config.served_model_name;
  options.chat_template = std::move(chat_template);
  options.rules = limits.rules;
  options.threads = config.http_threads;
  options.max_connections = config.http_max_connections;
  options.playground = config.playground;
  options.idle_timeout = config.stream_write_timeout;
  options.max_body_bytes = config.max_request_bytes;
  options.stream_buffer_bytes = config.stream_buffer_bytes;
  return options;
}

// Runs until SIGTERM/SIGINT; returns the process exit code.
int Serve(const ServerConfig& config) {
  absl::StatusOr<Loaded> loaded = Load(config);
  if (!loaded.ok()) return StartupError(loaded.status());
  const Model& model = *loaded->model;
  const SlotPlan& slots = loaded->slots;
  Metrics metrics(model.config().layers);
  metrics.SetStateMemory(
      slots.request_slots, static_cast<int64_t>(slots.state_bytes),
      static_cast<int64_t>(slots.state_bytes) * (slots.request_slots + slots.cache_slots),
      config.state_memory_bytes);
  metrics.SetBackend(loaded->backend->name(), loaded->backend->weight_dtype(),
                     loaded->backend->fifo_dtype());
  ProcessMetrics process_metrics(*metrics.registry());
  std::unique_ptr<MetricsHttpServer> metrics_server;
  if (!config.metrics_listen.empty()) {
    MetricsHttpOptions metrics_options;
    metrics_options.api_keys = config.metrics_api_keys;
    metrics_options.before_scrape = [&process_metrics] { process_metrics.Update(); };
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> started = MetricsHttpServer::Start(
        config.metrics_listen, metrics.registry(), std::move(metrics_options));
    if (!started.ok())
      return StartupError(absl::InvalidArgumentError(
          absl::StrCat("--metrics_listen: ", started.status().message())));
    metrics_server = *std::move(started);
  }

  const EngineOptions engine_options = MakeEngineOptions(config, slots);
  absl::StatusOr<std::unique_ptr<Engine>> engine =
      Engine::Create(loaded->backend.get(), model.config(), engine_options, &metrics);
  if (!engine.ok())
    return StartupError(absl::InternalError(absl::StrCat("engine: ", engine.status().message())));
  absl::StatusOr<ChatTemplate> chat_template = ResolveChatTemplate(config, model);
  if (!chat_template.ok()) {
    (*engine)->Shutdown(absl::ZeroDuration());
    return StartupError(chat_template.status());
  }
  const ServiceLimits limits = MakeServiceLimits(config, engine_options);
  // Every front-end's open streams, in choices: the engine's slots and queue.
  StreamCapacity capacity(int64_t{engine_options.max_running} + engine_options.max_waiting,
                          &metrics);
  const seqboat::v1::ModelInfo model_info =
      DescribeModel(config, model, *loaded->tokenizer, *loaded->backend, slots, loaded->window,
                    engine_options, limits);
  SeqBoatService service(engine->get(), loaded->tokenizer.get(), model.config(), model_info, limits,
                         config.api_keys, &capacity, &metrics);
  int port = 0;
  std::unique_ptr<grpc::Server> server = StartGrpc(config, &service, &port);
  if (server == nullptr || port == 0) {
    (*engine)->Shutdown(absl::ZeroDuration());
    return StartupError(absl::InvalidArgumentError(absl::StrCat(
        "--listen ", config.listen, ": cannot listen there (expected a free HOST:PORT)")));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  std::atomic<bool> serving_now{true};
  auto set_serving = [&](bool serving) {
    health->SetServingStatus(serving);
    health->SetServingStatus(kServiceName, serving);
    metrics.SetServing(serving);
    serving_now = serving;
  };
  set_serving(true);
  std::unique_ptr<HttpApi> http;
  if (!config.http_listen.empty()) {
    absl::StatusOr<std::unique_ptr<HttpApi>> started =
        HttpApi::Start(MakeHttpOptions(config, limits, model_info, *std::move(chat_template)),
                       engine->get(), loaded->tokenizer.get(), model.config(), &capacity, &metrics,
                       [&] { return serving_now.load(); });
    if (!started.ok()) {
      server->Shutdown();
      (*engine)->Shutdown(absl::ZeroDuration());
      return StartupError(
          absl::InvalidArgumentError(absl::StrCat("--http_listen: ", started.status().message())));
    }
    http = *std::move(started);
  }
  printf("seqboat-server: listening on %s:%d\n", Host(config.listen).c_str(), port);
  if (http != nullptr) {
    printf("seqboat-server: HTTP API on %s://%s:%d/v1\n",
           config.tls_cert_pem.empty() ? "http" : "https", Host(config.http_listen).c_str(),
           http->port());
    if (config.playground) {
      printf("seqboat-server: playground on %s://%s:%d/\n",
             config.tls_cert_pem.empty() ? "http" : "https", Host(config.http_listen).c_str(),
             http->port());
    }
  }
  if (metrics_server != nullptr) {
    printf("seqboat-server: metrics on http://%s:%d/metrics\n", Host(config.metrics_listen).c_str(),
           metrics_server->port());
  }
  printf("seqboat-server: ready\n");
  fflush(stdout);

  absl::Notification draining;
  std::thread watchdog = WatchHealth(**engine, config.heartbeat_timeout, config.heap_trim_interval,
                                     set_serving, &metrics, &draining);

  const int first_signal = AwaitSignal();
  fprintf(stderr, "seqboat-server: %s: draining (NOT_SERVING for %.1f s first, grace %.1f s)\n",
          strsignal(first_signal), absl::ToDoubleSeconds(config.drain_delay),
          absl::ToDoubleSeconds(config.shutdown_grace));
  // The last messages of a drain cut short get this long to be read; gRPC cancels the streams
  // of clients that do not read them.
  constexpr absl::Duration kFinalMessageTime = absl::Milliseconds(500);
  // A second signal (Ctrl-C twice, a supervisor that forwards it again) ends the drain now:
  // what still runs ends CANCELLED, each stream with its final message, and the process exits.
  absl::Notification hurried;
  std::thread second_signal([&] {
    const int again = AwaitSignal();
    if (again == 0) return;  // the drain ended by itself
    fprintf(stderr, "seqboat-server: %s again: ending the remaining requests now\n",
            strsignal(again));
    service.ShortenWriteTimeout(kFinalMessageTime);
    hurried.Notify();
    (*engine)->EndDrain();
  });
  draining.Notify();
  watchdog.join();
  // Readiness turns first, while calls are still taken for --drain_delay_s: the time a
  // Kubernetes readiness probe, a health-checking client or a balancer takes to send no more.
  set_serving(false);
  hurried.WaitForNotificationWithTimeout(config.drain_delay);
  service.StopAccepting();
  if (http != nullptr) http->StopAccepting();
  // The gRPC server stops listening and sends GOAWAY now, so that new calls go elsewhere (a
  // proxy's next connection is refused and tries another replica; a client retries on its
  // other addresses). It waits for the open streams: the engine ends what still runs when the
  // grace period is over (reason CANCELLED), and each stream then gets kFinalMessageTime for
  // its last message.
  const absl::Time streams_deadline = absl::Now() + config.shutdown_grace + kFinalMessageTime;
  absl::Notification grpc_done;
  std::thread grpc_shutdown([&] {
    server->Shutdown(absl::ToChronoTime(streams_deadline));
    grpc_done.Notify();
  });
  (*engine)->Shutdown(config.shutdown_grace);
  if (http != nullptr) {
    http->WaitIdle(hurried.HasBeenNotified() ? absl::Now() + kFinalMessageTime : streams_deadline);
    http.reset();  // ends what is left: requests cancelled, connections closed
  }
  // gRPC's shutdown also waits for calls that never end by themselves: a balancing client's
  // health watch stays open as long as its connection does. Once no Generate stream is open,
  // the last statuses get kFinalMessageTime, and what is still open then is not waited for.
  while (!grpc_done.WaitForNotificationWithTimeout(absl::Milliseconds(20)) &&
         service.open_streams() > 0 && absl::Now() < streams_deadline) {
  }
  metrics.SetQueue(0, 0);
  if (!grpc_done.WaitForNotificationWithTimeout(kFinalMessageTime)) {
    fprintf(stderr,
            "seqboat-server: stopped (calls other than Generate, such as health watches, "
            "cut)\n");
    fflush(stderr);
    fflush(stdout);
    std::_Exit(0);  // the gRPC server cannot be destroyed while its shutdown waits
  }
  grpc_shutdown.join();
  WakeSignalReader();
  second_signal.join();
  fprintf(stderr, "seqboat-server: stopped\n");
  return 0;
}

}  // namespace
}  // namespace seqboat::server

int main(int argc, char** argv) {
  // A crash (SIGSEGV, SIGABRT, ...) prints a symbolized stack trace to stderr before the
  // process dies, so that a failure in production or CI names where it happened. SIGTERM and
  // SIGINT are not crashes: their own handler replaces absl's for them (a drain, and a second
  // one ends it).
  absl::InitializeSymbolizer(argv[0]);
  absl::InstallFailureSignalHandler(absl::FailureSignalHandlerOptions());
  if (!seqboat::server::InstallStopSignals()) {
    perror("seqboat-server: cannot install the SIGTERM/SIGINT handler");
    return 1;
  }

  absl::SetProgramUsageMessage(
      "Serves a SeqBoat model over gRPC (seqboat.v1.SeqBoat) with Prometheus metrics.\n"
      "  seqboat-server --model model.safetensors [--listen 127.0.0.1:50051] [--device cpu|cuda] "
      "...");
  // absl ends the process with code 1 on a bad flag; this server promises 2.
  bool help = false;
  for (int i = 1; i < argc; ++i) help |= absl::string_view(argv[i]).substr(0, 6) == "--help";
  static bool parsing = true;
  if (!help)
    std::atexit([] {
      if (parsing) _exit(2);
    });
  std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  parsing = false;
  if (rest.size() > 1) {
    fprintf(stderr, "seqboat-server: unexpected argument '%s'; every option is a --flag\n",
            rest[1]);
    return 2;
  }
  absl::StatusOr<seqboat::server::ServerConfig> config = seqboat::server::ServerConfigFromFlags();
  if (!config.ok()) return seqboat::server::StartupError(config.status());
  return seqboat::server::Serve(*config);
}
