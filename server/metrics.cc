// Prometheus metrics: the families, and the engine observer that feeds them.
#include "server/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstdio>

#include "absl/status/status.h"
#include "runtime/engine/request.h"

namespace seqboat::server {
namespace {

using prometheus::Histogram;

// Latency buckets in seconds, from 100 us (a decode step on a GPU) to 2 minutes.
Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
          0.25,   0.5,     1,      2.5,   5,      10,    30,   60,    120};
}

Histogram::BucketBoundaries BatchBuckets() { return {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}; }

constexpr FinishReason kReasons[] = {
    FinishReason::kLength,    FinishReason::kStop,     FinishReason::kStopToken, FinishReason::kEos,
    FinishReason::kCancelled, FinishReason::kDeadline, FinishReason::kError};

// Status codes a Generate call can end with; created up front so every series exists.
constexpr absl::StatusCode kCodes[] = {absl::StatusCode::kOk,
                                       absl::StatusCode::kInvalidArgument,
                                       absl::StatusCode::kUnauthenticated,
                                       absl::StatusCode::kResourceExhausted,
                                       absl::StatusCode::kUnavailable,
                                       absl::StatusCode::kCancelled,
                                       absl::StatusCode::kDeadlineExceeded,
                                       absl::StatusCode::kInternal};

}  // namespace

