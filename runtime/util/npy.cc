// .npy reader/writer: little-endian hosts, C order only.
#include "runtime/util/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace seqboat {
namespace {

size_t DescrSize(const std::string& descr) {
  if (descr == "<f4" || descr == "<i4") return 4;
  if (descr == "<i8" || descr == "<f8") return 8;
  if (descr == "|u1" || descr == "|b1" || descr == "<u1") return 1;
  return 0;
}

// Extracts the value text of `key` in the header dict: 'key': value,
absl::StatusOr<std::string> HeaderField(const std::string& header, const std::string& key,
                                        const std::string& path) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": npy header lacks '", key, "'"));
  }
  size_t colon = header.find(':', at);
  size_t begin = colon + 1;
  while (begin < header.size() && header[begin] == ' ') ++begin;
  size_t end;
  if (header[begin] == '(') {
    end = header.find(')', begin);
    if (end == std::string::npos) return absl::InvalidArgumentError(path + ": bad npy shape");
    ++end;
  } else {
    end = header.find_first_of(",}", begin);
  }
  return header.substr(begin, end - begin);
}

}  // namespace

int64_t NpyArray::NumElements() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<std::vector<float>> NpyArray::AsFloat() const {
  if (descr != "<f4")
    return absl::InvalidArgumentError(absl::StrCat("npy dtype ", descr, ", expected <f4"));
  std::vector<float> out(NumElements());
  std::memcpy(out.data(), data.data(), data.size());
  return out;
}

absl::StatusOr<std::vector<int32_t>> NpyArray::AsInt32() const {
  std::vector<int32_t> out(NumElements());
  if (descr == "<i4") {
    std::memcpy(out.data(), data.data(), data.size());
  } else if (descr == "<i8") {
    for (size_t i = 0; i < out.size(); ++i) {
      int64_t value;
      std::memcpy(&value, data.data() + 8 * i, 8);
      out[i] = static_cast<int32_t>(value);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("npy dtype ", descr, ", expected <i4 or <i8"));
  }
  return out;
}

absl::StatusOr<std::vector<uint8_t>> NpyArray::AsUint8() const {
  if (DescrSize(descr) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("npy dtype ", descr, ", expected |u1"));
  }
  return data;
}

absl::StatusOr<NpyArray> ReadNpy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not an .npy file"));
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else {
    if (bytes.size() < 12) return absl::InvalidArgumentError(path + ": truncated npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i)
      header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
    header_start = 12;
  }
  if (header_start + header_len > bytes.size())
    return absl::InvalidArgumentError(path + ": truncated npy header");
  const std::string header = bytes.substr(header_start, header_len);
  NpyArray array;
  auto descr = HeaderField(header, "descr", path);
  if (!descr.ok()) return descr.status();
  array.descr = std::string(absl::StripSuffix(absl::StripPrefix(*descr, "'"), "'"));
  auto fortran = HeaderField(header, "fortran_order", path);
  if (!fortran.ok()) return fortran.status();
  if (*fortran != "False")
    return absl::InvalidArgumentError(path + ": Fortran-order arrays are not supported");
  auto shape_text = HeaderField(header, "shape", path);
  if (!shape_text.ok()) return shape_text.status();
  std::string inner(absl::StripSuffix(absl::StripPrefix(*shape_text, "("), ")"));
  for (absl::string_view part : absl::StrSplit(inner, ',', absl::SkipWhitespace())) {
    int64_t dim;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(part), &dim) || dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": bad npy shape ", *shape_text));
    }
    array.shape.push_back(dim);
  }
  const size_t element = DescrSize(array.descr);
  if (element == 0)
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported npy dtype ", array.descr));
  const size_t need = static_cast<size_t>(array.NumElements()) * element;
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start != need) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": npy data is ", bytes.size() - data_start, " bytes, shape needs ", need));
  }
  array.data.assign(bytes.begin() + data_start, bytes.end());
  return array;
}

absl::Status WriteNpy(const std::string& path, const std::string& descr,
                      const std::vector<int64_t>& shape, absl::Span<const uint8_t> data) {
  std::string shape_text = absl::StrJoin(shape, ", ");
  if (shape.size() == 1) shape_text += ",";
  std::string header = absl::StrCat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (",
                                    shape_text, "), }");
  // Pad so that the data starts on a 64-byte boundary; the header ends with a newline.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string prefix("\x93NUMPY\x01\x00", 8);
  prefix.push_back(static_cast<char>(header.size() & 0xff));
  prefix.push_back(static_cast<char>(header.size() >> 8));
  FILE* out = std::fopen(path.c_str(), "wb");
  if (out == nullptr) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot create"));
  bool ok = std::fwrite(prefix.data(), 1, prefix.size(), out) == prefix.size() &&
            std::fwrite(header.data(), 1, header.size(), out) == header.size() &&
            std::fwrite(data.data(), 1, data.size(), out) == data.size();
  ok = std::fclose(out) == 0 && ok;
  if (!ok) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace seqboat
