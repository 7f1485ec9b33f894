// API keys: reading the key file and checking a bearer token.
#include "server/api_keys.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace seqboat::server {
namespace {

bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadApiKeysFile(const std::string& path,
                                                         absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> keys;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line.substr(0, line.find('#')));
    if (!line.empty()) keys.emplace_back(line);
  }
  if (keys.empty())
    return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " holds no key"));
  return keys;
}

absl::Status CheckBearer(const std::vector<std::string>& keys,
                         absl::optional<absl::string_view> authorization) {
  if (keys.empty()) return absl::OkStatus();
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError("missing `authorization: Bearer <api key>`");
  }
  constexpr absl::string_view kBearer = "Bearer ";
  if (authorization->substr(0, kBearer.size()) != kBearer) {
    return absl::UnauthenticatedError("`authorization` must be `Bearer <api key>`");
  }
  const absl::string_view key = authorization->substr(kBearer.size());
  bool known = false;
  for (const std::string& candidate : keys) known |= ConstantTimeEquals(key, candidate);
  if (!known) return absl::UnauthenticatedError("unknown api key");
  return absl::OkStatus();
}

}  // namespace seqboat::server
