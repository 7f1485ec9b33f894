// Reader of the zip archives that torch.save writes: stored (uncompressed) entries, local
// headers padded for alignment, zip64 when large. Works in place on a mapped file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace seqboat::convert {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;  // 0 = stored; torch never compresses
  uint16_t flags = 0;   // bit 0 = encrypted
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0;
  uint64_t size = 0;           // uncompressed
  uint64_t header_offset = 0;  // of the local header
  uint64_t data_offset = 0;    // of the first data byte
};

class ZipArchive {
 public:
  // Parses and validates the end records, every central directory record and every local
  // header. `bytes` must outlive the archive; `label` (the path) prefixes every message.
  static absl::StatusOr<ZipArchive> Open(absl::Span<const uint8_t> bytes, std::string label);

  const std::string& label() const { return label_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* Find(absl::string_view name) const;
  // The stored bytes of `entry`; an error for compressed or encrypted entries.
  absl::StatusOr<absl::Span<const uint8_t>> Data(const ZipEntry& entry) const;
  // Compares the entry's CRC-32 with the central directory's.
  absl::Status CheckCrc(const ZipEntry& entry) const;

 private:
  ZipArchive() = default;
  absl::Status Parse();
  absl::Status ParseCentralDirectory(uint64_t cd_offset, uint64_t cd_size, uint64_t count);

  std::string label_;
  absl::Span<const uint8_t> bytes_;
  std::vector<ZipEntry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;
};

// CRC-32 (ISO-HDLC, as zip uses); `crc` continues a previous call.
uint32_t Crc32(absl::Span<const uint8_t> bytes, uint32_t crc = 0);

}  // namespace seqboat::convert
