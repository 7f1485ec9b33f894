// libFuzzer target: the model-file reader (SafetensorsFile::Open and Model::Load) on
// arbitrary bytes, handed over as an in-memory file.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "runtime/model/model.h"
#include "runtime/model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One memfd for the whole run, rewritten for each input: no disk traffic.
  static const int fd = ::memfd_create("model_file_fuzzer", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (fd < 0) std::abort();
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    std::abort();
  }
  auto file = seqboat::SafetensorsFile::Open(path);
  if (file.ok()) {
    volatile size_t sink = 0;
    for (const auto& tensor : (*file)->tensors()) {
      if (tensor.nbytes > 0) sink = sink + tensor.data[0] + tensor.data[tensor.nbytes - 1];
    }
    (void)sink;
  }
  auto model = seqboat::Model::Load(path);
  if (model.ok()) {
    volatile float sink = (*model)->weights().embed[0];
    (void)sink;
  }
  return 0;
}
