// TorchCheckpoint: archive layout, data.pkl, and bounds-checked tensor reads.
#include "converter/torch_checkpoint.h"

#include <bit>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "runtime/util/status_macros.h"

namespace seqboat::convert {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the converter assumes a little-endian host");

constexpr int64_t kMaxTensorElements = int64_t{1} << 40;
constexpr int64_t kMaxBroadcastElements = int64_t{1} << 24;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Copies the strided elements of `tensor` from `storage` (starting at element 0 of the
// storage) into `out`, row-major.
void GatherStrided(const uint8_t* storage, size_t element_size, int64_t offset,
                   const std::vector<int64_t>& shape, const std::vector<int64_t>& stride,
                   uint8_t* out) {
  const size_t dims = shape.size();
  if (dims == 0) {
    std::memcpy(out, storage + offset * element_size, element_size);
    return;
  }
  std::vector<int64_t> index(dims, 0);
  const int64_t inner = shape[dims - 1];
  const int64_t inner_stride = stride[dims - 1];
  for (;;) {
    int64_t base = offset;
    for (size_t d = 0; d + 1 < dims; ++d) base += index[d] * stride[d];
    if (inner_stride == 1) {
      std::memcpy(out, storage + base * element_size, inner * element_size);
      out += inner * element_size;
    } else {
      for (int64_t i = 0; i < inner; ++i) {
        std::memcpy(out, storage + (base + i * inner_stride) * element_size, element_size);
        out += element_size;
      }
    }
    size_t d = dims - 1;
    for (;;) {
      if (d == 0) return;
      --d;
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
}

void SwapBytes(uint8_t* data, size_t bytes, size_t unit) {
  if (unit <= 1) return;
  for (size_t at = 0; at + unit <= bytes; at += unit) {
    for (size_t i = 0; i < unit / 2; ++i) std::swap(data[at + i], data[at + unit - 1 - i]);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<TorchCheckpoint>> TorchCheckpoint::Open(
    const std::string& path, const UnpicklerLimits& limits) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  std::unique_ptr<TorchCheckpoint> checkpoint(new TorchCheckpoint());
  checkpoint->bytes_ = file->bytes();
  checkpoint->file_ = std::move(file);
  checkpoint->label_ = path;
  RETURN_IF_ERROR(checkpoint->Parse(limits));
  return checkpoint;
}

absl::StatusOr<std::unique_ptr<TorchCheckpoint>> TorchCheckpoint::FromBytes(
    absl::Span<const uint8_t> bytes, std::string label, const UnpicklerLimits& limits) {
  std::unique_ptr<TorchCheckpoint> checkpoint(new TorchCheckpoint());
  checkpoint->bytes_ = bytes;
  checkpoint->label_ = std::move(label);
  RETURN_IF_ERROR(checkpoint->Parse(limits));
  return checkpoint;
}

absl::Status TorchCheckpoint::Parse(const UnpicklerLimits& limits) {
  if (bytes_.size() >= 2 && bytes_[0] == 0x80 && bytes_[1] <= 5) {
    return absl::InvalidArgumentError(
        absl::StrCat(label_,
                     ": a legacy (pre-1.6, _use_new_zipfile_serialization=False) torch file; "
                     "re-save it with torch.save from torch >= 1.6"));
  }
  if (bytes_.size() >= 4 && std::memcmp(bytes_.data(), "PK\x03\x04", 4) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": not a zip archive, so not a torch.save checkpoint"));
  }
  ASSIGN_OR_RETURN(ZipArchive archive, ZipArchive::Open(bytes_, label_));
  archive_ = std::make_unique<ZipArchive>(std::move(archive));
  if (archive_->entries().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": the zip archive is empty"));
  }
  // torch names every entry "<archive>/..."; the reader takes the folder of the first one.
  const std::string& first = archive_->entries().front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": first zip entry \"", first,
                                                   "\" is not inside an archive folder; ",
                                                   "not a torch.save checkpoint"));
  }
  archive_name_ = first.substr(0, slash);
  const std::string pickle_name = archive_name_ + "/data.pkl";
  const ZipEntry* pickle_entry = archive_->Find(pickle_name);
  if (pickle_entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        label_, ": missing data.pkl: no entry \"", pickle_name, "\" among the archive's ",
        archive_->entries().size(), " entries; not a torch.save checkpoint"));
  }
  if (const ZipEntry* order = archive_->Find(archive_name_ + "/byteorder")) {
    ASSIGN_OR_RETURN(absl::Span<const uint8_t> text, archive_->Data(*order));
    const absl::string_view value(reinterpret_cast<const char*>(text.data()), text.size());
    if (value == "big") {
      big_endian_ = true;
    } else if (value != "little") {
      return absl::InvalidArgumentError(absl::StrCat(label_, ": ", order->name, " is \"",
                                                     absl::CEscape(value.substr(0, 16)),
                                                     "\", expected \"little\" or \"big\""));
    }
  }
  RETURN_IF_ERROR(archive_->CheckCrc(*pickle_entry));
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> pickle_bytes, archive_->Data(*pickle_entry));
  ASSIGN_OR_RETURN(pickle_,
                   Unpickle(pickle_bytes, absl::StrCat(label_, ": ", pickle_name), limits));
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const uint8_t>> TorchCheckpoint::StorageEntry(
    const StorageInfo& storage, absl::string_view tensor_name) const {
  const std::string name = absl::StrCat(archive_name_, "/data/", storage.key);
  const ZipEntry* entry = archive_->Find(name);
  if (entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": tensor \"", tensor_name,
                                                   "\" refers to storage \"", name,
                                                   "\", which the archive lacks"));
  }
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> data, archive_->Data(*entry));
  if (!crc_checked_.contains(storage.key)) {
    RETURN_IF_ERROR(archive_->CheckCrc(*entry));
    crc_checked_.insert(storage.key);
  }
  return data;
}