Metrics::Metrics(int layers) : registry_(std::make_shared<prometheus::Registry>()) {
  auto& registry = *registry_;
  auto& requests = prometheus::BuildCounter()
                       .Name("seqboat_requests_total")
                       .Help(
                           "Generation requests finished, by front-end (api) and final status "
                           "(code, as gRPC names it)")
                       .Register(registry);
  requests_family_ = &requests;
  for (const char* api : {"grpc", "http"}) {
    for (absl::StatusCode code : kCodes)
      requests.Add({{"api", api}, {"code", absl::StatusCodeToString(code)}});
  }
  http_responses_family_ = &prometheus::BuildCounter()
                                .Name("seqboat_http_responses_total")
                                .Help("HTTP API responses, by status")
                                .Register(registry);
  for (const char* status : {"200", "400", "401", "404", "429", "500", "503"}) {
    http_responses_family_->Add({{"status", status}});
  }
  auto& finished = prometheus::BuildCounter()
                       .Name("seqboat_requests_finished_total")
                       .Help("Requests the engine finished, by finish reason")
                       .Register(registry);
  for (FinishReason reason : kReasons) {
    finished_by_reason_.emplace_back(FinishReasonName(reason),
                                     &finished.Add({{"reason", FinishReasonName(reason)}}));
  }
  auto histogram = [&](const char* name, const char* help,
                       const Histogram::BucketBoundaries& buckets) {
    return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add({}, buckets);
  };
  ttft_ = histogram("seqboat_time_to_first_token_seconds", "Submission to first generated token",
                    LatencyBuckets());
  itl_ = histogram("seqboat_inter_token_latency_seconds",
                   "Time between consecutive tokens of a request", LatencyBuckets());
  duration_ =
      histogram("seqboat_request_duration_seconds", "Submission to finish", LatencyBuckets());
  queue_time_ = histogram("seqboat_queue_time_seconds", "Submission to admission into a state slot",
                          LatencyBuckets());
  batch_size_ = histogram("seqboat_batch_size", "Sequences per engine iteration", BatchBuckets());
  step_time_ = histogram("seqboat_engine_step_seconds", "Backend forward time per engine iteration",
                         LatencyBuckets());
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
  };
  prompt_tokens_ = counter("seqboat_prompt_tokens_total", "Prompt tokens of finished requests");
  generated_tokens_ = counter("seqboat_generated_tokens_total", "Generated tokens");
  iterations_ = counter("seqboat_engine_iterations_total", "Engine iterations that ran the model");
  model_tokens_ =
      counter("seqboat_model_tokens_total", "Tokens through the model (prompt and generated)");
  cache_hits_ =
      counter("seqboat_prefix_cache_hits_total", "Requests that reused a cached prefix state");
  cache_misses_ =
      counter("seqboat_prefix_cache_misses_total", "Requests that found no cached prefix state");
  cache_hit_tokens_ = counter("seqboat_prefix_cache_hit_tokens_total",
                              "Prompt tokens skipped thanks to the prefix cache");
  cache_full_hits_ = counter("seqboat_prefix_cache_full_hits_total",
                             "Hits on a request's whole prompt: its first token sampled from kept "
                             "logits, no forward pass");
  cache_evictions_ = counter("seqboat_prefix_cache_evictions_total",
                             "Prefix-state snapshots that gave their slot up (to a request or a "
                             "snapshot worth more)");
  backend_errors_ = counter("seqboat_backend_errors_total",
                            "Backend forward calls that failed (their requests end with INTERNAL)");
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
  };
  running_ = gauge("seqboat_requests_running", "Requests holding a state slot");
  waiting_ = gauge("seqboat_requests_waiting", "Requests queued for a state slot");
  streams_open_ = gauge("seqboat_streams_open",
                        "Generate streams open: running, waiting, or finished with messages their "
                        "client has not read");
  serving_ = gauge("seqboat_engine_serving", "1 while the health service reports SERVING");
  backend_usable_ =
      gauge("seqboat_backend_usable",
            "1 until a failed forward call leaves the backend unusable (restart the server)");
  backend_usable_->Set(1);
  slots_ = gauge("seqboat_state_slots", "State slots for requests");
  slots_in_use_ = gauge("seqboat_state_slots_in_use", "State slots held by requests");
  state_bytes_ =
      gauge("seqboat_state_bytes", "Bytes of state allocated (request slots and prefix cache)");
  state_bytes_per_sequence_ =
      gauge("seqboat_state_bytes_per_sequence", "Bytes of one sequence's state");
  state_budget_ = gauge("seqboat_state_memory_budget_bytes",
                        "Bytes the state may take (--state_memory_mb); 0 = no limit");
  cache_entries_ = gauge("seqboat_prefix_cache_entries", "Prefix-state snapshots held");
  cache_bytes_ = gauge("seqboat_prefix_cache_bytes", "Bytes the prefix-state snapshots hold");
  auto& activated = prometheus::BuildCounter()
                        .Name("seqboat_gau_activated_tokens_total")
                        .Help("Tokens whose Gated Attention Unit ran, per layer")
                        .Register(registry);
  auto& ratio =
      prometheus::BuildGauge()
          .Name("seqboat_gau_activation_ratio")
          .Help("Fraction of tokens whose Gated Attention Unit ran since start, per layer")
          .Register(registry);
  for (int l = 0; l < layers; ++l) {
    activated_.push_back(&activated.Add({{"layer", std::to_string(l)}}));
    activation_ratio_.push_back(&ratio.Add({{"layer", std::to_string(l)}}));
  }
}

Metrics::~Metrics() = default;

void Metrics::OnIteration(const IterationStats& stats) {
  iterations_->Increment();
  batch_size_->Observe(static_cast<double>(stats.sequences));
  step_time_->Observe(absl::ToDoubleSeconds(stats.step_time));
  generated_tokens_->Increment(static_cast<double>(stats.generated_tokens));
  model_tokens_->Increment(static_cast<double>(stats.tokens));
  const double total = model_tokens_->Value();
  for (size_t l = 0; l < activated_.size() && l < stats.activated_tokens.size(); ++l) {
    activated_[l]->Increment(static_cast<double>(stats.activated_tokens[l]));
    if (total > 0) activation_ratio_[l]->Set(activated_[l]->Value() / total);
  }
  cache_hits_->Increment(static_cast<double>(stats.prefix_cache_hits));
  cache_misses_->Increment(static_cast<double>(stats.prefix_cache_misses));
  cache_hit_tokens_->Increment(static_cast<double>(stats.prefix_cache_hit_tokens));
  cache_full_hits_->Increment(static_cast<double>(stats.prefix_cache_full_hits));
  cache_evictions_->Increment(static_cast<double>(stats.prefix_cache_evictions));
  cache_entries_->Set(static_cast<double>(stats.prefix_cache_entries));
  cache_bytes_->Set(static_cast<double>(stats.prefix_cache_bytes));
  SetQueue(stats.running, stats.waiting);
}

