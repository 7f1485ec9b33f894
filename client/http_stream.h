// A streaming HTTP POST for seqboat-cli's load generator (libcurl): the body goes out, and each
// server-sent event's `data:` payload comes back to a callback as it arrives.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace seqboat::cli {

struct HttpTarget {
  std::string url;       // http(s)://HOST:PORT/v1/completions
  std::string api_key;   // sent as "Authorization: Bearer KEY" when not empty
  std::string ca_file;   // https: the PEM root certificate to trust
  double timeout_s = 0;  // 0: none
};

// Splits a byte stream into SSE events; `on_data` gets each `data:` payload.
class SseParser {
 public:
  explicit SseParser(std::function<void(absl::string_view)> on_data)
      : on_data_(std::move(on_data)) {}
  void Feed(absl::string_view bytes);

 private:
  std::function<void(absl::string_view)> on_data_;
  std::string pending_;  // a line not yet ended
};

// POSTs `json_body`; `on_data` gets each event while the stream lasts. The HTTP status (200, 429,
// ...) or an error naming what failed (connection, timeout). A non-200 response's body goes to
// `error_body`.
absl::StatusOr<int> PostStreaming(const HttpTarget& target, const std::string& json_body,
                                  const std::function<void(absl::string_view)>& on_data,
                                  std::string* error_body);

}  // namespace seqboat::cli
