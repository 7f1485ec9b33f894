// Zip parsing with every offset and length checked against the archive before use.
#include "converter/zip_archive.h"

#include <array>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace seqboat::convert {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr size_t kEndSize = 22;
constexpr size_t kZip64LocatorSize = 20;
constexpr size_t kZip64EndMinSize = 56;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kLocalHeaderSize = 30;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint64_t kMaxEntries = 1 << 22;

uint16_t Le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t Le64(const uint8_t* p) {
  return static_cast<uint64_t>(Le32(p)) | (static_cast<uint64_t>(Le32(p + 4)) << 32);
}

// Slice-by-8 tables, built once at compile time.
constexpr std::array<std::array<uint32_t, 256>, 8> MakeCrcTables() {
  std::array<std::array<uint32_t, 256>, 8> tables{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xedb88320u ^ (c >> 1)) : (c >> 1);
    tables[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; ++i) {
    for (int t = 1; t < 8; ++t) {
      tables[t][i] = (tables[t - 1][i] >> 8) ^ tables[0][tables[t - 1][i] & 0xff];
    }
  }
  return tables;
}
constexpr auto kCrcTables = MakeCrcTables();

}  // namespace

uint32_t Crc32(absl::Span<const uint8_t> bytes, uint32_t crc) {
  crc = ~crc;
  const uint8_t* p = bytes.data();
  size_t n = bytes.size();
  const auto& t = kCrcTables;
  while (n >= 8) {
    const uint32_t low = Le32(p) ^ crc;
    const uint32_t high = Le32(p + 4);
    crc = t[7][low & 0xff] ^ t[6][(low >> 8) & 0xff] ^ t[5][(low >> 16) & 0xff] ^ t[4][low >> 24] ^
          t[3][high & 0xff] ^ t[2][(high >> 8) & 0xff] ^ t[1][(high >> 16) & 0xff] ^
          t[0][high >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

absl::StatusOr<ZipArchive> ZipArchive::Open(absl::Span<const uint8_t> bytes, std::string label) {
  ZipArchive archive;
  archive.label_ = std::move(label);
  archive.bytes_ = bytes;
  RETURN_IF_ERROR(archive.Parse());
  return archive;
}

absl::Status ZipArchive::Parse() {
  const uint8_t* base = bytes_.data();
  const uint64_t size = bytes_.size();
  auto error = [&](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(label_, ": ", parts...));
  };
  if (size < kEndSize) {
    return error("only ", size, " bytes, too short for a zip archive (a truncated file?)");
  }
  // The end record is the last thing in the file, followed only by its comment. Search
  // backwards for a signature whose comment length reaches exactly the end of the file.
  uint64_t end_offset = UINT64_MAX;
  const uint64_t search_floor = size >= kEndSize + 0xffff ? size - kEndSize - 0xffff : 0;
  for (uint64_t at = size - kEndSize + 1; at-- > search_floor;) {
    if (Le32(base + at) == kEndSignature && at + kEndSize + Le16(base + at + 20) == size) {
      end_offset = at;
      break;
    }
  }
  if (end_offset == UINT64_MAX) {
    return error("no zip end-of-central-directory record in the last ", size - search_floor,
                 " bytes: the file is truncated or not a zip archive");
  }
  const uint8_t* end = base + end_offset;
  const uint16_t disk = Le16(end + 4), cd_disk = Le16(end + 6);
  uint64_t count = Le16(end + 10);
  uint64_t cd_size = Le32(end + 12);
  uint64_t cd_offset = Le32(end + 16);
  uint64_t cd_limit = end_offset;  // the central directory must end before this

  const bool has_locator = end_offset >= kZip64LocatorSize &&
                           Le32(base + end_offset - kZip64LocatorSize) == kZip64LocatorSignature;
  const bool saturated = count == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu;
  if (has_locator) {
    const uint8_t* locator = base + end_offset - kZip64LocatorSize;
    const uint64_t z64_offset = Le64(locator + 8);
    if (Le32(locator + 16) > 1) return error("multi-disk zip64 archives are not supported");
    if (z64_offset > end_offset - kZip64LocatorSize ||
        end_offset - kZip64LocatorSize - z64_offset < kZip64EndMinSize) {
      return error("zip64 end record offset ", z64_offset, " is outside the archive (", size,
                   " bytes)");
    }
    const uint8_t* z64 = base + z64_offset;
    if (Le32(z64) != kZip64EndSignature) {
      return error(
          absl::StrFormat("zip64 end record at offset %d has signature 0x%08x, "
                          "expected 0x%08x",
                          z64_offset, Le32(z64), kZip64EndSignature));
    }
    if (Le32(z64 + 16) != 0 || Le32(z64 + 20) != 0) {
      return error("multi-disk zip64 archives are not supported");
    }
    // torch writes both records; a value the 32-bit record does not saturate must agree.
    const uint64_t z64_count = Le64(z64 + 32);
    const uint64_t z64_cd_size = Le64(z64 + 40);
    const uint64_t z64_cd_offset = Le64(z64 + 48);
    auto disagree = [&](const char* what, uint64_t value, uint64_t value64) {
      return error("the end record and the zip64 end record disagree on ", what, " (", value,
                   " vs ", value64, "): corrupted central directory records");
    };
    if (count != 0xffff && count != z64_count) {
      return disagree("the number of entries", count, z64_count);
    }
    if (cd_size != 0xffffffffu && cd_size != z64_cd_size) {
      return disagree("the central directory size", cd_size, z64_cd_size);
    }
    if (cd_offset != 0xffffffffu && cd_offset != z64_cd_offset) {
      return disagree("the central directory offset", cd_offset, z64_cd_offset);
    }
    count = z64_count;
    cd_size = z64_cd_size;
    cd_offset = z64_cd_offset;
    cd_limit = z64_offset;
  } else {
    if (saturated) {
      return error("the end record needs zip64 values but the zip64 locator is missing");
    }
    if (disk != 0 || cd_disk != 0) return error("multi-disk zip archives are not supported");
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset) {
    return error("central directory (offset ", cd_offset, ", ", cd_size,
                 " bytes) does not fit before the end record at offset ", cd_limit,
                 ": the file is truncated or corrupted");
  }
  if (count > kMaxEntries) {
    return error(count, " entries exceed the limit of ", kMaxEntries);
  }
  if (count * kCentralHeaderSize > cd_size) {
    return error("central directory of ", cd_size, " bytes cannot hold ", count, " entries");
  }
  return ParseCentralDirectory(cd_offset, cd_size, count);
}

absl::Status ZipArchive::ParseCentralDirectory(uint64_t cd_offset, uint64_t cd_size,
                                               uint64_t count) {
  const uint8_t* base = bytes_.data();
  const uint64_t cd_end = cd_offset + cd_size;
  uint64_t at = cd_offset;
  entries_.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    auto error = [&](auto&&... parts) {
      return absl::InvalidArgumentError(absl::StrCat(label_, ": central directory record ", i,
                                                     " at offset ", at, ": ", parts...));
    };
    if (cd_end - at < kCentralHeaderSize) return error("runs past the central directory");
    const uint8_t* h = base + at;
    if (Le32(h) != kCentralHeaderSignature) {
      return error(
          absl::StrFormat("signature 0x%08x, expected 0x%08x (corrupted central "
                          "directory)",
                          Le32(h), kCentralHeaderSignature));
    }
    ZipEntry entry;
    entry.flags = Le16(h + 8);
    entry.method = Le16(h + 10);
    entry.crc32 = Le32(h + 16);
    entry.compressed_size = Le32(h + 20);
    entry.size = Le32(h + 24);
    const uint16_t name_length = Le16(h + 28);
    const uint16_t extra_length = Le16(h + 30);
    const uint16_t comment_length = Le16(h + 32);
    const uint16_t start_disk = Le16(h + 34);
    entry.header_offset = Le32(h + 42);
    const uint64_t record_size =
        kCentralHeaderSize + uint64_t{name_length} + extra_length + comment_length;
    if (cd_end - at < record_size) {
      return error("name, extra field and comment (", record_size - kCentralHeaderSize,
                   " bytes) run past the central directory");
    }
    entry.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), name_length);

    // Zip64 extra field: 8-byte values for exactly the saturated 32-bit fields, in order.
    const bool need_size = entry.size == 0xffffffffu;
    const bool need_compressed = entry.compressed_size == 0xffffffffu;
    const bool need_offset = entry.header_offset == 0xffffffffu;
    bool found_zip64 = false;
    const uint8_t* extra = h + kCentralHeaderSize + name_length;
    for (uint32_t e = 0; e + 4 <= extra_length;) {
      const uint16_t id = Le16(extra + e);
      const uint16_t length = Le16(extra + e + 2);
      if (e + 4 + uint32_t{length} > extra_length) {
        return error("extra field 0x", absl::Hex(id), " of \"", entry.name,
                     "\" runs past its record");
      }
      if (id == kZip64ExtraId) {
        found_zip64 = true;
        const uint8_t* value = extra + e + 4;
        uint32_t left = length;
        auto take = [&](uint64_t* field) -> bool {
          if (left < 8) return false;
          *field = Le64(value);
          value += 8;
          left -= 8;
          return true;
        };
        if ((need_size && !take(&entry.size)) ||
            (need_compressed && !take(&entry.compressed_size)) ||
            (need_offset && !take(&entry.header_offset))) {
          return error("zip64 extra field of \"", entry.name, "\" is too short (", length,
                       " bytes)");
        }
      }
      e += 4 + length;
    }
    if ((need_size || need_compressed || need_offset) && !found_zip64) {
      return error("\"", entry.name, "\" has saturated sizes but no zip64 extra field");
    }
    if (start_disk != 0 && start_disk != 0xffff) {
      return error("\"", entry.name, "\" starts on disk ", start_disk,
                   "; multi-disk archives are not supported");
    }

    // The local header: its name must agree, and the data must end before the directory.
    if (entry.header_offset > cd_offset || cd_offset - entry.header_offset < kLocalHeaderSize) {
      return error("local header offset ", entry.header_offset, " of \"", entry.name,
                   "\" is not before the central directory at ", cd_offset);
    }
    const uint8_t* local = base + entry.header_offset;
    if (Le32(local) != kLocalHeaderSignature) {
      return error(
          absl::StrFormat("local header of \"%s\" at offset %d has signature 0x%08x, "
                          "expected 0x%08x",
                          entry.name, entry.header_offset, Le32(local), kLocalHeaderSignature));
    }
    const uint16_t local_name_length = Le16(local + 26);
    const uint16_t local_extra_length = Le16(local + 28);
    entry.data_offset =
        entry.header_offset + kLocalHeaderSize + local_name_length + local_extra_length;
    if (entry.data_offset > cd_offset || entry.compressed_size > cd_offset - entry.data_offset) {
      return error("data of \"", entry.name, "\" (", entry.compressed_size, " bytes at offset ",
                   entry.data_offset, ") runs into the central directory at ", cd_offset,
                   ": the file is truncated or corrupted");
    }
    if (local_name_length != name_length ||
        std::memcmp(local + kLocalHeaderSize, entry.name.data(), name_length) != 0) {
      return error("local header name differs from the central directory's \"", entry.name, "\"");
    }
    if (entry.method == 0 && entry.size != entry.compressed_size) {
      return error("stored entry \"", entry.name, "\" has size ", entry.size,
                   " but compressed size ", entry.compressed_size);
    }
    if (!index_.emplace(entry.name, entries_.size()).second) {
      return error("duplicate entry \"", entry.name, "\"");
    }
    entries_.push_back(std::move(entry));
    at += record_size;
  }
  return absl::OkStatus();
}

const ZipEntry* ZipArchive::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

absl::StatusOr<absl::Span<const uint8_t>> ZipArchive::Data(const ZipEntry& entry) const {
  if (entry.flags & 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(label_, ": entry \"", entry.name, "\" is encrypted"));
  }
  if (entry.method != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        label_, ": entry \"", entry.name, "\" is compressed (method ", entry.method,
        "); torch.save writes stored entries, re-save the checkpoint with torch.save"));
  }
  return bytes_.subspan(entry.data_offset, entry.size);
}

absl::Status ZipArchive::CheckCrc(const ZipEntry& entry) const {
  ASSIGN_OR_RETURN(absl::Span<const uint8_t> data, Data(entry));
  const uint32_t actual = Crc32(data);
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
  // Let mutated inputs reach the unpickler; the CRC itself is still computed.
  if (actual != entry.crc32 && false) {
#else
  if (actual != entry.crc32) {
#endif
    return absl::DataLossError(absl::StrFormat(
        "%s: entry \"%s\" has CRC-32 0x%08x, the central directory says 0x%08x (corrupted data)",
        label_, entry.name, actual, entry.crc32));
  }
  return absl::OkStatus();
}

}  // namespace seqboat::convert
