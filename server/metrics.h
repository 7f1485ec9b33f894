// The server's Prometheus metrics (names in server/README.md), fed by the engine through
// EngineObserver and by the gRPC service. Every method is thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "runtime/engine/engine.h"

namespace prometheus {
class Counter;
template <typename T>
class Family;
class Gauge;
class Histogram;
class Registry;
}  // namespace prometheus

namespace seqboat::server {

class Metrics final : public EngineObserver {
 public:
  explicit Metrics(int layers);
  ~Metrics() override;

  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // EngineObserver (engine thread).
  void OnIteration(const IterationStats& stats) override;
  void OnFinish(const FinishInfo& info) override;
  void OnTokenEmitted(absl::Duration since_previous_token) override;
  // Counts the failure and logs it (one line on stderr with the backend's reason).
  void OnBackendError(const absl::Status& status, int64_t sequences) override;
  // Sets seqboat_backend_usable to 0 and logs the reason (the watchdog turns health NOT_SERVING).
  void OnBackendLost(const absl::Status& health, int64_t sequences) override;

  // A generation request ended with this gRPC status code name (e.g. "OK") on front-end
  // `api` ("grpc" or "http"; HTTP outcomes are named as gRPC would name them).
  void RecordRequest(const std::string& code, const std::string& api = "grpc");
  // An HTTP API response's status (every request of the HTTP front-end).
  void RecordHttpResponse(int status);
  void SetServing(bool serving);
  void SetQueue(int64_t running, int64_t waiting);
  void SetOpenStreams(int64_t streams);
  // budget_bytes: --state_memory_mb in bytes, 0 = no limit.
  void SetStateMemory(int slots, int64_t bytes_per_sequence, int64_t bytes_allocated,
                      int64_t budget_bytes);
  // seqboat_backend_info{backend, weight_dtype, fifo_dtype} = 1 (set once, at start).
  void SetBackend(const std::string& backend, const std::string& weight_dtype,
                  const std::string& fifo_dtype);

 private:
  prometheus::Counter& RequestCounter(const std::string& code, const std::string& api);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_family_;
  prometheus::Family<prometheus::Counter>* http_responses_family_;
  std::vector<std::pair<std::string, prometheus::Counter*>> finished_by_reason_;
  prometheus::Histogram *ttft_, *itl_, *duration_, *queue_time_, *batch_size_, *step_time_;
  prometheus::Counter *prompt_tokens_, *generated_tokens_, *iterations_, *model_tokens_;
  prometheus::Counter *cache_hits_, *cache_misses_, *cache_hit_tokens_, *cache_full_hits_,
      *cache_evictions_, *backend_errors_;
  prometheus::Gauge *running_, *waiting_, *serving_, *backend_usable_, *slots_, *slots_in_use_,
      *state_bytes_, *state_bytes_per_sequence_, *state_budget_, *cache_entries_, *cache_bytes_,
      *streams_open_;
  std::vector<prometheus::Counter*> activated_;       // [L]
  std::vector<prometheus::Gauge*> activation_ratio_;  // [L]
};

}  // namespace seqboat::server
