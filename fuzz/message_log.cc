// SPDX-License-Identifier: MIT
//
// libFuzzer target for the message log's recovery (debra-server --store log, at start-up). The input is
// a mode byte, then the body of a segment file after its header, as a damaged or hostile disk could
// leave it. An even mode byte re-seals every frame's CRC first, so that mutations reach the fields of
// records and not only their checksums. Properties
// checked besides memory safety:
// - the store opens; it holds exactly what a plain reference replay of the records holds, up to the
//   first record that is cut short or fails its check, and each held payload reads back byte for byte;
// - a message appended after it gets a sequence above every sequence in the file, and is still there,
//   with everything else, after the store is closed and opened again; when no sequence is left
//   below the limit, the append is refused instead.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "store/log_format.h"
#include "store/log_store.h"
#include "util/crc32c.h"
#include "util/log.h"

namespace {

namespace log = debra::store::log;
using debra::core::ClientId;

void check(bool condition) {
  if (!condition) std::abort();
}

const std::string& work_dir() {
  static const std::string dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "debra-fuzz-log-XXXXXX").string();
    check(mkdtemp(pattern.data()) != nullptr);
    spdlog::set_level(spdlog::level::off);  // recovery warns about every damaged input
    return pattern;
  }();
  return dir;
}

struct Held {
  std::vector<std::uint8_t> payload;
};

std::unique_ptr<debra::store::LogStore> open_store(const std::string& dir) {
  auto store = debra::store::LogStore::open(dir, debra::store::SyncMode::Off, {});
  check(store.has_value());
  return std::move(*store);
}

void check_holds(debra::store::LogStore& store, const std::map<std::pair<ClientId, std::uint64_t>, Held>& model) {
  check(store.stats().held_messages == model.size());
  for (const auto& [key, held] : model) {
    auto pending = store.pending(key.first, key.second - 1, 1);
    check(pending.size() == 1 && pending[0].sequence == key.second);
    check(pending[0].payload == held.payload);
  }
}

// Writes the CRC salted with salt into every frame whose body fits, up to the first one that does not.
void reseal(std::vector<std::uint8_t>& body, std::uint32_t salt) {
  std::size_t at = 0;
  while (at + log::kFrameSize <= body.size()) {
    std::uint32_t length = 0;
    for (int i = 3; i >= 0; --i) length = (length << 8) | body[at + static_cast<std::size_t>(i)];
    if (length == 0 || body.size() - at - log::kFrameSize < length) return;
    const std::uint32_t crc = debra::util::crc32c({body.data() + at + log::kFrameSize, length}) ^ salt;
    for (int i = 0; i < 4; ++i) body[at + 4 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(crc >> (8 * i));
    at += log::kFrameSize + length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& dir = work_dir();
  std::filesystem::remove_all(dir + "/log");
  std::filesystem::create_directory(dir + "/log");
  if (size == 0) return 0;
  std::vector<std::uint8_t> body(data + 1, data + size);
  // A file on its second life: frames sealed for it, sealed for its first life (Stale: none may
  // count), or as they come.
  constexpr std::uint32_t kSalt = 1;
  if (data[0] % 3 == 0) reseal(body, kSalt);
  if (data[0] % 3 == 1) reseal(body, kSalt - 1);
  std::vector<std::uint8_t> file;
  constexpr std::uint64_t kBase = 5;
  log::encode_header({kBase, kSalt}, file);
  file.insert(file.end(), body.begin(), body.end());
  {
    int fd = ::open((dir + "/log/00000000000000000001.seg").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    check(fd >= 0);
    check(::write(fd, file.data(), file.size()) == static_cast<ssize_t>(file.size()));
    ::close(fd);
  }

  // The reference: every whole record in order; a later Append of the same message is a copy.
  std::map<std::pair<ClientId, std::uint64_t>, Held> model;
  std::uint64_t highest = kBase;
  std::span<const std::uint8_t> rest(body);
  while (!rest.empty()) {
    log::DecodeResult decoded = log::decode(rest, kSalt);
    if (decoded.status != log::DecodeStatus::Ok) break;
    const log::Decoded& r = decoded.record;
    if (r.type == log::RecordType::Append) {
      highest = std::max(highest, r.append.sequence + 1);
      model[{r.append.recipient, r.append.sequence}].payload.assign(r.append.payload.begin(), r.append.payload.end());
    } else {
      model.erase({r.remove.recipient, r.remove.sequence});
    }
    rest = rest.subspan(r.size);
  }

  std::uint64_t added = 0;
  {
    auto store = open_store(dir);
    check_holds(*store, model);
    const std::vector<std::uint8_t> payload{'n', 'e', 'w'};
    auto appended = store->append(debra::core::Delivery{1, 2, 0, nullptr, 0}, payload, false, 0);
    if (highest >= log::kSequenceLimit) {
      // A sequence that recovery would take for damage is never handed out.
      check(appended.status == debra::core::AppendStatus::Unavailable);
      return 0;
    }
    check(appended.status == debra::core::AppendStatus::Stored);
    check(appended.sequence >= highest);
    check(store->commit().has_value());
    added = appended.sequence;
    model[{2, added}].payload = payload;
  }
  auto reopened = open_store(dir);
  check_holds(*reopened, model);
  return 0;
}
