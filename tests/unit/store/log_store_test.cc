// SPDX-License-Identifier: MIT
//
// What only the message log has: recovery from what a crash leaves, segment deletion and compaction.
// The promises every store keeps are in message_store_test.cc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <thread>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "store/log_format.h"
#include "store/log_store.h"
#include "store_test_support.h"
#include "util/crc32c.h"

namespace debra::store {
namespace {

namespace fs = std::filesystem;
using core::AppendStatus;

class TempDir : public testing::TempDir {
 public:
  std::vector<fs::path> segments() const { return files(".seg"); }
  std::vector<fs::path> spares() const { return files(".spare"); }
  std::vector<fs::path> files(std::string_view extension) const {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(path() + "/log")) {
      if (e.path().extension() == extension) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }
};

core::Delivery delivery(core::ClientId sender, core::ClientId recipient, std::uint64_t message_id) {
  return core::Delivery{sender, recipient, message_id, nullptr};
}

std::vector<std::uint8_t> bytes(std::string_view text) { return {text.begin(), text.end()}; }
std::string text(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }

std::unique_ptr<LogStore> open_log(const std::string& dir, LogOptions options = {}, core::StoreLimits limits = {}) {
  auto store = LogStore::open(dir, SyncMode::Batch, limits, options);
  EXPECT_TRUE(store.has_value()) << (store ? "" : store.error().message);
  return store ? std::move(*store) : nullptr;
}

LogOptions small_segments(std::size_t bytes = 4096) {
  LogOptions options;
  options.segment_bytes = bytes;
  options.compact_after_ms = 0;
  return options;
}

// Traffic that recipient 2 takes at once: messages first..last, each committed, acknowledged and
// the acknowledgement committed; 200-byte payloads, many small segments' worth.
void traffic_taken_at_once(LogStore& store, std::uint64_t first, std::uint64_t last) {
  const std::vector<std::uint8_t> payload(200, 'x');
  for (std::uint64_t i = first; i <= last; ++i) {
    auto s = store.append(delivery(1, 2, i), payload, false, 0).sequence;
    ASSERT_TRUE(store.commit());
    store.acknowledge(2, s);
    ASSERT_TRUE(store.commit());
  }
}

// Reopens the log: it finds nothing torn, and the recipient's inbox holds exactly these payloads.
void expect_reopened_inbox(const TempDir& dir, core::ClientId recipient, const std::vector<std::string>& payloads) {
  auto store = open_log(dir.path());
  EXPECT_EQ(store->recovery().torn_bytes, 0u);
  std::vector<std::string> held;
  for (const auto& m : store->pending(recipient, 0, 1000)) held.push_back(text(m.payload));
  EXPECT_EQ(held, payloads);
}

TEST(LogFormat, RecordsRoundTripAndEveryDamagedByteIsCaught) {
  std::vector<std::uint8_t> out;
  auto payload = bytes("hello");
  log::encode(log::AppendRecord{7, 9, 3, 0xfedcba9876543210ULL, true, -5, 1234, payload}, 0, out);
  const std::size_t append_size = out.size();
  EXPECT_EQ(append_size, log::append_record_size(payload.size()));
  log::encode(log::RemoveRecord{7, 9}, 0, out);
  EXPECT_EQ(out.size() - append_size, log::kRemoveRecordSize);

  auto first = log::decode(out, 0);
  ASSERT_EQ(first.status, log::DecodeStatus::Ok);
  EXPECT_EQ(first.record.size, append_size);
  const auto& a = first.record.append;
  EXPECT_EQ(a.sequence, 7u);
  EXPECT_EQ(a.recipient, 9);
  EXPECT_EQ(a.sender, 3);
  EXPECT_EQ(a.message_id, 0xfedcba9876543210ULL);
  EXPECT_TRUE(a.receipt_requested);
  EXPECT_EQ(a.expires_at_ms, -5);
  EXPECT_EQ(a.accepted_at_ms, 1234);
  EXPECT_EQ(std::string(a.payload.begin(), a.payload.end()), "hello");
  auto second = log::decode(std::span(out).subspan(append_size), 0);
  ASSERT_EQ(second.status, log::DecodeStatus::Ok);
  EXPECT_EQ(second.record.type, log::RecordType::Remove);
  EXPECT_EQ(second.record.remove.sequence, 7u);

  for (std::size_t cut = 0; cut < append_size; ++cut) {
    EXPECT_EQ(log::decode(std::span(out).first(cut), 0).status, log::DecodeStatus::Truncated) << cut;
  }
  for (std::size_t i = 0; i < append_size; ++i) {
    auto damaged = out;
    damaged[i] ^= 0x40;
    EXPECT_NE(log::decode(damaged, 0).status, log::DecodeStatus::Ok) << "byte " << i;
  }
}

// A reused segment file still holds records of its earlier lives past the new end. They must never
// count: under the file's new salt they read as Stale, and the end mark stops the reader before
// the middle of an old record could look like damage.
TEST(LogFormat, TheSaltTellsThisLifeOfAFileFromEarlierOnes) {
  std::vector<std::uint8_t> out;
  log::encode(log::AppendRecord{7, 9, 3, 11, false, 0, 0, bytes("hello")}, 5, out);
  EXPECT_EQ(log::decode(out, 5).status, log::DecodeStatus::Ok);
  EXPECT_EQ(log::decode(out, 6).status, log::DecodeStatus::Stale);
  EXPECT_EQ(log::decode(out, 1000).status, log::DecodeStatus::Stale);
  EXPECT_EQ(log::decode(out, 4).status, log::DecodeStatus::Corrupt) << "a later life's record is damage";
  EXPECT_EQ(log::decode(out, 0).status, log::DecodeStatus::Corrupt);

  log::resalt(out, 5, 9);  // as compaction copies a record into another file
  EXPECT_EQ(log::decode(out, 9).status, log::DecodeStatus::Ok);
  EXPECT_EQ(log::decode(out, 9).record.append.sequence, 7u);

  std::vector<std::uint8_t> mark;
  log::encode_end_mark(5, mark);
  EXPECT_EQ(mark.size(), log::kEndMarkSize);
  EXPECT_EQ(log::decode(mark, 5).status, log::DecodeStatus::End);
  EXPECT_EQ(log::decode(mark, 6).status, log::DecodeStatus::Corrupt) << "an earlier life's mark";
  const std::vector<std::uint8_t> zeros(64, 0);
  EXPECT_EQ(log::decode(zeros, 0).status, log::DecodeStatus::Corrupt) << "a zeroed block is no end mark";
  EXPECT_EQ(log::decode(zeros, 5).status, log::DecodeStatus::Corrupt);
}

TEST(LogFormat, VersionOneHeadersReadAsSaltZeroAndUnknownVersionsAreRefused) {
  std::vector<std::uint8_t> header;
  log::encode_header({42, 0}, header);
  header[8] = 1;  // what a router of format version 1 wrote
  auto v1 = log::decode_header(header);
  ASSERT_TRUE(v1.has_value());
  EXPECT_EQ(v1->base_sequence, 42u);
  EXPECT_EQ(v1->salt, 0u);
  header[12] = 3;
  EXPECT_FALSE(log::decode_header(header).has_value()) << "version 1 had no salt";
  header[12] = 0;
  header[8] = 3;
  EXPECT_FALSE(log::decode_header(header).has_value()) << "a format from a later build";
}

// The bytes on disk, spelled out: a data directory written by one build (or host) must read in
// every other, so the layout may only change with kVersion.
TEST(LogFormat, TheOnDiskLayoutIsFixedAndLittleEndian) {
  std::vector<std::uint8_t> out;
  log::encode_header({0x0102030405060708ULL, 0x0a0b0c0d}, out);
  const std::vector<std::uint8_t> header = {'d',  'e',  'b',  'r',  'a',  'l',  'o',  'g',
                                            2,    0,    0,    0,    0x0d, 0x0c, 0x0b, 0x0a,  // version, salt
                                            0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01};
  EXPECT_EQ(out, header);

  const std::vector<std::uint8_t> append_body = {
      1,                                               // Append
      7, 0, 0, 0, 0, 0, 0, 0,                          // sequence
      9, 0, 0, 0,                                      // recipient
      3, 0, 0, 0,                                      // sender
      0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,  // message id
      1,                                               // receipt requested
      0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // expires at (-5 ms)
      0xd2, 0x04, 0, 0, 0, 0, 0, 0,                    // accepted at (1234 ms)
      'h', 'e', 'l', 'l', 'o'};
  const std::vector<std::uint8_t> remove_body = {2, 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0};
  constexpr std::uint32_t kSalt = 0x0a0b0c0d;
  auto framed = [](const std::vector<std::uint8_t>& body) {
    const std::uint32_t crc = util::crc32c(body) ^ kSalt;
    std::vector<std::uint8_t> frame = {static_cast<std::uint8_t>(body.size()), 0, 0, 0};
    for (int i = 0; i < 4; ++i) frame.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));
    frame.insert(frame.end(), body.begin(), body.end());
    return frame;
  };
  out.clear();
  log::encode(log::AppendRecord{7, 9, 3, 0xfedcba9876543210ULL, true, -5, 1234, bytes("hello")}, kSalt, out);
  EXPECT_EQ(out, framed(append_body));
  out.clear();
  log::encode(log::RemoveRecord{7, 9}, kSalt, out);
  EXPECT_EQ(out, framed(remove_body));
  out.clear();
  log::encode_end_mark(kSalt, out);
  EXPECT_EQ(out, (std::vector<std::uint8_t>{0, 0, 0, 0, 0xf2, 0xf3, 0xf4, 0xf5}));
}