bool TorchCheckpoint::SameView(const TensorInfo& a, const TensorInfo& b) {
  return a.storage_info().key == b.storage_info().key &&
         a.storage_info().dtype == b.storage_info().dtype && a.storage_offset == b.storage_offset &&
         a.shape == b.shape && a.stride == b.stride;
}

absl::StatusOr<TensorBytes> TorchCheckpoint::ReadTensor(const TensorInfo& tensor,
                                                        absl::string_view name) const {
  const StorageInfo& storage = tensor.storage_info();
  const size_t element_size = TorchDTypeSize(storage.dtype);
  auto describe = [&] {
    return absl::StrCat("tensor \"", name, "\" (", TorchDTypeName(storage.dtype), " ",
                        ShapeString(tensor.shape), ", storage offset ", tensor.storage_offset, ")");
  };
  // Element count and the last element touched, with overflow checks (every value is
  // non-negative, checked by the unpickler).
  int64_t numel = 1;
  for (int64_t size : tensor.shape) {
    if (size != 0 && numel > kMaxTensorElements / size) {
      return absl::InvalidArgumentError(absl::StrCat(label_, ": ", describe(), " has more than ",
                                                     kMaxTensorElements, " elements"));
    }
    numel *= size;
  }
  int64_t needed = 0;  // storage elements the tensor reaches
  if (numel > 0) {
    __int128 last = tensor.storage_offset;
    for (size_t d = 0; d < tensor.shape.size(); ++d) {
      last += static_cast<__int128>(tensor.shape[d] - 1) * tensor.stride[d];
    }
    if (last >= kMaxTensorElements) {
      return absl::InvalidArgumentError(
          absl::StrCat(label_, ": ", describe(), " reaches past element 2^40 of its storage"));
    }
    needed = static_cast<int64_t>(last) + 1;
  }
  // A view can only reach more elements than its storage holds by overlapping itself
  // (stride 0, an expand()); bound what such a view may blow up to.
  if (numel > needed && numel > kMaxBroadcastElements) {
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": ", describe(), " repeats ", needed, " storage elements as ", numel,
                     "; broadcast views over ", kMaxBroadcastElements, " elements are refused"));
  }
  if (needed > storage.numel) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", describe(), " needs ", needed,
                                                   " elements of storage \"", storage.key,
                                                   "\", which declares only ", storage.numel));
  }
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> data, StorageEntry(storage, name));
  const uint64_t needed_bytes = static_cast<uint64_t>(needed) * element_size;
  if (data.size() < needed_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        label_, ": storage shorter than the tensor needs: ", describe(), " needs ", needed_bytes,
        " bytes of \"", archive_name_, "/data/", storage.key, "\", which holds ", data.size()));
  }

  TensorBytes out;
  out.dtype = storage.dtype;
  out.shape = tensor.shape;
  out.numel = numel;
  bool contiguous = true;
  int64_t expected_stride = 1;
  for (size_t d = tensor.shape.size(); d-- > 0;) {
    if (tensor.shape[d] != 1 && tensor.stride[d] != expected_stride) contiguous = false;
    expected_stride *= tensor.shape[d];
  }
  const size_t bytes = static_cast<size_t>(numel) * element_size;
  if (numel == 0) return out;
  if (contiguous && !big_endian_) {
    out.bytes = data.subspan(static_cast<size_t>(tensor.storage_offset) * element_size, bytes);
    return out;
  }
  out.owned.resize(bytes);
  if (contiguous) {
    std::memcpy(out.owned.data(), data.data() + tensor.storage_offset * element_size, bytes);
  } else {
    GatherStrided(data.data(), element_size, tensor.storage_offset, tensor.shape, tensor.stride,
                  out.owned.data());
  }
  if (big_endian_) {
    const bool complex =
        storage.dtype == TorchDType::kComplex64 || storage.dtype == TorchDType::kComplex128;
    SwapBytes(out.owned.data(), bytes, complex ? element_size / 2 : element_size);
  }
  out.bytes = absl::MakeConstSpan(out.owned);
  return out;
}

}  // namespace seqboat::convert
