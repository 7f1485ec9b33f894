// libcurl's easy interface, one handle per request (the load generator has a thread per stream).
#include "client/http_stream.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace seqboat::cli {

void SseParser::Feed(absl::string_view bytes) {
  pending_.append(bytes.data(), bytes.size());
  size_t start = 0;
  for (size_t end; (end = pending_.find('\n', start)) != std::string::npos; start = end + 1) {
    absl::string_view line(pending_.data() + start, end - start);
    absl::ConsumeSuffix(&line, "\r");
    if (absl::ConsumePrefix(&line, "data:")) {
      absl::ConsumePrefix(&line, " ");
      on_data_(line);
    }
  }
  pending_.erase(0, start);
}

namespace {

struct Transfer {
  SseParser parser;
  std::string error_body;
  long status = 0;
  CURL* curl = nullptr;
};

size_t OnBytes(char* data, size_t size, size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const size_t bytes = size * count;
  if (transfer.status == 0)
    curl_easy_getinfo(transfer.curl, CURLINFO_RESPONSE_CODE, &transfer.status);
  if (transfer.status == 200) {
    transfer.parser.Feed(absl::string_view(data, bytes));
  } else if (transfer.error_body.size() < 64 << 10) {
    transfer.error_body.append(data, bytes);
  }
  return bytes;
}

}  // namespace

absl::StatusOr<int> PostStreaming(const HttpTarget& target, const std::string& json_body,
                                  const std::function<void(absl::string_view)>& on_data,
                                  std::string* error_body) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(nullptr, curl_slist_free_all);
  auto add_header = [&](const std::string& header) {
    headers.reset(curl_slist_append(headers.release(), header.c_str()));
  };
  add_header("Content-Type: application/json");
  add_header("Accept: text/event-stream");
  if (!target.api_key.empty()) add_header("Authorization: Bearer " + target.api_key);
  Transfer transfer{SseParser(on_data), "", 0, curl.get()};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, target.url.c_str());
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, json_body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(json_body.size()));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnBytes);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &transfer);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  if (!target.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, target.ca_file.c_str());
  if (target.timeout_s > 0)
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(target.timeout_s * 1e3));
  const CURLcode code = curl_easy_perform(c);
  if (code != CURLE_OK)
    return absl::UnavailableError(absl::StrCat(target.url, ": ", curl_easy_strerror(code)));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &transfer.status);
  if (error_body != nullptr) *error_body = std::move(transfer.error_body);
  return static_cast<int>(transfer.status);
}

}  // namespace seqboat::cli