TEST(LogFormat, ABatchOfRecordsGrowsItsBufferGeometrically) {
  // A batch that outgrows every batch before it must not be copied whole on each record: that was
  // quadratic, and it made a router with 16 k messages in flight stall for seconds.
  std::vector<std::uint8_t> out;
  auto payload = bytes(std::string(64, 'x'));
  std::size_t reallocations = 0;
  std::size_t capacity = out.capacity();
  for (std::uint64_t sequence = 1; sequence <= 20'000; ++sequence) {
    log::encode(log::AppendRecord{sequence, 9, 3, sequence, false, 0, 0, payload}, 0, out);
    if (out.capacity() != capacity) {
      ++reallocations;
      capacity = out.capacity();
    }
  }
  EXPECT_EQ(out.size(), 20'000 * log::append_record_size(payload.size()));
  EXPECT_LE(reallocations, 32u);
}

TEST(LogStore, AnInterruptedWriteIsCutOffAndEverythingCommittedSurvives) {
  TempDir dir;
  {
    auto store = open_log(dir.path());
    for (std::uint64_t i = 1; i <= 3; ++i) store->append(delivery(1, 2, i), bytes("m" + std::to_string(i)), false, 0);
    ASSERT_TRUE(store->commit());
  }
  // Half a record where the next write starts (on the end mark), as a crash in the middle of a
  // write leaves it.
  std::vector<std::uint8_t> record;
  log::encode(log::AppendRecord{99, 2, 1, 4, false, 0, 0, bytes("never committed")}, 0, record);
  ASSERT_GT(record.size() / 2, log::kEndMarkSize);
  {
    const auto end = fs::file_size(dir.segments().back());
    std::fstream out(dir.segments().back(), std::ios::binary | std::ios::in | std::ios::out);
    out.seekp(static_cast<std::streamoff>(end - log::kEndMarkSize));
    out.write(reinterpret_cast<const char*>(record.data()), static_cast<std::streamsize>(record.size() / 2));
  }
  {
    auto store = open_log(dir.path());
    EXPECT_EQ(store->recovery().torn_bytes, record.size() / 2);
    auto pending = store->pending(2, 0, 10);
    ASSERT_EQ(pending.size(), 3u);
    EXPECT_EQ(text(pending[2].payload), "m3");
    auto next = store->append(delivery(1, 2, 5), bytes("after"), false, 0);
    EXPECT_EQ(next.status, AppendStatus::Stored);
    ASSERT_TRUE(store->commit());
  }
  expect_reopened_inbox(dir, 2, {"m1", "m2", "m3", "after"});
}

TEST(LogStore, SegmentsGoOnceEveryMessageInThemIsAcknowledgedAndSequencesStayUnique) {
  TempDir dir;
  std::vector<std::uint64_t> sequences;
  std::vector<std::uint8_t> payload(200, 'x');
  {
    auto store = open_log(dir.path(), small_segments());
    for (std::uint64_t i = 1; i <= 100; ++i) sequences.push_back(store->append(delivery(1, 2, i), payload, false, 0).sequence);
    ASSERT_TRUE(store->commit());
    EXPECT_GT(store->segment_count(), 4u);
    for (std::uint64_t s : sequences) ASSERT_TRUE(store->acknowledge(2, s).has_value());
    ASSERT_TRUE(store->commit());
    EXPECT_EQ(store->segment_count(), 1u) << "only the segment being written remains";
    EXPECT_EQ(dir.segments().size(), 1u);
  }
  auto store = open_log(dir.path(), small_segments());
  EXPECT_TRUE(store->pending(2, 0, 1000).empty());
  EXPECT_EQ(store->stats().held_messages, 0u);
  EXPECT_GT(store->append(delivery(1, 2, 500), payload, false, 0).sequence, sequences.back());
}

std::uint64_t inode(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

std::uint64_t allocated(const fs::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

TEST(LogStore, EmptiedSegmentsAreWrittenOverAndNothingOfTheirEarlierLivesComesBack) {
  TempDir dir;
  const std::vector<std::uint8_t> old_payload(200, 'a');
  const std::vector<std::uint8_t> new_payload(333, 'b');  // records that fall on other offsets
  std::vector<std::uint64_t> kept;
  {
    auto store = open_log(dir.path(), small_segments());
    std::vector<std::uint64_t> sequences;
    for (std::uint64_t i = 1; i <= 100; ++i) {
      sequences.push_back(store->append(delivery(1, 2, i), old_payload, false, 0).sequence);
    }
    ASSERT_TRUE(store->commit());
    for (std::uint64_t s : sequences) ASSERT_TRUE(store->acknowledge(2, s).has_value());
    ASSERT_TRUE(store->commit());
    EXPECT_EQ(store->spare_count(), 2u);
    ASSERT_EQ(dir.spares().size(), 2u);
    EXPECT_EQ(dir.segments().size(), 1u);
    std::uint64_t on_disk = 0;
    for (const auto& e : fs::directory_iterator(dir.path() + "/log")) on_disk += allocated(e.path());
    EXPECT_EQ(store->stats().disk_bytes, on_disk) << "the spares' space is counted";
    std::set<std::uint64_t> spare_files;
    for (const auto& spare : dir.spares()) spare_files.insert(inode(spare));

    for (std::uint64_t i = 101; i <= 130; ++i) {
      kept.push_back(store->append(delivery(1, 3, i), new_payload, false, 0).sequence);
    }
    ASSERT_TRUE(store->commit());
    EXPECT_EQ(store->spare_count(), 0u);
    EXPECT_TRUE(dir.spares().empty());
    std::size_t reused = 0;
    for (const auto& segment : dir.segments()) reused += spare_files.count(inode(segment));
    EXPECT_EQ(reused, 2u) << "the new segments are the spare files, written over";
  }
  auto store = open_log(dir.path(), small_segments());
  EXPECT_EQ(store->recovery().torn_bytes, 0u);
  EXPECT_EQ(store->recovery().corrupt_segments, 0u) << "the rest of an earlier life read as damage";
  EXPECT_TRUE(store->pending(2, 0, 1000).empty()) << "a message of an earlier life came back";
  auto pending = store->pending(3, 0, 1000);
  ASSERT_EQ(pending.size(), kept.size());
  for (std::size_t k = 0; k < kept.size(); ++k) {
    EXPECT_EQ(pending[k].sequence, kept[k]);
    EXPECT_EQ(pending[k].payload, new_payload);
  }
  EXPECT_EQ(store->stats().held_messages, kept.size());
}

TEST(LogStore, ALogOfFormatVersionOneIsReadAndGoesOnTakingRecords) {
  TempDir dir;
  fs::create_directories(dir.path() + "/log");
  // What a router of format version 1 left: no salt, no end mark.
  std::vector<std::uint8_t> file;
  log::encode_header({5, 0}, file);
  file[8] = 1;
  log::encode(log::AppendRecord{5, 2, 1, 1, false, 0, 0, bytes("first")}, 0, file);
  log::encode(log::AppendRecord{6, 2, 1, 2, false, 0, 0, bytes("second")}, 0, file);
  log::encode(log::RemoveRecord{5, 2}, 0, file);
  {
    std::ofstream out(dir.path() + "/log/00000000000000000001.seg", std::ios::binary);
    out.write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
  }
  std::uint64_t added = 0;
  {
    auto store = open_log(dir.path());
    EXPECT_EQ(store->recovery().records, 3u);
    auto pending = store->pending(2, 0, 10);
    ASSERT_EQ(pending.size(), 1u);
    EXPECT_EQ(text(pending[0].payload), "second");
    added = store->append(delivery(1, 2, 3), bytes("third"), false, 0).sequence;
    EXPECT_EQ(added, 7u);
    ASSERT_TRUE(store->commit());
  }
  expect_reopened_inbox(dir, 2, {"second", "third"});
}

TEST(LogStore, SparesOutliveARestartAndNewSegmentsNeverTakeTheirNames) {
  TempDir dir;
  const std::vector<std::uint8_t> payload(200, 'x');
  {
    auto store = open_log(dir.path(), small_segments());
    std::vector<std::uint64_t> sequences;
    for (std::uint64_t i = 1; i <= 100; ++i) sequences.push_back(store->append(delivery(1, 2, i), payload, false, 0).sequence);
    ASSERT_TRUE(store->commit());
    for (std::uint64_t s : sequences) store->acknowledge(2, s);
    ASSERT_TRUE(store->commit());
  }
  ASSERT_EQ(dir.spares().size(), 2u);
  std::set<std::uint64_t> spare_files;
  for (const auto& spare : dir.spares()) spare_files.insert(inode(spare));
  std::vector<std::uint64_t> kept;
  {
    auto store = open_log(dir.path(), small_segments());
    EXPECT_EQ(store->spare_count(), 2u);
    // More segments than there are spares: two written over, the rest new files.
    for (std::uint64_t i = 101; i <= 160; ++i) kept.push_back(store->append(delivery(1, 2, i), payload, false, 0).sequence);
    ASSERT_TRUE(store->commit());
  }
  EXPECT_GE(dir.segments().size(), 4u);
  std::size_t reused = 0;
  for (const auto& segment : dir.segments()) reused += spare_files.count(inode(segment));
  EXPECT_EQ(reused, 2u);
  auto store = open_log(dir.path(), small_segments());
  EXPECT_EQ(store->recovery().corrupt_segments, 0u);
  EXPECT_EQ(store->recovery().torn_bytes, 0u);
  auto pending = store->pending(2, 0, 1000);
  ASSERT_EQ(pending.size(), kept.size());
  EXPECT_EQ(pending.front().sequence, kept.front());
  EXPECT_EQ(pending.back().sequence, kept.back());

  // With no spares allowed, the ones left over are deleted at start-up and emptied segments go.
  store.reset();
  LogOptions none = small_segments();
  none.spare_segments = 0;
  store = open_log(dir.path(), none);
  for (const auto& m : store->pending(2, 0, 1000)) store->acknowledge(2, m.sequence);
  ASSERT_TRUE(store->commit());
  EXPECT_EQ(store->spare_count(), 0u);
  EXPECT_TRUE(dir.spares().empty());
  EXPECT_EQ(dir.segments().size(), 1u);
}

TEST(LogStore, ABacklogReadInRunsGivesEveryPayloadBackExactly) {
  // pending() reads runs of nearby records with one pread: runs must break at segment ends, at
  // gaps (another recipient's big record), at the bytes not yet written, and never mix payloads.
  TempDir dir;
  auto payload_of = [](std::uint64_t i) {
    std::vector<std::uint8_t> p(i % 7 == 0 ? 0 : 1 + (i * 37) % 300);
    for (std::size_t k = 0; k < p.size(); ++k) p[k] = static_cast<std::uint8_t>(i * 131 + k);
    return p;
  };
  std::vector<std::uint8_t> big(8000, 'b');
  std::vector<std::uint64_t> ids;
  {
    auto store = open_log(dir.path(), small_segments(64 * 1024));
    for (std::uint64_t i = 1; i <= 600; ++i) {
      ASSERT_EQ(store->append(delivery(1, 2, i), payload_of(i), false, 0).status, AppendStatus::Stored);
      ids.push_back(i);
      if (i % 50 == 0) {
        ASSERT_EQ(store->append(delivery(1, 3, 10'000 + i), big, false, 0).status, AppendStatus::Stored);
      }
      if (i % 5 == 0) {
        ASSERT_EQ(store->append(delivery(1, 3, 20'000 + i), payload_of(i), false, 0).status, AppendStatus::Stored);
      }
    }
    ASSERT_TRUE(store->commit());
    EXPECT_GT(store->segment_count(), 2u);
  }
  auto store = open_log(dir.path(), small_segments(64 * 1024));
  // A few more that are still in the write buffer, not in the file.
  for (std::uint64_t i = 601; i <= 610; ++i) {
    ASSERT_EQ(store->append(delivery(1, 2, i), payload_of(i), false, 0).status, AppendStatus::Stored);
    ids.push_back(i);
  }
  // And a recipient whose records sit just past other records at the start of each tiny segment:
  // two of its records in different segments may lie close by offset, yet in different files.
  {
    TempDir tiny;
    {
      // Segments alternate: [mine, medium filler] and [small filler, mine], so two of mine in
      // neighbouring files lie at nearby offsets.
      auto small = open_log(tiny.path(), small_segments(1024));
      std::vector<std::uint8_t> medium_filler(750, 'f');
      std::vector<std::uint8_t> small_filler(300, 'g');
      for (std::uint64_t i = 1; i <= 40; ++i) {
        std::vector<std::uint8_t> mine(10, static_cast<std::uint8_t>(i));
        ASSERT_EQ(small->append(delivery(1, 4, i), mine, false, 0).status, AppendStatus::Stored);
        ASSERT_EQ(small->append(delivery(1, 5, 1000 + i), medium_filler, false, 0).status, AppendStatus::Stored);
        ASSERT_EQ(small->append(delivery(1, 5, 2000 + i), small_filler, false, 0).status, AppendStatus::Stored);
      }
      ASSERT_TRUE(small->commit());
      EXPECT_GE(small->segment_count(), 20u);
    }
    auto small = open_log(tiny.path(), small_segments(1024));
    auto backlog = small->pending(4, 0, 100);
    ASSERT_EQ(backlog.size(), 40u);
    for (std::uint64_t i = 1; i <= 40; ++i) {
      EXPECT_EQ(backlog[i - 1].payload, std::vector<std::uint8_t>(10, static_cast<std::uint8_t>(i))) << "message " << i;
    }
  }

  std::vector<core::StoredMessage> all;
  std::uint64_t after = 0;
  for (;;) {
    auto batch = store->pending(2, after, 128);
    if (batch.empty()) break;
    after = batch.back().sequence;
    for (auto& m : batch) all.push_back(std::move(m));
  }
  ASSERT_EQ(all.size(), ids.size());
  for (std::size_t k = 0; k < all.size(); ++k) {
    EXPECT_EQ(all[k].message_id, ids[k]);
    EXPECT_EQ(all[k].payload, payload_of(ids[k])) << "message " << ids[k];
  }
}

TEST(LogStore, ARemovalIsNeverForgottenBeforeTheMessageItRemoves) {
  TempDir dir;
  std::vector<std::uint8_t> payload(200, 'x');
  {
    auto store = open_log(dir.path(), small_segments());
    // The first segment: messages for 2, and enough for the offline 7 that it stays as it is.
    std::vector<std::uint64_t> for_two;
    for (std::uint64_t i = 1; i <= 16; ++i) {
      auto s = store->append(delivery(1, i % 3 == 0 ? 7 : 2, i), payload, false, 0).sequence;
      if (i % 3 != 0) for_two.push_back(s);
    }
    ASSERT_EQ(store->segment_count(), 1u);
    for_two.push_back(store->append(delivery(1, 2, 17), payload, false, 0).sequence);
    ASSERT_TRUE(store->commit());
    ASSERT_EQ(store->segment_count(), 2u);
    // 2 takes its messages: the removals go into the second segment, which then fills with
    // traffic that is taken at once, and the log moves on.
    for (std::uint64_t s : for_two) store->acknowledge(2, s);
    for (std::uint64_t i = 18; i <= 60; ++i) {
      auto s = store->append(delivery(1, 2, i), payload, false, 0).sequence;
      store->acknowledge(2, s);
    }
    ASSERT_TRUE(store->commit());
    // Nothing of the second segment is held, but it alone says that 2's first messages are gone.
    EXPECT_TRUE(fs::exists(dir.path() + "/log/00000000000000000002.seg"));
  }
  auto store = open_log(dir.path(), small_segments());
  EXPECT_TRUE(store->pending(2, 0, 1000).empty()) << "acknowledged messages came back";
  EXPECT_EQ(store->pending(7, 0, 1000).size(), 5u);
}

// --log-segment-bytes may change across a restart: the newest segment goes on taking records up to
// the new size, or, already past it, the next record starts a new one.
TEST(LogStore, ASegmentSizeChangedAcrossARestartAppliesToTheNewestSegment) {
  TempDir dir;
  const std::vector<std::uint8_t> payload(1000, 'p');
  std::vector<std::string> held;
  const auto append_committed = [&](LogStore& store, std::size_t count) {
    for (std::size_t k = 0; k < count; ++k) {
      store.append(delivery(1, 2, held.size() + 1), payload, false, 0);
      held.push_back(std::string(payload.begin(), payload.end()));
    }
    ASSERT_TRUE(store.commit());
  };
  {
    auto store = open_log(dir.path(), small_segments(64 * 1024));
    ASSERT_NO_FATAL_FAILURE(append_committed(*store, 40));  // about 42 KB, in the first segment
    EXPECT_EQ(store->segment_count(), 1u);
  }
  {
    auto store = open_log(dir.path(), small_segments(256 * 1024));
    ASSERT_NO_FATAL_FAILURE(append_committed(*store, 100));  // about 147 KB in all: still room
    EXPECT_EQ(store->segment_count(), 1u);
  }
  {
    auto store = open_log(dir.path(), small_segments(64 * 1024));
    ASSERT_NO_FATAL_FAILURE(append_committed(*store, 1));
    EXPECT_EQ(store->segment_count(), 2u) << "the newest segment is past the new size";
    EXPECT_LE(fs::file_size(dir.segments().back()), 64u * 1024);
  }
  expect_reopened_inbox(dir, 2, held);
}

TEST(LogStore, AFewMessagesForAnOfflineRecipientDoNotPinTheirSegment) {
  TempDir dir;
  std::uint64_t kept = 0;
  {
    auto store = open_log(dir.path(), small_segments());
    kept = store->append(delivery(1, 99, 1), bytes("for the offline one"), true, 0).sequence;
    traffic_taken_at_once(*store, 2, 2000);
    EXPECT_LE(store->segment_count(), 3u);
    // Each compaction copied that one message, and nothing else, forward.
    const core::StoreStats stats = store->stats();
    EXPECT_GT(stats.compactions, 1u);
    EXPECT_EQ(stats.compacted_bytes, stats.compactions * log::append_record_size(19));
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/log/00000000000000000001.seg")) << "the first segment was compacted away";
  EXPECT_LE(dir.segments().size(), 3u);
  auto store = open_log(dir.path(), small_segments());
  auto pending = store->pending(99, 0, 10);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].sequence, kept);
  EXPECT_TRUE(pending[0].receipt_requested);
  EXPECT_EQ(text(pending[0].payload), "for the offline one");
  EXPECT_EQ(store->stats().held_messages, 1u);
}

// Compaction copies a step of held records per commit (compaction_step_bytes, at least one record),
// not a segment's at once: the copies go into one commit, whose write every message in it waits for.
// The steps are taken off one plan of the segment.
TEST(LogStore, CompactionCopiesAStepPerCommit) {
  TempDir dir;
  LogOptions options = small_segments(64 * 1024);
  options.compaction_step_bytes = 4096;  // one record of the offline recipient's (2,000 bytes and more) a step
  std::vector<std::string> offline;
  {
    auto store = open_log(dir.path(), options);
    for (int k = 0; k < 6; ++k) {
      offline.push_back(std::string(2000, static_cast<char>('a' + k)));
      store->append(delivery(1, 99, k + 1), bytes(offline.back()), false, 0);
    }
    // Each segment is planned once, and its steps taken off the plan: a plan walks the index.
    auto lines = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(10000);
    auto& logger = *spdlog::default_logger();
    const spdlog::level::level_enum level = logger.level();
    logger.sinks().push_back(lines);
    logger.set_level(spdlog::level::debug);
    traffic_taken_at_once(*store, 100, 1500);
    logger.set_level(level);
    logger.sinks().erase(std::find(logger.sinks().begin(), logger.sinks().end(), lines));
    const auto logged = lines->last_formatted();
    const auto plans = std::count_if(logged.begin(), logged.end(), [](const std::string& line) {
      return line.find("planning the compaction of") != std::string::npos;
    });
    const core::StoreStats stats = store->stats();
    EXPECT_GE(stats.compactions, offline.size());
    EXPECT_LE(stats.compacted_bytes, stats.compactions * options.compaction_step_bytes);
    EXPECT_GT(stats.compacted_bytes, 0u);
    EXPECT_GT(plans, 0);
    EXPECT_LT(static_cast<std::uint64_t>(plans), stats.compactions);
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/log/00000000000000000001.seg")) << "the first segment was compacted away";
  expect_reopened_inbox(dir, 99, offline);
}

// Compaction finds a segment's held records by sequence: those appended there from the segment's
// base sequence on, and copies of earlier ones in the inboxes that hold copies. A copy is copied
// again and again as traffic goes on, so no segment stays behind for it, and copies made before a
// restart are known as copies after it.
TEST(LogStore, CopiesAreFoundForCompactionAcrossRestarts) {
  TempDir dir;
  std::vector<std::string> offline;
  const auto segment_id = [](const fs::path& path) { return std::stoull(path.stem().string()); };
  for (int round = 0; round < 3; ++round) {
    auto store = open_log(dir.path(), small_segments());
    const std::string text = "offline " + std::to_string(round);
    store->append(delivery(1, 99, 100000 + static_cast<std::uint64_t>(round)), bytes(text), false, 0);
    offline.push_back(text);
    ASSERT_TRUE(store->commit());
    traffic_taken_at_once(*store, 1 + 2000 * static_cast<std::uint64_t>(round), 2000 * (round + 1));
    const auto segments = dir.segments();
    ASSERT_FALSE(segments.empty());
    EXPECT_GE(segment_id(segments.front()) + 3, segment_id(segments.back()))
        << "round " << round << ": segment " << segments.front() << " stayed behind";
  }
  auto store = open_log(dir.path(), small_segments());
  std::vector<std::string> got;
  for (const auto& m : store->pending(99, 0, 10)) got.push_back(text(m.payload));
  EXPECT_EQ(got, offline);
}

// Acknowledged messages leave their deadlines behind in the heap, which is rebuilt from the index
// once those outnumber the held messages. With a large backlog held, the rebuild goes a step per
// commit (at once it stopped the loop for 21-27 ms at 1.2 M messages), and expiry stays exact
// meanwhile and after: every held message expires once, at its deadline, and no other.
TEST(LogStore, DeadlinesAreRebuiltAStepPerCommitAndExpiryStaysExact) {
  TempDir dir;
  core::StoreLimits limits;
  limits.ttl_ms = 60'000;
  auto store = open_log(dir.path(), {}, limits);
  const std::vector<std::uint8_t> payload(8, 'd');
  constexpr std::uint64_t kBacklog = 40'000;
  for (std::uint64_t i = 1; i <= kBacklog; ++i) store->append(delivery(1, 2, i), payload, false, 0);
  ASSERT_TRUE(store->commit());
  // Messages taken at once leave stale deadlines, until the rebuild starts.
  std::uint64_t id = kBacklog;
  while (!store->rebuilding_deadlines()) {
    ++id;
    ASSERT_LT(id, 4 * kBacklog) << "no rebuild";
    store->acknowledge(3, store->append(delivery(1, 3, id), payload, false, 1'000).sequence);
  }
  // Held while it goes on: it must expire too.
  store->append(delivery(1, 4, ++id), payload, false, 2'000);
  EXPECT_TRUE(store->expire(30'000).empty());
  int commits = 0;
  while (store->rebuilding_deadlines()) {
    ASSERT_TRUE(store->commit());
    ++commits;
    ASSERT_LE(commits, 10);
    EXPECT_TRUE(store->expire(30'000 + commits).empty());
  }
  EXPECT_GE(commits, 2) << "rebuilt at once";
  EXPECT_LE(commits, 3);
  auto expired = store->expire(61'000);
  EXPECT_EQ(expired.size(), kBacklog);
  std::set<std::uint64_t> once;
  for (const auto& m : expired) {
    EXPECT_EQ(m.recipient, 2);
    EXPECT_TRUE(once.insert(m.sequence).second) << "expired twice: " << m.sequence;
  }
  expired = store->expire(62'000);
  ASSERT_EQ(expired.size(), 1u);
  EXPECT_EQ(expired[0].recipient, 4);
  EXPECT_TRUE(store->expire(3'600'000).empty());
  EXPECT_EQ(store->stats().held_messages, 0u);
}

// Messages in a segment closed a moment ago are mostly about to be acknowledged: they are copied
// forward only once the segment has been closed for compact_after_ms. Segments found at start-up
// count as closed long ago.
TEST(LogStore, ASegmentIsCompactedOnlyOnceItHasBeenClosedForAWhile) {
  TempDir dir;
  const std::string first = dir.path() + "/log/00000000000000000001.seg";
  {
    LogOptions options = small_segments();
    options.compact_after_ms = 3'600'000;
    auto store = open_log(dir.path(), options);
    store->append(delivery(1, 99, 1), bytes("for the offline one"), false, 0);
    traffic_taken_at_once(*store, 2, 501);
    EXPECT_TRUE(fs::exists(first)) << "compacted before it had been closed an hour";
  }
  {
    LogOptions options = small_segments();
    options.compact_after_ms = 3'600'000;
    auto store = open_log(dir.path(), options);
    traffic_taken_at_once(*store, 1000, 1499);
    EXPECT_FALSE(fs::exists(first)) << "found at start-up, it was closed long ago";
  }
  auto store = open_log(dir.path());
  auto pending = store->pending(99, 0, 10);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(text(pending[0].payload), "for the offline one");
}

// No segment grows past segment_bytes, whose disk space it took when it started: a removal that
// does not fit starts the next segment, as a message does, and compaction copies held messages into
// the active segment only when they fit (otherwise they wait for the next one).
TEST(LogStore, NoSegmentGrowsPastItsSizeWithRemovalsOrCompactedCopies) {
  TempDir dir;
  constexpr std::size_t kSegment = 8192;
  std::vector<std::string> held;
  std::uint64_t message_id = 0;
  {
    auto store = open_log(dir.path(), small_segments(kSegment));
    const auto expect_no_segment_too_large = [&] {
      for (const auto& segment : dir.segments()) {
        ASSERT_LE(fs::file_size(segment), kSegment) << segment << " after message " << message_id;
      }
    };
    const auto pass_one = [&] {
      ++message_id;
      traffic_taken_at_once(*store, message_id, message_id);
      expect_no_segment_too_large();
    };
    for (core::ClientId late = 3; late < 13; ++late) {
      // A segment's worth for a recipient that comes back later and takes all but a few: its
      // segment becomes worth compacting at some point of the traffic after it, so the active
      // segment is full to a different degree each time.
      std::vector<std::uint64_t> sequences;
      for (int k = 0; k < 24; ++k) {
        const std::string text = "for " + std::to_string(late) + ": " + std::to_string(k) + std::string(280, '.');
        auto result = store->append(delivery(1, late, ++message_id), bytes(text), false, 0);
        ASSERT_EQ(result.status, AppendStatus::Stored);
        sequences.push_back(result.sequence);
        if (k >= 20) held.push_back(text);
      }
      ASSERT_TRUE(store->commit());
      for (int k = 0; k < 40 + 3 * late; ++k) pass_one();
      for (int k = 0; k < 20; ++k) {
        store->acknowledge(late, sequences[static_cast<std::size_t>(k)]);
        ASSERT_TRUE(store->commit());
        pass_one();
      }
    }
    // 42 segments were written and 14 are left; without compaction 25 would be (every one that
    // holds some of a late recipient's last four, and those cancelling records in them).
    EXPECT_LE(dir.segments().size(), 18u) << "compaction did not run";
  }
  std::vector<std::string> reopened;
  auto store = open_log(dir.path());
  for (core::ClientId late = 3; late < 13; ++late) {
    for (const auto& m : store->pending(late, 0, 100)) reopened.push_back(text(m.payload));
  }
  EXPECT_EQ(reopened, held);
}

// Compaction reads each held record where the index says it is, and checks it: one damaged since
// start-up stays where it is, with its segment, rather than be copied forward as it now reads.
TEST(LogStore, CompactionLeavesARecordDamagedSinceStartUpWhereItIs) {
  TempDir dir;
  auto store = open_log(dir.path(), small_segments());
  store->append(delivery(1, 99, 1), bytes("for the offline one"), false, 0);
  ASSERT_TRUE(store->commit());
  const std::string first = dir.path() + "/log/00000000000000000001.seg";
  {
    // The payload's first byte, just past the header and the record's fixed fields.
    std::fstream file(first, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(log::kHeaderSize + log::kPayloadOffset));
    file.put('F');
  }
  traffic_taken_at_once(*store, 2, 500);
  EXPECT_TRUE(fs::exists(first)) << "its damaged record was copied forward";
  EXPECT_EQ(store->stats().held_messages, 1u);
}

TEST(LogStore, ADamagedOlderSegmentIsReportedAndTheRestIsServed) {
  TempDir dir;
  std::vector<std::uint8_t> payload(200, 'x');
  {
    auto store = open_log(dir.path(), small_segments());
    for (std::uint64_t i = 1; i <= 60; ++i) store->append(delivery(1, 2, i), payload, false, 0);
    ASSERT_TRUE(store->commit());
  }
  auto segments = dir.segments();
  ASSERT_GE(segments.size(), 3u);
  {
    // One flipped bit in the middle of the first segment.
    std::fstream f(segments.front(), std::ios::binary | std::ios::in | std::ios::out);
    f.seekg(2000);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x01;
    f.seekp(2000);
    f.write(&c, 1);
  }
  auto store = open_log(dir.path(), small_segments());
  EXPECT_EQ(store->recovery().corrupt_segments, 1u);
  auto pending = store->pending(2, 0, 1000);
  EXPECT_LT(pending.size(), 60u);
  EXPECT_GT(pending.size(), 40u);
  EXPECT_EQ(pending.back().message_id, 60u) << "later segments are read in full";
  EXPECT_EQ(store->append(delivery(1, 2, 61), payload, false, 0).status, AppendStatus::Stored);
}

TEST(LogStore, RetriesOfHeldMessagesAreRecognisedAfterARestart) {
  TempDir dir;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  std::uint64_t first = 0;
  {
    auto store = open_log(dir.path());
    first = store->append(delivery(1, 2, 77), bytes("a"), false, now).sequence;
    ASSERT_TRUE(store->commit());
  }
  auto store = open_log(dir.path());
  auto again = store->append(delivery(1, 2, 77), bytes("a"), false, now);
  EXPECT_EQ(again.status, AppendStatus::Duplicate);
  EXPECT_EQ(again.sequence, first);
}

TEST(LogStore, TheDedupeMemoryIsBounded) {
  TempDir dir;
  LogOptions options;
  options.dedupe_max_ranges = 10;
  auto store = open_log(dir.path(), options);
  // Ids that do not count up: a range each.
  for (std::uint64_t i = 1; i <= 20; ++i) store->append(delivery(1, 2, i * 10), bytes("a"), false, static_cast<std::int64_t>(i));
  EXPECT_EQ(store->append(delivery(1, 2, 200), bytes("a"), false, 21).status, AppendStatus::Duplicate);
  EXPECT_EQ(store->append(delivery(1, 2, 10), bytes("a"), false, 22).status, AppendStatus::Stored)
      << "the least recently used ids are forgotten first";
}

// The sync thread: commit_async returns at once, and each commit's completion arrives through the
// owner's post, in the order the commits were started, with what they held durable.
TEST(LogStore, CommitsOnTheSyncThreadCompleteInOrderThroughPost) {
  TempDir dir;
  std::mutex mutex;
  std::condition_variable posted_cv;
  std::vector<std::function<void()>> posted;
  std::vector<int> completed;
  {
    auto store = open_log(dir.path());
    store->sync_on_thread([&](std::function<void()> done) {
      std::lock_guard lock(mutex);
      posted.push_back(std::move(done));
      posted_cv.notify_one();
    });
    store->append(delivery(1, 2, 1), bytes("one"), false, 0);
    store->commit_async([&](Result<void, Error> r) { completed.push_back(r ? 1 : -1); });
    store->append(delivery(1, 2, 2), bytes("two"), false, 0);
    store->commit_async([&](Result<void, Error> r) { completed.push_back(r ? 2 : -2); });
    store->commit_async([&](Result<void, Error> r) { completed.push_back(r ? 3 : -3); });  // nothing in it
    EXPECT_FALSE(store->dirty());
    // Reads see what is on its way to the disk, and nothing completes where the owner is not.
    EXPECT_EQ(store->pending(2, 0, 10).size(), 2u);
    EXPECT_TRUE(completed.empty());
    // Commits that queue while a sync runs share the next one, so a post may complete several.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (completed.size() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::vector<std::function<void()>> batch;
      {
        std::unique_lock lock(mutex);
        posted_cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !posted.empty(); });
        batch.swap(posted);
      }
      for (auto& done : batch) done();
    }
    EXPECT_EQ(completed, (std::vector<int>{1, 2, 3}));
    EXPECT_EQ(store->stats().commits, 3u);
  }
  auto store = open_log(dir.path());
  auto pending = store->pending(2, 0, 10);
  ASSERT_EQ(pending.size(), 2u);
  EXPECT_EQ(text(pending[1].payload), "two");
}

// Nothing waits for an acknowledgement's Remove record, so a batch of them alone completes at once
// unless a commit is ahead of it; it is on disk after the next commit that holds messages.
TEST(LogStore, ABatchOfAcknowledgementsAloneDoesNotWaitForTheDisk) {
  TempDir dir;
  std::mutex mutex;
  std::vector<std::function<void()>> posted;
  std::vector<int> completed;
  std::uint64_t kept = 0;
  {
    auto store = open_log(dir.path());
    store->sync_on_thread([&](std::function<void()> done) {
      std::lock_guard lock(mutex);
      posted.push_back(std::move(done));
    });
    auto commit = [&](int id) {
      store->commit_async([&completed, id](Result<void, Error> r) { completed.push_back(r ? id : -id); });
    };
    auto run_posted_until = [&](std::size_t count) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (completed.size() < count && std::chrono::steady_clock::now() < deadline) {
        std::vector<std::function<void()>> batch;
        {
          std::lock_guard lock(mutex);
          batch.swap(posted);
        }
        for (auto& done : batch) done();
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    };
    const auto first = store->append(delivery(1, 2, 1), bytes("one"), false, 0).sequence;
    commit(1);
    EXPECT_TRUE(completed.empty());  // a message waits for its fdatasync
    run_posted_until(1);
    ASSERT_EQ(completed, (std::vector<int>{1}));
    const std::uint64_t syncs = store->stats().syncs;
    EXPECT_GT(syncs, 0u);

    ASSERT_TRUE(store->acknowledge(2, first));
    commit(2);
    EXPECT_EQ(completed, (std::vector<int>{1, 2}));  // done before commit_async returned
    EXPECT_EQ(store->stats().syncs, syncs);          // and without an fdatasync

    // Behind a commit still on its way to the disk, acknowledgements wait their turn.
    const auto second = store->append(delivery(1, 2, 2), bytes("two"), false, 0).sequence;
    commit(3);
    ASSERT_TRUE(store->acknowledge(2, second));
    commit(4);
    kept = store->append(delivery(1, 2, 3), bytes("three"), false, 0).sequence;
    commit(5);
    EXPECT_EQ(completed, (std::vector<int>{1, 2}));
    run_posted_until(5);
    EXPECT_EQ(completed, (std::vector<int>{1, 2, 3, 4, 5}));
    EXPECT_GT(store->stats().syncs, syncs);
    EXPECT_EQ(store->stats().commits, 5u);
  }
  auto store = open_log(dir.path());
  auto pending = store->pending(2, 0, 10);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].sequence, kept);
  EXPECT_EQ(text(pending[0].payload), "three");
}

// Segments the sync thread still holds are not deleted under it, and compaction's originals stay
// until the commit with their copies completes; everything ends as it would without the thread
// (compaction's reads there run on a thread of their own, and complete through post too).
TEST(LogStore, ReclaimAndCompactionWaitForTheSyncThread) {
  TempDir dir;
  std::vector<std::function<void()>> posted;
  std::mutex mutex;
  std::uint64_t kept = 0;
  {
    auto store = open_log(dir.path(), small_segments());
    store->sync_on_thread([&](std::function<void()> done) {
      std::lock_guard lock(mutex);
      posted.push_back(std::move(done));
    });
    auto run_posted = [&] {
      for (;;) {
        std::vector<std::function<void()>> batch;
        {
          std::lock_guard lock(mutex);
          batch.swap(posted);
        }
        if (batch.empty()) return;
        for (auto& done : batch) done();
      }
    };
    std::vector<std::uint8_t> payload(200, 'x');
    int outstanding = 0;
    auto commit = [&] {
      ++outstanding;
      store->commit_async([&](Result<void, Error> r) {
        ASSERT_TRUE(r) << r.error().message;
        --outstanding;
      });
    };
    kept = store->append(delivery(1, 99, 1), bytes("for the offline one"), false, 0).sequence;
    for (std::uint64_t i = 2; i <= 2000; ++i) {
      auto s = store->append(delivery(1, 2, i), payload, false, 0).sequence;
      commit();
      store->acknowledge(2, s);
      commit();
      if (i % 7 == 0) run_posted();  // completions lag behind, as on a busy loop
    }
    for (int spins = 0; (outstanding > 0 || store->compacting()) && spins < 1000; ++spins) {
      run_posted();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ASSERT_EQ(outstanding, 0);
    commit();  // one more round, so that the last compaction's original can go
    for (int spins = 0; (outstanding > 0 || store->compacting()) && spins < 1000; ++spins) {
      run_posted();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_LE(store->segment_count(), 3u);
  }
  EXPECT_FALSE(fs::exists(dir.path() + "/log/00000000000000000001.seg"));
  auto store = open_log(dir.path(), small_segments());
  auto pending = store->pending(99, 0, 10);
  ASSERT_EQ(pending.size(), 1u);
  EXPECT_EQ(pending[0].sequence, kept);
  EXPECT_EQ(text(pending[0].payload), "for the offline one");
  EXPECT_TRUE(store->pending(2, 0, 10000).empty());
}

// Completions the sync thread posts, run when the test says, as the owner's event loop would.
class Posted {
 public:
  LogStore::Post post() {
    return [this](std::function<void()> done) {
      std::lock_guard lock(mutex_);
      posted_.push_back(std::move(done));
    };
  }
  void run() {
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lock(mutex_);
      batch.swap(posted_);
    }
    for (auto& done : batch) done();
  }
  // Runs completions until pred() holds; false after 10 s.
  template <typename Pred>
  bool run_until(Pred pred) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      run();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

 private:
  std::mutex mutex_;
  std::vector<std::function<void()>> posted_;
};

// Commits through the sync thread, each expected to succeed, counted until their completions ran.
class AsyncCommits {
 public:
  explicit AsyncCommits(LogStore& store) : store_(store) {}
  void start() {
    ++outstanding_;
    store_.commit_async([this](Result<void, Error> r) {
      EXPECT_TRUE(r) << r.error().message;
      --outstanding_;
    });
  }
  int outstanding() const { return outstanding_; }
  // Runs posted completions until every commit started has completed; false after 10 s.
  bool drain(Posted& posted) {
    return posted.run_until([this] { return outstanding_ == 0; });
  }

 private:
  LogStore& store_;
  int outstanding_ = 0;
};

// Through the sync thread a commit is timed from its start to its completion on the owner's thread:
// the time its messages wait for their answers and deliveries.
TEST(LogStore, ACommitThroughTheSyncThreadIsTimedUntilItsCompletionRuns) {
  TempDir dir;
  Posted posted;
  auto store = open_log(dir.path());
  store->sync_on_thread(posted.post());
  AsyncCommits commits(*store);
  const auto message = store->append(delivery(1, 2, 1), bytes("timed"), false, 0);
  commits.start();
  // Held back from running, the completion keeps the commit open.
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ASSERT_TRUE(commits.drain(posted));
  EXPECT_EQ(store->stats().commit_times.count(), 1u);
  EXPECT_GE(store->stats().commit_times.sum_ns(), 30'000'000u);
  store->acknowledge(2, message.sequence);
  commits.start();
  ASSERT_TRUE(commits.drain(posted));
  const core::StoreStats stats = store->stats();
  EXPECT_EQ(stats.commit_times.count(), 1u) << "a commit of an acknowledgement alone was timed";
  EXPECT_GE(stats.sync_times.count(), 1u);
  EXPECT_EQ(stats.sync_times.count(), stats.syncs);
}

// With the sync thread, compaction reads a segment's held records on a thread of its own and
// copies them through post: the owner's thread never waits for the reads. A message acknowledged
// while its record is read is not copied, and the segment, whose file the reader holds, is not
// deleted under it even once nothing in it is held.
TEST(LogStore, CompactionReadsOnItsOwnThreadAndCopiesOnlyWhatIsStillHeld) {
  for (std::size_t acknowledged_meanwhile : {1u, 3u}) {
    SCOPED_TRACE(::testing::Message() << acknowledged_meanwhile << " acknowledged while read");
    TempDir dir;
    const std::string first = dir.path() + "/log/00000000000000000001.seg";
    std::vector<std::uint64_t> offline;
    std::vector<std::string> kept;
    {
      Posted posted;
      auto store = open_log(dir.path(), small_segments());
      store->sync_on_thread(posted.post());
      AsyncCommits commits(*store);
      auto commit = [&] { commits.start(); };
      auto run_commits = [&] { ASSERT_TRUE(commits.drain(posted)); };
      for (int k = 0; k < 3; ++k) {
        const std::string text = "for 99: " + std::to_string(k);
        offline.push_back(store->append(delivery(1, 99, 100 + k), bytes(text), false, 0).sequence);
        if (static_cast<std::size_t>(k) >= acknowledged_meanwhile) kept.push_back(text);
      }
      // Traffic taken at once, until the first segment is worth compacting and its reads start in
      // a commit's completion.
      const std::vector<std::uint8_t> payload(200, 'x');
      for (std::uint64_t i = 1; !store->compacting(); ++i) {
        ASSERT_LT(i, 2000u) << "no compaction started";
        auto s = store->append(delivery(1, 2, i), payload, false, 0).sequence;
        commit();
        run_commits();
        if (store->compacting()) break;
        store->acknowledge(2, s);
        commit();
        run_commits();
      }
      // The reads may be done, but nothing is copied until the owner runs their completion.
      for (std::size_t k = 0; k < acknowledged_meanwhile; ++k) ASSERT_TRUE(store->acknowledge(99, offline[k]));
      commit();  // Remove records alone, nothing ahead: completes at once, and tries to reclaim
      EXPECT_EQ(commits.outstanding(), 0);
      EXPECT_TRUE(store->compacting());
      EXPECT_TRUE(fs::exists(first)) << "deleted while compaction reads it";
      ASSERT_TRUE(posted.run_until([&] { return !store->compacting(); }));
      // Two rounds: the first commits the copies, the second may delete the original.
      for (int round = 0; round < 2; ++round) {
        store->append(delivery(1, 2, 5000 + round), payload, false, 0);
        commit();
        run_commits();
      }
      EXPECT_FALSE(fs::exists(first));
      EXPECT_EQ(store->stats().held_messages, kept.size() + 2);
    }
    expect_reopened_inbox(dir, 99, kept);
  }
}

// Whether dir's file system takes what the log's direct writes need: O_DIRECT writes of whole
// 4 KiB blocks, and fallocate.
bool takes_direct_io(const std::string& dir) {
  const std::string probe = dir + "/direct-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 64 * 1024) == 0;
  if (ok) {
    log::Bytes block(4096, 0);
    ok = ::pwrite(fd, block.data(), block.size(), 0) == static_cast<ssize_t>(block.size());
  }
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

std::vector<std::uint8_t> patterned(std::uint64_t i, std::size_t size) {
  std::vector<std::uint8_t> p(size);
  for (std::size_t k = 0; k < p.size(); ++k) p[k] = static_cast<std::uint8_t>(i * 131 + k * 7);
  return p;
}

// With the sync thread the records reach the file with O_DIRECT, in whole blocks, each write
// starting with the block the last one ended in. Until the thread has made a write, its records are
// read from memory; after, from the file; and a reopened log holds every record, wherever the block
// boundaries cut through them.
TEST(LogStore, DirectWritesGiveEveryRecordBackWhereverBlocksCutThroughIt) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  std::vector<std::vector<std::uint8_t>> sent;
  auto expect_inbox = [&](LogStore& store, const char* when) {
    auto held = store.pending(2, 0, 10'000);
    ASSERT_EQ(held.size(), sent.size()) << when;
    for (std::size_t k = 0; k < held.size(); ++k) EXPECT_EQ(held[k].payload, sent[k]) << when << ", message " << k;
  };
  {
    Posted posted;
    auto store = open_log(dir.path(), small_segments(256 * 1024));
    store->sync_on_thread(posted.post());
    ASSERT_TRUE(store->writes_direct());
    AsyncCommits commits(*store);
    auto commit = [&] { commits.start(); };
    for (std::uint64_t i = 1; i <= 400; ++i) {
      // 0 to 9,000 bytes: records end anywhere in a block, some span several.
      sent.push_back(patterned(i, (i * 997) % 9001));
      const auto appended = store->append(delivery(1, 2, i), sent.back(), false, 0);
      ASSERT_EQ(appended.status, AppendStatus::Stored);
      // Not written yet: read from the batch, behind the bytes of the file's last block.
      auto newest = store->pending(2, appended.sequence - 1, 1);
      ASSERT_EQ(newest.size(), 1u);
      EXPECT_EQ(newest[0].payload, sent.back()) << "message " << i << ", in the batch";
      if (i % 3 == 0) {
        commit();
        expect_inbox(*store, "on their way to the file");
      }
      if (i % 7 == 0) posted.run();
    }
    commit();
    ASSERT_TRUE(commits.drain(posted));
    expect_inbox(*store, "in the file");
    EXPECT_GE(store->segment_count(), 4u);
    // Written in whole blocks: a write through the page cache would end the file at its end mark.
    for (const auto& segment : dir.segments()) EXPECT_EQ(fs::file_size(segment) % 4096, 0u) << segment;
  }
  auto store = open_log(dir.path(), small_segments(256 * 1024));
  EXPECT_EQ(store->recovery().torn_bytes, 0u);
  expect_inbox(*store, "after a restart");
}

// Runs body against a log with direct writes on the sync thread, in a child process that then dies
// at once, with no destructor to write what is left (the sync thread stops wherever it is). The
// child's exit code: 0 if body returned it, 2 and up where the set-up or body failed.
int die_after(const std::string& dir, const LogOptions& options, const std::function<int(LogStore&, Posted&)>& body) {
  const pid_t child = ::fork();
  if (child < 0) return -1;
  if (child == 0) {
    Posted posted;
    auto store = LogStore::open(dir, SyncMode::Batch, {}, options);
    if (!store) ::_exit(2);
    (*store)->sync_on_thread(posted.post());
    if (!(*store)->writes_direct()) ::_exit(3);
    ::_exit(body(**store, posted));
  }
  int status = 0;
  if (::waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// A commit that completed is in the file when the process dies at once after it, with no destructor
// to write what is left; what was never completed may be lost, but only from the end.
TEST(LogStore, WhatADirectCommitCompletedSurvivesTheProcessDying) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  constexpr std::uint64_t kCompleted = 60;
  const int died = die_after(dir.path(), small_segments(1 << 20), [&](LogStore& store, Posted& posted) {
    std::uint64_t completed = 0;
    for (std::uint64_t i = 1; i <= kCompleted; ++i) {
      store.append(delivery(1, 2, i), patterned(i, 1000 + i * 37), false, 0);
      if (i % 4 == 0) store.commit_async([&completed, i](Result<void, Error> r) { completed = r ? i : 0; });
    }
    if (!posted.run_until([&] { return completed == kCompleted; })) return 4;
    for (std::uint64_t i = kCompleted + 1; i <= kCompleted + 20; ++i) {
      store.append(delivery(1, 2, i), patterned(i, 1000 + i * 37), false, 0);
    }
    store.commit_async([](Result<void, Error>) {});
    return 0;
  });
  ASSERT_EQ(died, 0);
  auto store = open_log(dir.path(), small_segments(1 << 20));
  auto held = store->pending(2, 0, 1000);
  ASSERT_GE(held.size(), kCompleted);
  for (std::size_t k = 0; k < held.size(); ++k) {
    EXPECT_EQ(held[k].message_id, k + 1);
    EXPECT_EQ(held[k].payload, patterned(k + 1, 1000 + (k + 1) * 37)) << "message " << k + 1;
  }
}

// Where the file system refuses O_DIRECT (ramfs; tmpfs before Linux 6.6), the loop writes through
// the page cache and the thread only syncs, as it did before direct writes.
TEST(LogStore, WhereODirectIsRefusedTheLogIsWrittenThroughThePageCache) {
  TempDir dir;
  testing::ScratchMount ramfs(dir.path(), "ramfs", "ramfs", "");
  if (!ramfs.mounted()) GTEST_SKIP() << "cannot mount a ramfs: " << ramfs.error();
  ASSERT_FALSE(takes_direct_io(ramfs.path())) << "ramfs took O_DIRECT";
  {
    Posted posted;
    auto store = open_log(ramfs.path());
    store->sync_on_thread(posted.post());
    EXPECT_FALSE(store->writes_direct());
    bool done = false;
    store->append(delivery(1, 2, 1), bytes("through the page cache"), false, 0);
    store->commit_async([&](Result<void, Error> r) { done = static_cast<bool>(r); });
    ASSERT_TRUE(posted.run_until([&] { return done; }));
  }
  auto store = open_log(ramfs.path());
  auto held = store->pending(2, 0, 10);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(text(held[0].payload), "through the page cache");
}

// A segment filled and closed since the last commit has its records' write still to make when
// the store closes: it is made then, before the rest of the batch is written through the page cache.
TEST(LogStore, ClosingTheStoreMakesTheWritesNotYetHandedToTheSyncThread) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  std::vector<std::string> sent;
  {
    Posted posted;
    auto store = open_log(dir.path(), small_segments(64 * 1024));
    store->sync_on_thread(posted.post());
    ASSERT_TRUE(store->writes_direct());
    for (int i = 1; i <= 40; ++i) {
      sent.push_back(std::string(3000, static_cast<char>('a' + i % 26)));
      store->append(delivery(1, 2, static_cast<std::uint64_t>(i)), bytes(sent.back()), false, 0);
    }
    ASSERT_GE(store->segment_count(), 2u);
  }
  expect_reopened_inbox(dir, 2, sent);
}

// Small segments that compaction leaves alone: its copies would make a batch of Remove records
// alone wait for the disk.
LogOptions small_uncompacted_segments(std::size_t bytes) {
  LogOptions options = small_segments(bytes);
  options.compact_after_ms = 3'600'000;
  return options;
}

// The file the segment after this one has (segment ids count up by one).
fs::path next_segment(const fs::path& segment) {
  char name[32];
  std::snprintf(name, sizeof name, "%020llu.seg", std::stoull(segment.stem().string()) + 1);
  return segment.parent_path() / name;
}

// Rounds of a few segments' worth of messages that recipient 2 takes together, through the sync
// thread, until the log keeps two spares (one segment at a time would leave one: each roll-over
// takes the spare that the segment before made).
void make_two_spares(LogStore& store, Posted& posted) {
  AsyncCommits commits(store);
  const std::vector<std::uint8_t> payload(3000, 's');
  std::uint64_t id = 0;
  for (int round = 0; store.spare_count() < 2 && round < 20; ++round) {
    std::vector<std::uint64_t> sequences;
    for (int k = 0; k < 50; ++k) sequences.push_back(store.append(delivery(1, 2, ++id), payload, false, 0).sequence);
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
    for (std::uint64_t sequence : sequences) store.acknowledge(2, sequence);
    for (int k = 0; k < 2; ++k) {  // the second reclaims what the first's renaming held back
      store.append(delivery(1, 2, ++id), payload, false, 0);
      commits.start();
      ASSERT_TRUE(commits.drain(posted));
    }
  }
  ASSERT_EQ(store.spare_count(), 2u);
}

// Appends 2,000-byte messages for recipient 3, never acknowledged, until one starts the next
// segment; kept collects their payloads.
void fill_the_active_segment(LogStore& store, std::vector<std::string>& kept) {
  const std::size_t segments = store.segment_count();
  for (std::uint64_t i = kept.size() + 1; store.segment_count() == segments; ++i) {
    ASSERT_LT(i, 200u);
    kept.push_back(std::string(2000, static_cast<char>('a' + i % 26)));
    store.append(delivery(5, 3, i), bytes(kept.back()), false, 0);
  }
}

// Recipient 3 holds kept, in order, read from the batch or the files.
void expect_held_for_3(LogStore& store, const std::vector<std::string>& kept) {
  const auto held = store.pending(3, 0, 1000);
  ASSERT_EQ(held.size(), kept.size());
  for (std::size_t k = 0; k < held.size(); ++k) EXPECT_TRUE(text(held[k].payload) == kept[k]) << "message " << k;
}

// Rolling over onto a spare waits for no disk on the owner's thread: the new segment's header goes
// with its first write and its name with its first sync, both on the sync thread (the synchronous
// way stopped the loop for 1.0–2.6 ms a segment at 16 KiB × 8 pairs). Until then the file keeps the
// spare's name, so a crash before finds it a spare, and its records are read from memory.
TEST(LogStore, ARollOverOntoASpareMakesNoSyncOnTheOwnersThread) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  std::vector<std::string> kept;  // for recipient 3, never acknowledged
  std::size_t named_at_close = 0;
  {
    Posted posted;
    auto store = open_log(dir.path(), small_segments(64 * 1024));
    store->sync_on_thread(posted.post());
    ASSERT_NO_FATAL_FAILURE(make_two_spares(*store, posted));
    const std::size_t named = dir.segments().size();
    const std::uint64_t syncs = store->stats().syncs;
    ASSERT_NO_FATAL_FAILURE(fill_the_active_segment(*store, kept));
    EXPECT_EQ(store->spare_count(), 1u);
    EXPECT_TRUE(store->writes_direct());
    EXPECT_EQ(store->stats().syncs, syncs);
    EXPECT_EQ(dir.segments().size(), named);
    ASSERT_NO_FATAL_FAILURE(expect_held_for_3(*store, kept));
    AsyncCommits commits(*store);
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
    EXPECT_GT(store->stats().syncs, syncs);
    EXPECT_EQ(dir.segments().size(), named + 1);
    EXPECT_EQ(dir.spares().size(), store->spare_count());
    // Another roll-over, with no write of the new segment made when the store closes: closing
    // writes its header and records and gives it its name.
    ASSERT_GT(store->spare_count(), 0u);
    ASSERT_NO_FATAL_FAILURE(fill_the_active_segment(*store, kept));
    EXPECT_EQ(dir.segments().size(), named + 1);
    named_at_close = dir.segments().size();
  }
  EXPECT_EQ(dir.segments().size(), named_at_close + 1);
  expect_reopened_inbox(dir, 3, kept);
}

// With no spare (the first segments after a start, or a backlog that grows) a new file is made the
// same way: created under a spare's name, written and named by the sync thread. Synchronously it
// stopped the loop for 0.7–2.7 ms a segment (header fdatasync, directory fsync, a direct write).
TEST(LogStore, ANewSegmentFileIsMadeWithNoSyncOnTheOwnersThread) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  std::vector<std::string> kept;  // for recipient 3, never acknowledged
  {
    Posted posted;
    auto store = open_log(dir.path(), small_segments(64 * 1024));
    store->sync_on_thread(posted.post());
    ASSERT_EQ(store->spare_count(), 0u);
    const std::uint64_t syncs = store->stats().syncs;
    ASSERT_NO_FATAL_FAILURE(fill_the_active_segment(*store, kept));
    EXPECT_TRUE(store->writes_direct());
    EXPECT_EQ(store->stats().syncs, syncs);
    EXPECT_EQ(dir.segments().size(), 1u);
    EXPECT_EQ(dir.spares().size(), 1u) << "the new file has a spare's name until its first sync";
    EXPECT_EQ(store->spare_count(), 0u) << "and is not one";
    ASSERT_NO_FATAL_FAILURE(expect_held_for_3(*store, kept));
    AsyncCommits commits(*store);
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
    EXPECT_GT(store->stats().syncs, syncs);
    EXPECT_EQ(dir.segments().size(), 2u);
    EXPECT_TRUE(dir.spares().empty());
    // Another, with no write of it made when the store closes: closing writes and names it.
    ASSERT_NO_FATAL_FAILURE(fill_the_active_segment(*store, kept));
    EXPECT_EQ(dir.segments().size(), 2u);
  }
  EXPECT_EQ(dir.segments().size(), 3u);
  EXPECT_TRUE(dir.spares().empty());
  expect_reopened_inbox(dir, 3, kept);
}

// A new file that dies with the process before its first sync is left under a spare's name: start-up
// reads no record from it, and sequences go on above every one a completed commit handed out.
TEST(LogStore, ANewSegmentFileLeftUnnamedByACrashIsNoSegment) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  constexpr std::uint64_t kCompleted = 20;
  const int died = die_after(dir.path(), small_segments(64 * 1024), [&](LogStore& store, Posted& posted) {
    bool completed = false;
    for (std::uint64_t i = 1; i <= kCompleted; ++i) store.append(delivery(1, 2, i), patterned(i, 2000), false, 0);
    store.commit_async([&completed](Result<void, Error> r) { completed = static_cast<bool>(r); });
    if (!posted.run_until([&] { return completed; })) return 4;
    const std::size_t segments = store.segment_count();
    for (std::uint64_t i = kCompleted + 1; store.segment_count() == segments; ++i) {
      if (i > 200) return 5;
      store.append(delivery(1, 2, i), patterned(i, 2000), false, 0);
    }
    return store.spare_count() == 0 ? 0 : 6;  // and no commit: the new file was never written
  });
  ASSERT_EQ(died, 0);
  ASSERT_EQ(dir.segments().size(), 1u);
  ASSERT_EQ(dir.spares().size(), 1u);
  auto store = open_log(dir.path(), small_segments(64 * 1024));
  EXPECT_EQ(store->recovery().torn_bytes, 0u);
  const auto held = store->pending(2, 0, 1000);
  ASSERT_GE(held.size(), kCompleted);
  for (std::size_t k = 0; k < held.size(); ++k) EXPECT_EQ(held[k].message_id, k + 1);
  const std::uint64_t next = store->append(delivery(1, 2, 500), bytes("after"), false, 0).sequence;
  EXPECT_GT(next, held.back().sequence);
  EXPECT_TRUE(dir.spares().empty()) << "an empty file is nobody's spare";
}

// A log of small segments with two spares and the sync thread, whose newest segment A holds one
// message, m, that fills it to where not even a Remove record fits after it: m's acknowledgement
// rolls over onto a spare, B, in a batch of Remove records alone, which completes at once while a
// job of its own syncs and names B.
class RollOverByARemoval : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
    store = open_log(dir.path(), options);
    store->sync_on_thread(posted.post());
    ASSERT_NO_FATAL_FAILURE(make_two_spares(*store, posted));
    const std::size_t fills = options.segment_bytes - log::kHeaderSize - log::kEndMarkSize - log::kPayloadOffset;
    m = store->append(delivery(5, 4, 1), patterned(1, fills), false, 0).sequence;
    commits = std::make_unique<AsyncCommits>(*store);
    commits->start();
    ASSERT_TRUE(commits->drain(posted));
    a = dir.segments().back();
  }
  TempDir dir;
  const LogOptions options = small_uncompacted_segments(64 * 1024);
  Posted posted;  // before the store, which posts to it
  std::unique_ptr<LogStore> store;
  std::unique_ptr<AsyncCommits> commits;
  std::uint64_t m = 0;
  fs::path a;
};

// The newest named segment's header keeps the floor of sequences, so it is not retired while the
// one after it still has a spare's name: a crash then would find no segment, and sequences would
// start again below those handed out. Older segments go as usual (holding them all back starved
// reclaiming when roll-overs came faster than commits completed). Here the reclaim after m's
// acknowledgement finds A, and P before it, empty while B is being synced and named on the sync
// thread.
TEST_F(RollOverByARemoval, OnlyTheNewestNamedSegmentStaysWhileANewerOneHasNoNameYet) {
  const auto named = dir.segments();
  ASSERT_GE(named.size(), 2u);
  const fs::path p = named[named.size() - 2];
  ASSERT_EQ(next_segment(p), a);
  const auto before_a = store->pending(2, 0, 1000);
  ASSERT_FALSE(before_a.empty());
  for (const auto& message : before_a) store->acknowledge(2, message.sequence);
  store->acknowledge(4, m);
  commits->start();
  EXPECT_EQ(commits->outstanding(), 0) << "Remove records alone complete at once";
  EXPECT_TRUE(fs::exists(a)) << "A was retired while B had no name";
  EXPECT_FALSE(fs::exists(p)) << "P waited for B's name too";
  // Once B's sync and rename complete, A goes.
  ASSERT_TRUE(posted.run_until([&] { return !fs::exists(a); }));
  EXPECT_TRUE(fs::exists(next_segment(a)));
}

// B named by the sync thread, whose completion never ran because the store closed first, is not
// renamed again when it closes (that failed, and logged an error).
TEST_F(RollOverByARemoval, ClosingAfterTheSyncThreadNamedTheNewOneRenamesNothingTwice) {
  auto errors = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  errors->set_level(spdlog::level::err);
  spdlog::default_logger()->sinks().push_back(errors);
  const fs::path b = next_segment(a);
  store->acknowledge(4, m);
  commits->start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!fs::exists(b) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(fs::exists(b));
  store.reset();  // B's completion never runs
  auto& sinks = spdlog::default_logger()->sinks();
  sinks.erase(std::find(sinks.begin(), sinks.end(), errors));
  EXPECT_TRUE(errors->last_formatted().empty()) << errors->last_formatted().front();
  EXPECT_TRUE(open_log(dir.path(), options)->pending(4, 0, 10).empty());
}

// A segment whose Remove records cancel those of a retired one stays until that retirement (the
// rename and the directory's fsync, a job of the sync thread's) is on disk: otherwise a crash could
// find the retired segment's records under its old name, and no Remove for them. Here S1 is retired
// and its directory job's completion held back while S2, whose Removes cancel S1's records, empties.
TEST(LogStore, ARemovalStaysUntilTheRetirementOfWhatItCancelsIsOnDisk) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  Posted posted;
  auto store = open_log(dir.path(), small_uncompacted_segments(64 * 1024));
  store->sync_on_thread(posted.post());
  AsyncCommits commits(*store);
  std::uint64_t message_id = 0;
  // Appends for recipient until a message starts the next segment: the sequences of those before it,
  // and that one's.
  const auto fill = [&](core::ClientId recipient, std::vector<std::uint64_t>& before) {
    const std::size_t segments = store->segment_count();
    for (;;) {
      ++message_id;
      const std::uint64_t sequence =
          store->append(delivery(1, recipient, message_id), patterned(message_id, 2000), false, 0).sequence;
      if (store->segment_count() != segments) return sequence;
      before.push_back(sequence);
    }
  };
  std::vector<std::uint64_t> in_s1;  // recipient 2's
  std::vector<std::uint64_t> in_s2;  // recipient 3's, but for the first
  in_s2.push_back(fill(2, in_s1));   // that one is recipient 2's, and starts S2
  commits.start();
  ASSERT_TRUE(commits.drain(posted));
  for (std::size_t k = 1; k < in_s1.size(); ++k) store->acknowledge(2, in_s1[k]);  // Removes in S2
  const std::uint64_t in_s3 = fill(3, in_s2);
  commits.start();
  ASSERT_TRUE(commits.drain(posted));
  const auto segments = dir.segments();
  ASSERT_EQ(segments.size(), 3u);
  const fs::path s1 = segments[0], s2 = segments[1];
  store->acknowledge(2, in_s1[0]);  // S1 empties: retired, its directory job's completion held back
  commits.start();
  ASSERT_EQ(commits.outstanding(), 0) << "Remove records alone complete at once";
  EXPECT_FALSE(fs::exists(s1));
  store->acknowledge(2, in_s2[0]);
  for (std::size_t k = 1; k < in_s2.size(); ++k) store->acknowledge(3, in_s2[k]);
  commits.start();  // S2 empties too
  ASSERT_EQ(commits.outstanding(), 0);
  EXPECT_TRUE(fs::exists(s2)) << "S2 went while S1's retirement was not known to be on disk";
  ASSERT_TRUE(posted.run_until([&] { return !fs::exists(s2); }));
  store.reset();
  auto reopened = open_log(dir.path(), small_uncompacted_segments(64 * 1024));
  EXPECT_TRUE(reopened->pending(2, 0, 1000).empty());
  const auto held = reopened->pending(3, 0, 1000);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0].sequence, in_s3);
}

// With the sync thread, the directory's fsync after segments are retired is a job of its own,
// which no commit waits for, and so are the sync and the name of a segment taken from a spare that
// Remove records alone filled. So a backlog that is taken with no new messages arriving frees its
// segments all the same, those whose Remove records cancel the others' included, once each
// retirement is on disk.
TEST(LogStore, ABacklogTakenWithNoNewMessagesFreesItsSegments) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  const LogOptions options = small_uncompacted_segments(64 * 1024);
  Posted posted;
  auto store = open_log(dir.path(), options);
  store->sync_on_thread(posted.post());
  AsyncCommits commits(*store);
  // About seven segments held for recipient 4.
  std::vector<std::uint64_t> backlog;
  const std::vector<std::uint8_t> payload(3000, 'b');
  for (std::uint64_t i = 1; i <= 150; ++i) {
    backlog.push_back(store->append(delivery(5, 4, i), payload, false, 0).sequence);
  }
  commits.start();
  ASSERT_TRUE(commits.drain(posted));
  ASSERT_NO_FATAL_FAILURE(make_two_spares(*store, posted));
  for (const auto& m : store->pending(2, 0, 1000)) store->acknowledge(2, m.sequence);
  // Last, one that fills a segment of its own to where not even a Remove record fits after it: the
  // first acknowledgement's record rolls over onto a spare.
  const std::size_t fills = options.segment_bytes - log::kHeaderSize - log::kEndMarkSize - log::kPayloadOffset;
  backlog.push_back(store->append(delivery(5, 4, 151), patterned(151, fills), false, 0).sequence);
  commits.start();
  ASSERT_TRUE(commits.drain(posted));
  ASSERT_GT(store->spare_count(), 0u);
  const std::size_t held = store->segment_count();
  ASSERT_GE(held, 8u);
  const std::uint64_t syncs = store->stats().syncs;
  const fs::path newest = dir.segments().back();
  // Taken a message at a time, as a reconnecting recipient would.
  for (std::uint64_t sequence : backlog) {
    ASSERT_TRUE(store->acknowledge(4, sequence).has_value());
    commits.start();
    posted.run();
  }
  EXPECT_EQ(store->stats().held_messages, 0u);
  // No commit from here on: what is left to free goes through the jobs no commit waits for.
  EXPECT_TRUE(posted.run_until([&] { return store->segment_count() == 1; }))
      << store->segment_count() << " segments left of " << held;
  ASSERT_EQ(dir.segments().size(), 1u);
  EXPECT_GT(dir.segments().back(), newest) << "no acknowledgement's record rolled over";
  EXPECT_GT(store->stats().syncs, syncs) << "the segment the acknowledgements began was never synced";
}

// Pages of bytes [from, to) of path that the page cache holds, of those pages.
std::size_t resident_pages(const std::string& path, std::size_t from, std::size_t to) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  void* map = ::mmap(nullptr, to, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return 0;
  std::vector<unsigned char> in_core((to + page - 1) / page);
  std::size_t resident = 0;
  if (::mincore(map, to, in_core.data()) == 0) {
    for (std::size_t p = from / page; p < in_core.size(); ++p) resident += in_core[p] & 1;
  }
  ::munmap(map, to);
  return resident;
}

// Segments are written with O_DIRECT, so a backlog is not in the page cache, and the backlogs of
// recipients that were offline together lie interleaved in it, where the kernel's own read-ahead
// (of what follows a read in the file) does not find the next ones. A bounded read (a fill) has
// the kernel read the recipient's next as many bytes in the background, so that the next fill
// finds them in memory instead of waiting for the disk on the loop.
TEST(LogStore, AFillHasTheRecipientsNextBatchReadIntoThePageCache) {
  TempDir dir;
  if (!takes_direct_io(dir.path())) GTEST_SKIP() << dir.path() << " does not take O_DIRECT";
  Posted posted;
  auto store = open_log(dir.path());
  store->sync_on_thread(posted.post());
  ASSERT_TRUE(store->writes_direct());
  AsyncCommits commits(*store);
  constexpr std::uint64_t kRecipients = 32, kEach = 64;
  const std::vector<std::uint8_t> payload(16 * 1024, 'b');
  for (std::uint64_t k = 0; k < kEach; ++k) {
    for (std::uint64_t r = 0; r < kRecipients; ++r) {
      store->append(delivery(1, static_cast<core::ClientId>(2 + r), k * kRecipients + r), payload, false, 0);
    }
  }
  commits.start();
  ASSERT_TRUE(commits.drain(posted));
  const std::string segment = dir.segments().front().string();
  const std::size_t record = log::append_record_size(payload.size());
  const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  // The pages wholly inside the k-th record (from 0) of recipient index r.
  const auto pages_of = [&](std::uint64_t k, std::uint64_t r) {
    const std::size_t at = log::kHeaderSize + (k * kRecipients + r) * record;
    return std::make_pair((at + page - 1) / page * page, (at + record) / page * page);
  };
  const auto [from, to] = pages_of(47, 0);
  const std::size_t pages = (to - from) / page;
  if (resident_pages(segment, from, to) != 0) GTEST_SKIP() << "this file system caches direct writes";
  ASSERT_EQ(store->pending(2, 0, 1000, 512 * 1024).size(), 32u);  // recipient 2's first 32
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (resident_pages(segment, from, to) < pages && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(resident_pages(segment, from, to), pages) << "recipient 2's next batch was not read ahead";
  // Only that recipient's: another's records between them stay on disk.
  const auto [other_from, other_to] = pages_of(47, 16);
  EXPECT_EQ(resident_pages(segment, other_from, other_to), 0u);
}

// Writes `path` until the file system it is on is full; leaves `spare` bytes of it free again.
void fill_disk(const std::string& path, std::uintmax_t spare = 0) {
  {
    std::ofstream out(path, std::ios::binary);
    std::vector<char> chunk(4096, 'f');
    while (out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()))) {
    }
  }
  if (spare != 0) fs::resize_file(path, fs::file_size(path) - spare);
}

// A 512 KiB tmpfs that takes O_DIRECT, for a log of 128 KiB segments: small enough to fill.
class LogStoreOnASmallDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!small.mounted()) GTEST_SKIP() << "cannot mount a tmpfs: " << small.error();
    if (!takes_direct_io(small.path())) GTEST_SKIP() << "this tmpfs does not take O_DIRECT";
  }
  TempDir dir;
  testing::Tmpfs small{dir.path(), "small", "512k"};
  const LogOptions options = small_segments(128 * 1024);
};

// A batch that fails on a full disk is taken back whole: when it had filled a directly written
// segment, the write of that segment's last records, not yet handed to the sync thread, is never
// made, so its messages do not come back at the next start.
TEST_F(LogStoreOnASmallDisk, ABatchRolledBackOnAFullDiskLeavesNoDirectWriteBehind) {
  std::vector<std::uint8_t> payload(4000, 'a');
  {
    Posted posted;
    auto store = open_log(small.path(), options);
    store->sync_on_thread(posted.post());
    ASSERT_TRUE(store->writes_direct());
    bool committed = false;
    int outstanding = 0;
    auto commit = [&] {
      ++outstanding;
      store->commit_async([&](Result<void, Error> r) {
        committed = static_cast<bool>(r);
        --outstanding;
      });
      ASSERT_TRUE(posted.run_until([&] { return outstanding == 0; }));
    };
    for (std::uint64_t i = 1; i <= 20; ++i) store->append(delivery(1, 2, i), payload, false, 0);
    commit();
    ASSERT_TRUE(committed);
    // Fill the disk, then leave 8 KiB: room for a new segment's header, not for its records.
    fill_disk(small.path() + "/filler", 8192);
    for (std::uint64_t i = 21; i <= 30; ++i) store->append(delivery(1, 2, i), payload, false, 0);
    // Too big for the first segment: it is closed with its write still to be made.
    ASSERT_EQ(store->append(delivery(1, 2, 31), std::vector<std::uint8_t>(20000, 'b'), false, 0).status,
              AppendStatus::Stored);
    ASSERT_EQ(store->segment_count(), 2u);
    commit();
    EXPECT_FALSE(committed) << "the batch fitted on a full disk";
    EXPECT_EQ(store->pending(2, 0, 100).size(), 20u);
  }
  fs::remove(small.path() + "/filler");
  auto store = open_log(small.path(), options);
  EXPECT_EQ(store->pending(2, 0, 100).size(), 20u) << "messages refused as StoreUnavailable came back";
}

// Acknowledgements on a completely full disk: the segment cannot take their records past the space
// it reserved and no new segment can start. The store keeps serving: what was acknowledged is not
// delivered again while it runs, and once there is room it takes new messages again. Nothing
// accepted is lost across a restart; what was acknowledged may come back, as after a crash.
TEST_F(LogStoreOnASmallDisk, AcknowledgementsOnAFullDiskDoNotStopTheStore) {
  const std::string filler = small.path() + "/filler";
  std::vector<std::uint64_t> accepted;
  std::uint64_t unwritten = 0;
  std::size_t acked = 0;
  {
    Posted posted;
    auto store = open_log(small.path(), options);
    store->sync_on_thread(posted.post());
    ASSERT_TRUE(store->writes_direct());
    Result<void, Error> committed;
    int outstanding = 0;
    auto commit = [&] {
      ++outstanding;
      store->commit_async([&](Result<void, Error> r) {
        committed = std::move(r);
        --outstanding;
      });
      ASSERT_TRUE(posted.run_until([&] { return outstanding == 0; }));
    };
    fill_disk(filler);  // no new segment can start
    // The active segment's reserved space takes messages until it is full.
    const std::vector<std::uint8_t> payload(100, 'm');
    for (std::uint64_t i = 1;; ++i) {
      auto r = store->append(delivery(1, 2, i), payload, false, 0);
      if (r.status != AppendStatus::Stored) {
        EXPECT_EQ(r.status, AppendStatus::Unavailable);
        break;
      }
      accepted.push_back(r.sequence);
      ASSERT_LT(i, 2000u) << "a 128 KiB segment took 2,000 records";
    }
    commit();
    ASSERT_TRUE(committed) << committed.error().message;
    ASSERT_GT(accepted.size(), 100u);
    // Every acknowledgement's record goes past segment_bytes.
    acked = accepted.size() / 2;
    for (std::size_t k = 0; k < acked; ++k) {
      ASSERT_TRUE(store->acknowledge(2, accepted[k]).has_value());
    }
    commit();
    ASSERT_TRUE(committed) << committed.error().message;
    // A commit that holds a message waits for the writes before it, the acknowledgements' too.
    ASSERT_EQ(store->append(delivery(1, 3, 200000), payload, false, 0).status, AppendStatus::Unavailable);
    commit();
    ASSERT_TRUE(committed) << committed.error().message;
    unwritten = store->stats().removals_unwritten;
    EXPECT_GT(unwritten, 0u) << "the reserve took every acknowledgement";
    EXPECT_LT(unwritten, acked) << "the reserve took no acknowledgement";
    EXPECT_EQ(store->pending(2, 0, 10000).size(), accepted.size() - acked);
    // Room again: the store takes and commits new messages.
    fs::remove(filler);
    auto r = store->append(delivery(1, 2, 100000), payload, false, 0);
    ASSERT_EQ(r.status, AppendStatus::Stored) << r.reason;
    commit();
    ASSERT_TRUE(committed) << committed.error().message;
    accepted.push_back(r.sequence);
  }
  auto store = open_log(small.path(), options);
  std::set<std::uint64_t> reopened;
  for (const auto& m : store->pending(2, 0, 10000)) reopened.insert(m.sequence);
  for (std::size_t k = acked; k < accepted.size(); ++k) {
    EXPECT_TRUE(reopened.count(accepted[k])) << "message " << accepted[k] << " was lost";
  }
  // What came back of the acknowledged: exactly the acknowledgements left unwritten.
  EXPECT_EQ(reopened.size() - (accepted.size() - acked), unwritten);
}

// Written through the page cache (here without the sync thread), a batch whose write fails on a
// full disk is cut off whole, its acknowledgements' Remove records with it. Those messages stay
// taken, as when the reserve leaves a Remove unwritten, and are counted the same way: they would
// come back after a restart.
TEST_F(LogStoreOnASmallDisk, AcknowledgementsCutOffWithAFailedBatchAreCounted) {
  const std::string filler = small.path() + "/filler";
  const std::vector<std::uint8_t> payload(100, 'm');
  std::vector<std::uint64_t> accepted;
  constexpr std::size_t kAcked = 300;  // their Remove records take more than the file's last page
  {
    auto store = open_log(small.path(), options);
    ASSERT_FALSE(store->writes_direct());
    for (std::uint64_t i = 1; i <= 400; ++i) {
      accepted.push_back(store->append(delivery(1, 2, i), payload, false, 0).sequence);
    }
    ASSERT_TRUE(store->commit());
    fill_disk(filler);
    for (std::size_t k = 0; k < kAcked; ++k) ASSERT_TRUE(store->acknowledge(2, accepted[k]).has_value());
    auto committed = store->commit();
    ASSERT_FALSE(committed) << "a full tmpfs took " << kAcked << " Remove records";
    EXPECT_EQ(store->stats().removals_unwritten, kAcked);
    EXPECT_EQ(store->pending(2, 0, 1000).size(), accepted.size() - kAcked);
    // Room again: the store takes and commits new messages.
    fs::remove(filler);
    auto r = store->append(delivery(1, 2, 1000), payload, false, 0);
    ASSERT_EQ(r.status, AppendStatus::Stored) << r.reason;
    ASSERT_TRUE(store->commit());
    accepted.push_back(r.sequence);
  }
  auto store = open_log(small.path(), options);
  EXPECT_EQ(store->pending(2, 0, 1000).size(), accepted.size()) << "the acknowledgements cut off come back";
}

// A router restarted on a disk that is still full, whose newest segment is full too (its reserve
// took acknowledgements): it cannot start a segment, so it goes on in the full one rather than
// refuse to start. Its recipients can take what it holds, which frees room; new messages are
// refused until there is room, and then taken.
TEST_F(LogStoreOnASmallDisk, ItOpensOnAFullDiskWhoseNewestSegmentIsFull) {
  const std::string filler = small.path() + "/filler";
  const std::vector<std::uint8_t> payload(100, 'm');
  std::vector<std::uint64_t> accepted;
  {
    Posted posted;
    auto store = open_log(small.path(), options);
    store->sync_on_thread(posted.post());
    AsyncCommits commits(*store);
    fill_disk(filler);
    for (std::uint64_t i = 1;; ++i) {
      auto r = store->append(delivery(1, 2, i), payload, false, 0);
      if (r.status != AppendStatus::Stored) break;
      accepted.push_back(r.sequence);
      ASSERT_LT(i, 2000u);
    }
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
    // Into the reserve: the segment now holds more than segment_bytes.
    for (std::size_t k = 0; k < 50; ++k) store->acknowledge(2, accepted[k]);
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
  }
  {
    auto reopened = LogStore::open(small.path(), SyncMode::Batch, {}, options);
    ASSERT_TRUE(reopened.has_value()) << reopened.error().message;
    auto& store = **reopened;
    Posted posted;
    store.sync_on_thread(posted.post());
    AsyncCommits commits(store);
    EXPECT_EQ(store.pending(2, 0, 10000).size(), accepted.size() - 50);
    EXPECT_EQ(store.append(delivery(1, 3, 100000), payload, false, 0).status, AppendStatus::Unavailable);
    ASSERT_TRUE(store.acknowledge(2, accepted[50]).has_value());
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
    fs::remove(filler);
    auto r = store.append(delivery(1, 3, 100001), payload, false, 0);
    ASSERT_EQ(r.status, AppendStatus::Stored) << r.reason;
    commits.start();
    ASSERT_TRUE(commits.drain(posted));
    accepted.push_back(r.sequence);
  }
  auto store = open_log(small.path(), options);
  EXPECT_EQ(store->pending(2, 0, 10000).size() + store->pending(3, 0, 10).size(), accepted.size() - 51);
  EXPECT_EQ(store->pending(3, 0, 10).size(), 1u);
}

TEST(LogStore, ANonSegmentFileInTheLogIsAClearError) {
  TempDir dir;
  fs::create_directory(dir.path() + "/log");
  std::ofstream(dir.path() + "/log/00000000000000000001.seg") << "this is not a segment, but long enough to be one";
  auto store = LogStore::open(dir.path(), SyncMode::Batch, {});
  ASSERT_FALSE(store.has_value());
  EXPECT_NE(store.error().message.find("00000000000000000001.seg"), std::string::npos) << store.error().message;
}

}  // namespace
}  // namespace debra::store
