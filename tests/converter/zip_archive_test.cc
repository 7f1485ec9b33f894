// The zip reader on torch.save archives, their zip64 re-pack, and damaged copies of them.
#include "converter/zip_archive.h"

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "tests/converter/converter_test_util.h"

namespace seqboat::convert {
namespace {

using testing::ConverterFixture;
using testing::ReadBytes;

uint32_t Le32(const uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24);
}
void PutLe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// Offset of the last occurrence of a 4-byte little-endian signature.
size_t FindLast(const std::vector<uint8_t>& bytes, uint32_t signature) {
  for (size_t at = bytes.size() - 4; at-- > 0;) {
    if (Le32(&bytes[at]) == signature) return at;
  }
  return std::string::npos;
}

absl::string_view Text(absl::Span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

TEST(Crc32, KnownVectors) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32({reinterpret_cast<const uint8_t*>(check.data()), check.size()}), 0xCBF43926u);
  EXPECT_EQ(Crc32({}), 0u);
  // Incremental equals one shot, across the 8-byte slicing boundary.
  std::vector<uint8_t> data(1000);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 31 + 7);
  const uint32_t whole = Crc32(data);
  EXPECT_EQ(
      Crc32(absl::MakeConstSpan(data).subspan(13), Crc32(absl::MakeConstSpan(data).subspan(0, 13))),
      whole);
}

TEST(ZipArchive, ReadsTorchSaveArchive) {
  const std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  auto archive = ZipArchive::Open(bytes, "basic.pt");
  ASSERT_TRUE(archive.ok()) << archive.status();
  const ZipEntry* pickle = archive->Find("archive/data.pkl");
  ASSERT_NE(pickle, nullptr);
  EXPECT_EQ(pickle->method, 0);
  // torch pads local headers so storages start 64-byte aligned.
  for (const ZipEntry& entry : archive->entries()) {
    if (absl::string_view(entry.name).find("/data/") != absl::string_view::npos) {
      EXPECT_EQ(entry.data_offset % 64, 0u) << entry.name;
    }
    EXPECT_TRUE(archive->CheckCrc(entry).ok()) << entry.name;
  }
  auto data = archive->Data(*pickle);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ((*data)[0], 0x80);  // PROTO
  const ZipEntry* version = archive->Find("archive/version");
  ASSERT_NE(version, nullptr);
  EXPECT_EQ(Text(*archive->Data(*version)).substr(0, 1), "3");
  EXPECT_EQ(archive->Find("archive/nope"), nullptr);
}

TEST(ZipArchive, Zip64MatchesPlainArchive) {
  const std::vector<uint8_t> plain_bytes = ReadBytes(ConverterFixture("basic.pt"));
  const std::vector<uint8_t> zip64_bytes = ReadBytes(ConverterFixture("zip64.pt"));
  auto plain = ZipArchive::Open(plain_bytes, "basic.pt");
  auto zip64 = ZipArchive::Open(zip64_bytes, "zip64.pt");
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(zip64.ok()) << zip64.status();
  ASSERT_EQ(plain->entries().size(), zip64->entries().size());
  for (const ZipEntry& entry : plain->entries()) {
    const ZipEntry* other = zip64->Find(entry.name);
    ASSERT_NE(other, nullptr) << entry.name;
    EXPECT_EQ(Text(*plain->Data(entry)), Text(*zip64->Data(*other))) << entry.name;
    EXPECT_TRUE(zip64->CheckCrc(*other).ok());
  }
}

TEST(ZipArchive, EveryTruncationIsANamedError) {
  const std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  for (size_t length = 0; length < bytes.size(); ++length) {
    auto archive = ZipArchive::Open(absl::MakeConstSpan(bytes.data(), length), "cut.pt");
    ASSERT_FALSE(archive.ok()) << "length " << length;
    EXPECT_TRUE(absl::StrContains(archive.status().message(), "cut.pt")) << archive.status();
  }
  auto half = ZipArchive::Open(absl::MakeConstSpan(bytes.data(), bytes.size() / 2), "cut.pt");
  EXPECT_TRUE(absl::StrContains(half.status().message(), "truncated")) << half.status();
}

TEST(ZipArchive, CorruptedCentralDirectorySignature) {
  std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  const size_t record = FindLast(bytes, 0x02014b50);  // the last central directory record
  ASSERT_NE(record, std::string::npos);
  bytes[record + 1] ^= 0xff;
  auto archive = ZipArchive::Open(bytes, "bad.pt");
  ASSERT_FALSE(archive.ok());
  EXPECT_TRUE(absl::StrContains(archive.status().message(), "corrupted central directory"))
      << archive.status();
}

