// The /metrics endpoint on libmicrohttpd: our own listening socket (so that a bind error
// names its cause), one internal polling thread, connection limits and an idle timeout.
#include "server/metrics_http.h"

#include <microhttpd.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/api_keys.h"
#include "server/listen_socket.h"

namespace seqboat::server {

struct MetricsHttpServer::Context {
  std::shared_ptr<prometheus::Registry> registry;
  std::vector<std::string> api_keys;
  std::function<void()> before_scrape;
};

namespace {

constexpr char kPath[] = "/metrics";
constexpr char kAllowed[] = "GET, HEAD";

MHD_Result Respond(MHD_Connection* connection, unsigned int code, const std::string& body,
                   const char* content_type = "text/plain; charset=utf-8",
                   std::initializer_list<std::pair<const char*, const char*>> headers = {}) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;  // out of memory: MHD closes the connection
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  for (const auto& [name, value] : headers) MHD_add_response_header(response, name, value);
  const MHD_Result queued = MHD_queue_response(connection, code, response);
  MHD_destroy_response(response);
  return queued;
}

// MHD calls this once the headers are in, and again after each piece of a body. GET and HEAD
// are answered on the second call (answering on the first makes MHD close the connection);
// anything else is refused on the first, before a body is read: MHD then closes the
// connection rather than read a body nobody asked for.
MHD_Result HandleRequest(void* cls, MHD_Connection* connection, const char* url, const char* method,
                         const char* /*version*/, const char* /*upload_data*/,
                         size_t* /*upload_data_size*/, void** request_state) {
  const auto& context = *static_cast<const MetricsHttpServer::Context*>(cls);
  const bool get = std::strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                   std::strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  static char headers_seen;
  if (get && *request_state == nullptr) {
    *request_state = &headers_seen;
    return MHD_YES;
  }
  if (std::strcmp(url, kPath) != 0) {
    return Respond(connection, MHD_HTTP_NOT_FOUND, "not found: the only path here is /metrics\n");
  }
  if (!get) {
    return Respond(connection, MHD_HTTP_METHOD_NOT_ALLOWED,
                   absl::StrCat("method ", method, " not allowed on /metrics; use GET or HEAD\n"),
                   "text/plain; charset=utf-8", {{MHD_HTTP_HEADER_ALLOW, kAllowed}});
  }
  const char* authorization =
      MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Authorization");
  const absl::Status auth = CheckBearer(
      context.api_keys,
      authorization == nullptr ? absl::nullopt : absl::optional<absl::string_view>(authorization));
  if (!auth.ok()) {
    return Respond(connection, MHD_HTTP_UNAUTHORIZED, absl::StrCat(auth.message(), "\n"),
                   "text/plain; charset=utf-8", {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer"}});
  }
  // HEAD gets the same headers; MHD leaves the body out.
  if (context.before_scrape) context.before_scrape();
  const std::string text = prometheus::TextSerializer().Serialize(context.registry->Collect());
  return Respond(connection, MHD_HTTP_OK, text, "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, std::shared_ptr<prometheus::Registry> registry,
    MetricsHttpOptions options) {
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer());
  absl::StatusOr<int> fd = ListenTcp(listen, &server->port_);
  if (!fd.ok()) return fd.status();
  server->context_ = std::make_unique<Context>(
      Context{std::move(registry), std::move(options.api_keys), std::move(options.before_scrape)});
  // With a socket of ours MHD opens none; it closes this one when it stops.
  server->daemon_ = MHD_start_daemon(
      MHD_USE_AUTO_INTERNAL_THREAD, 0, nullptr, nullptr, &HandleRequest, server->context_.get(),
      MHD_OPTION_LISTEN_SOCKET, static_cast<MHD_socket>(*fd), MHD_OPTION_CONNECTION_LIMIT,
      static_cast<unsigned int>(options.max_connections), MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      static_cast<unsigned int>(options.max_connections_per_address), MHD_OPTION_CONNECTION_TIMEOUT,
      static_cast<unsigned int>(options.idle_timeout_s), MHD_OPTION_END);
  if (server->daemon_ == nullptr) {
    close(*fd);
    return absl::InternalError(absl::StrCat("cannot start the HTTP server on ", listen));
  }
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace seqboat::server
