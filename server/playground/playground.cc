// FindPlaygroundFile over the table embed.cmake generates.
#include "server/playground/playground.h"

namespace seqboat::server {

extern const PlaygroundFile kPlaygroundFiles[];
extern const size_t kPlaygroundFileCount;

const PlaygroundFile* FindPlaygroundFile(std::string_view path) {
  for (size_t i = 0; i < kPlaygroundFileCount; ++i) {
    if (kPlaygroundFiles[i].path == path) return &kPlaygroundFiles[i];
  }
  return nullptr;
}

}  // namespace seqboat::server