TEST(ZipArchive, CorruptedCentralDirectoryOffsets) {
  const std::vector<uint8_t> original = ReadBytes(ConverterFixture("basic.pt"));
  const size_t end = FindLast(original, 0x06054b50);
  ASSERT_NE(end, std::string::npos);
  {
    std::vector<uint8_t> bytes = original;
    bytes[end + 16] = 0xf0;  // central directory offset far past the end
    bytes[end + 19] = 0x7f;
    auto archive = ZipArchive::Open(bytes, "bad.pt");
    ASSERT_FALSE(archive.ok());
    EXPECT_TRUE(absl::StrContains(archive.status().message(), "central directory"));
  }
  {
    std::vector<uint8_t> bytes = original;
    PutLe16(&bytes[end + 10], 60000);  // more entries than the directory holds
    auto archive = ZipArchive::Open(bytes, "bad.pt");
    ASSERT_FALSE(archive.ok());
    EXPECT_TRUE(absl::StrContains(archive.status().message(), "entries")) << archive.status();
  }
  {
    std::vector<uint8_t> bytes = original;
    const size_t record = FindLast(bytes, 0x02014b50);
    bytes[record + 42] ^= 0x40;  // local header offset of the last entry
    auto archive = ZipArchive::Open(bytes, "bad.pt");
    ASSERT_FALSE(archive.ok());
  }
  {
    std::vector<uint8_t> bytes = original;
    const size_t record = FindLast(bytes, 0x02014b50);
    bytes[record + 46] ^= 0x01;  // the entry's name no longer matches its local header
    auto archive = ZipArchive::Open(bytes, "bad.pt");
    ASSERT_FALSE(archive.ok());
    EXPECT_TRUE(absl::StrContains(archive.status().message(), "local header name"));
  }
}

TEST(ZipArchive, CompressedAndEncryptedEntriesAreRefusedWhenRead) {
  const std::vector<uint8_t> original = ReadBytes(ConverterFixture("basic.pt"));
  const size_t record = FindLast(original, 0x02014b50);
  {
    std::vector<uint8_t> bytes = original;
    PutLe16(&bytes[record + 10], 8);  // deflate
    auto archive = ZipArchive::Open(bytes, "deflated.pt");
    ASSERT_TRUE(archive.ok()) << archive.status();  // listing is fine
    const ZipEntry& last = archive->entries().back();
    auto data = archive->Data(last);
    ASSERT_FALSE(data.ok());
    EXPECT_TRUE(absl::StrContains(data.status().message(), "compressed (method 8)"));
  }
  {
    std::vector<uint8_t> bytes = original;
    bytes[record + 8] |= 1;  // encrypted flag
    auto archive = ZipArchive::Open(bytes, "encrypted.pt");
    ASSERT_TRUE(archive.ok());
    EXPECT_TRUE(absl::StrContains(archive->Data(archive->entries().back()).status().message(),
                                  "encrypted"));
  }
}

TEST(ZipArchive, CrcMismatchNamesTheEntry) {
  std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  auto archive = ZipArchive::Open(bytes, "flipped.pt");
  ASSERT_TRUE(archive.ok());
  const ZipEntry* storage = archive->Find("archive/data/1");
  ASSERT_NE(storage, nullptr);
  const uint64_t at = storage->data_offset + 3;
  bytes[at] ^= 0x10;
  archive = ZipArchive::Open(bytes, "flipped.pt");
  ASSERT_TRUE(archive.ok());
  const absl::Status crc = archive->CheckCrc(*archive->Find("archive/data/1"));
  EXPECT_EQ(crc.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(crc.message(), "archive/data/1")) << crc;
}

TEST(ZipArchive, EndRecordWithComment) {
  std::vector<uint8_t> bytes = ReadBytes(ConverterFixture("basic.pt"));
  const size_t end = FindLast(bytes, 0x06054b50);
  const std::string comment = "a comment that mentions PK\x05\x06 inside";
  PutLe16(&bytes[end + 20], static_cast<uint16_t>(comment.size()));
  bytes.insert(bytes.end(), comment.begin(), comment.end());
  auto archive = ZipArchive::Open(bytes, "commented.pt");
  ASSERT_TRUE(archive.ok()) << archive.status();
  EXPECT_NE(archive->Find("archive/data.pkl"), nullptr);
}

TEST(ZipArchive, NotAZip) {
  const std::string text(100, 'x');
  auto archive =
      ZipArchive::Open({reinterpret_cast<const uint8_t*>(text.data()), text.size()}, "text.pt");
  ASSERT_FALSE(archive.ok());
  EXPECT_TRUE(absl::StrContains(archive.status().message(), "not a zip archive"));
}

}  // namespace
}  // namespace seqboat::convert