void Metrics::OnFinish(const FinishInfo& info) {
  for (auto& [name, counter] : finished_by_reason_) {
    if (name == FinishReasonName(info.reason)) counter->Increment();
  }
  prompt_tokens_->Increment(static_cast<double>(info.prompt_tokens));
  if (info.generated_tokens > 0) ttft_->Observe(absl::ToDoubleSeconds(info.time_to_first_token));
  duration_->Observe(absl::ToDoubleSeconds(info.total_time));
  queue_time_->Observe(absl::ToDoubleSeconds(info.queue_time));
}

void Metrics::OnBackendError(const absl::Status& status, int64_t sequences) {
  backend_errors_->Increment();
  fprintf(stderr, "seqboat-server: %s: backend error, %lld requests end with INTERNAL: %s\n",
          absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
          static_cast<long long>(sequences), std::string(status.message()).c_str());
}

void Metrics::OnBackendLost(const absl::Status& health, int64_t sequences) {
  backend_usable_->Set(0);
  fprintf(stderr,
          "seqboat-server: %s: the backend is unusable (%s); %lld more requests end with INTERNAL, "
          "new ones get "
          "UNAVAILABLE and health turns NOT_SERVING: restart the server\n",
          absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()).c_str(),
          std::string(health.message()).c_str(), static_cast<long long>(sequences));
}

void Metrics::OnTokenEmitted(absl::Duration since_previous_token) {
  itl_->Observe(absl::ToDoubleSeconds(since_previous_token));
}

prometheus::Counter& Metrics::RequestCounter(const std::string& code, const std::string& api) {
  return requests_family_->Add({{"api", api}, {"code", code}});
}

void Metrics::RecordRequest(const std::string& code, const std::string& api) {
  RequestCounter(code, api).Increment();
}

void Metrics::RecordHttpResponse(int status) {
  http_responses_family_->Add({{"status", std::to_string(status)}}).Increment();
}

void Metrics::SetServing(bool serving) { serving_->Set(serving ? 1 : 0); }

void Metrics::SetQueue(int64_t running, int64_t waiting) {
  running_->Set(static_cast<double>(running));
  waiting_->Set(static_cast<double>(waiting));
  slots_in_use_->Set(static_cast<double>(running));
}

void Metrics::SetOpenStreams(int64_t streams) { streams_open_->Set(static_cast<double>(streams)); }

void Metrics::SetStateMemory(int slots, int64_t bytes_per_sequence, int64_t bytes_allocated,
                             int64_t budget_bytes) {
  slots_->Set(slots);
  state_bytes_per_sequence_->Set(static_cast<double>(bytes_per_sequence));
  state_bytes_->Set(static_cast<double>(bytes_allocated));
  state_budget_->Set(static_cast<double>(budget_bytes));
}

void Metrics::SetBackend(const std::string& backend, const std::string& weight_dtype,
                         const std::string& fifo_dtype) {
  prometheus::BuildGauge()
      .Name("seqboat_backend_info")
      .Help(
          "1, labelled with the backend and the dtypes it computes with (weight matrices, FIFO "
          "keys and values)")
      .Register(*registry_)
      .Add({{"backend", backend}, {"weight_dtype", weight_dtype}, {"fifo_dtype", fifo_dtype}})
      .Set(1);
}

}  // namespace seqboat::server
