// API keys: the file format of --api_keys_file and the `Authorization: Bearer KEY` check
// that every front-end (gRPC, the metrics endpoint) applies the same way.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/optional.h"

namespace seqboat::server {

// One key per line; '#' starts a comment; blank lines are skipped. `flag` names the flag in
// errors. A file without a key is an error.
absl::StatusOr<std::vector<std::string>> ReadApiKeysFile(const std::string& path,
                                                         absl::string_view flag);

// OK when `keys` is empty or `authorization` (the header's value; nullopt when absent) is
// `Bearer KEY` with a known key; otherwise Unauthenticated saying what is wrong. Keys are
// compared in constant time.
absl::Status CheckBearer(const std::vector<std::string>& keys,
                         absl::optional<absl::string_view> authorization);

}  // namespace seqboat::server
