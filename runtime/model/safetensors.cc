// Safetensors: mmap + strict header validation; and the matching writer.
#include "runtime/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace seqboat {
namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the standard's own cap

absl::Status FileError(const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

int64_t TensorView::NumElements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ < 8) {
    ::close(fd);
    return FileError(
        path, absl::StrCat("file is ", file->size_,
                           " bytes; a safetensors file starts with an 8-byte header length"));
  }
  void* mapping = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping == MAP_FAILED)
    return FileError(path, absl::StrCat("mmap failed: ", std::strerror(errno)));
  file->mapping_ = static_cast<const uint8_t*>(mapping);
  RETURN_IF_ERROR(file->Parse());
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(const_cast<uint8_t*>(mapping_), size_);
}

const TensorView* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsFile::Parse() {
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(mapping_[i]) << (8 * i);
  if (header_len > kMaxHeaderBytes || header_len > size_ - 8) {
    return FileError(path_, absl::StrCat("header length ", header_len, " runs past the end of the ",
                                         size_, "-byte file (or over the 100 MB cap)"));
  }
  const char* header_begin = reinterpret_cast<const char*>(mapping_ + 8);
  Json header =
      Json::parse(header_begin, header_begin + header_len, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return FileError(path_, "header is not a JSON object");
  }
  const uint8_t* data_begin = mapping_ + 8 + header_len;
  const uint64_t data_size = size_ - 8 - header_len;

  struct Extent {
    uint64_t begin, end;
    size_t tensor;
  };
  std::vector<Extent> extents;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return FileError(path_, "__metadata__ is not a JSON object");
      for (auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return FileError(path_,
                           absl::StrCat("__metadata__ value of \"", key, "\" is not a string"));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string& tensor_name = name;  // clang cannot capture a structured binding
    auto where = [&](absl::string_view what) {
      return FileError(path_, absl::StrCat("tensor \"", tensor_name, "\": ", what));
    };
    if (!entry.is_object()) return where("entry is not a JSON object");
    auto dtype_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto offsets_it = entry.find("data_offsets");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return where("missing string \"dtype\"");
    if (shape_it == entry.end() || !shape_it->is_array()) return where("missing array \"shape\"");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
      return where("\"data_offsets\" must be an array of two integers");
    }
    TensorView view;
    view.name = name;
    auto dtype = ParseDType(dtype_it->get<std::string>());
    if (!dtype.ok()) return where(dtype.status().message());
    view.dtype = *dtype;
    uint64_t numel = 1;
    for (const Json& dim : *shape_it) {
      if (!dim.is_number_unsigned()) return where("shape entries must be non-negative integers");
      uint64_t d = dim.get<uint64_t>();
      if (d != 0 && numel > (std::numeric_limits<uint64_t>::max() >> 2) / d) {
        return where("shape overflows");
      }
      numel *= d;
      view.shape.push_back(static_cast<int64_t>(d));
    }
    const Json& begin_json = (*offsets_it)[0];
    const Json& end_json = (*offsets_it)[1];
    if (!begin_json.is_number_unsigned() || !end_json.is_number_unsigned()) {
      return where("data_offsets must be non-negative integers");
    }
    uint64_t begin = begin_json.get<uint64_t>(), end = end_json.get<uint64_t>();
    if (begin > end || end > data_size) {
      return where(absl::StrCat("data_offsets [", begin, ", ", end, ") lie outside the ", data_size,
                                "-byte data section"));
    }
    uint64_t expected = numel * DTypeSize(view.dtype);
    if (end - begin != expected) {
      return where(absl::StrCat("data_offsets span ", end - begin, " bytes but ",
                                DTypeName(view.dtype), " ", ShapeString(view.shape), " needs ",
                                expected));
    }
    view.data = data_begin + begin;
    view.nbytes = expected;
    extents.push_back({begin, end, tensors_.size()});
    index_[name] = tensors_.size();
    tensors_.push_back(std::move(view));
  }
  std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const Extent& extent : extents) {
    if (extent.begin < cursor) {
      return FileError(path_, absl::StrCat("tensor \"", tensors_[extent.tensor].name,
                                           "\" overlaps the tensor before it (offset ",
                                           extent.begin, " < ", cursor, ")"));
    }
    if (extent.begin > cursor) {
      return FileError(path_,
                       absl::StrCat("gap of ", extent.begin - cursor, " bytes before tensor \"",
                                    tensors_[extent.tensor].name, "\" at offset ", cursor));
    }
    cursor = extent.end;
  }
  if (cursor != data_size) {
    return FileError(path_,
                     absl::StrCat(data_size - cursor, " trailing bytes after the last tensor"));
  }
  // Keep file order (by offset) for listing.
  std::vector<TensorView> ordered;
  ordered.reserve(tensors_.size());
  index_.clear();
  for (const Extent& extent : extents) {
    index_[tensors_[extent.tensor].name] = ordered.size();
    ordered.push_back(std::move(tensors_[extent.tensor]));
  }
  tensors_ = std::move(ordered);
  return absl::OkStatus();
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, std::string>& metadata,
                              const std::vector<TensorToWrite>& tensors) {
  // nlohmann's ordered_json keeps insertion order, so the header lists tensors in file order.
  nlohmann::ordered_json header;
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const TensorToWrite& tensor : tensors) {
    uint64_t numel = 1;
    for (int64_t dim : tensor.shape) {
      if (dim < 0)
        return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, ": negative dim"));
      numel *= static_cast<uint64_t>(dim);
    }
    if (numel * DTypeSize(tensor.dtype) != tensor.bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", tensor.name, ": ", tensor.bytes.size(), " bytes given, ",
                       DTypeName(tensor.dtype), " ", ShapeString(tensor.shape), " needs ",
                       numel * DTypeSize(tensor.dtype)));
    }
    if (header.contains(tensor.name)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", tensor.name, " given twice"));
    }
    header[tensor.name] = {{"dtype", DTypeName(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.bytes.size()}}};
    offset += tensor.bytes.size();
  }
  std::string header_text = header.dump();
  while (header_text.size() % 8 != 0) header_text.push_back(' ');

  const std::string tmp_path = path + ".tmp";
  FILE* out = std::fopen(tmp_path.c_str(), "wb");
  if (out == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat(tmp_path, ": cannot create: ", std::strerror(errno)));
  }
  uint8_t length_bytes[8];
  uint64_t header_len = header_text.size();
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(header_len >> (8 * i));
  bool ok = std::fwrite(length_bytes, 1, 8, out) == 8 &&
            std::fwrite(header_text.data(), 1, header_text.size(), out) == header_text.size();
  for (const TensorToWrite& tensor : tensors) {
    if (!ok) break;
    ok = std::fwrite(tensor.bytes.data(), 1, tensor.bytes.size(), out) == tensor.bytes.size();
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok || std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    std::remove(tmp_path.c_str());
    return absl::InternalError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace seqboat
