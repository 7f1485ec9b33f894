// The Prometheus scrape endpoint: GET/HEAD /metrics in the text format, served by
// libmicrohttpd from one event-driven thread, so that idle or trickling connections hold a
// connection slot (bounded overall and per client address) rather than a worker thread.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

struct MHD_Daemon;
namespace prometheus {
class Registry;
}

namespace seqboat::server {

struct MetricsHttpOptions {
  // When not empty, a scrape needs `Authorization: Bearer KEY` with one of these keys.
  std::vector<std::string> api_keys;
  int max_connections = 256;             // open connections overall
  int max_connections_per_address = 16;  // from one client IP address
  int idle_timeout_s = 10;  // a connection that sends or reads nothing this long is closed
  // Runs before each scrape is serialized (on the endpoint's thread): refreshes what is read
  // on demand, such as the process_* series.
  std::function<void()> before_scrape;
};

class MetricsHttpServer {
 public:
  // Listens on `listen` (HOST:PORT; port 0 picks a free port) and serves `registry`.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
      MetricsHttpOptions options);
  ~MetricsHttpServer();  // stops serving; returns when the thread has ended
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  int port() const { return port_; }

  struct Context;  // what the request handler reads

 private:
  MetricsHttpServer() = default;

  std::unique_ptr<Context> context_;
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
};

}  // namespace seqboat::server
