// The playground page's files, compiled into seqboat-server: embed.cmake turns index.html,
// playground.css and playground.js into a table at build time, so the page needs nothing
// but the server (no CDN, no files next to the binary).
#pragma once

#include <cstddef>
#include <string_view>

namespace seqboat::server {

struct PlaygroundFile {
  const char* path;  // as requested: "/" is index.html
  const char* content_type;
  std::string_view content;
};

// The file served at `path`, or null.
const PlaygroundFile* FindPlaygroundFile(std::string_view path);

}  // namespace seqboat::server
