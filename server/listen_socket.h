// A listening TCP socket for the HTTP servers (metrics, the OpenAI API), made here so that a
// bind error names its cause and port 0 reports the port it got.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace seqboat::server {

// Listens on HOST:PORT (an IPv6 host in brackets; port 0 picks a free port) and sets *port to
// the bound port; the file descriptor (close-on-exec), or an error naming the cause.
absl::StatusOr<int> ListenTcp(const std::string& address, int* port);

}  // namespace seqboat::server
