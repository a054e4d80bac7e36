// SPDX-License-Identifier: MIT
//
// What the unit tests of the stores and of the durable router share: a temporary directory, a tiny
// filesystem to fill, and each MessageStore opened the same way.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "store/log_store.h"
#include "store/sqlite_store.h"

namespace debra::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "debra-unit-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp: " << std::strerror(errno);
      return;
    }
    path_ = pattern;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A file system of the given type mounted at DIR/name until destroyed. Needs root; mounted() says
// whether it worked, and error() why not.
class ScratchMount {
 public:
  ScratchMount(const std::string& dir, const std::string& name, const char* type, const std::string& options,
               bool read_only = false)
      : path_(dir + "/" + name) {
    std::filesystem::create_directory(path_);
    if (::mount(type, path_.c_str(), type, read_only ? MS_RDONLY : 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = std::strerror(errno);
    }
  }
  ~ScratchMount() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  ScratchMount(const ScratchMount&) = delete;
  ScratchMount& operator=(const ScratchMount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool mounted_ = false;
  std::string error_;
};

// A tmpfs of the given size (e.g. "256k") or read-only.
class Tmpfs : public ScratchMount {
 public:
  Tmpfs(const std::string& dir, const std::string& name, const std::string& size, bool read_only = false)
      : ScratchMount(dir, name, "tmpfs", "size=" + size, read_only) {}
};

// The two stores, for tests parametrized over them: "log" and "sqlite", as --store names them.
inline Result<std::unique_ptr<core::MessageStore>, Error> open_message_store(const std::string& kind,
                                                                             const std::string& dir,
                                                                             store::SyncMode mode,
                                                                             core::StoreLimits limits) {
  if (kind == "sqlite") {
    auto opened = store::SqliteStore::open(dir, mode, limits);
    if (!opened) return Unexpected{opened.error()};
    return std::unique_ptr<core::MessageStore>(std::move(*opened));
  }
  auto opened = store::LogStore::open(dir, mode, limits);
  if (!opened) return Unexpected{opened.error()};
  return std::unique_ptr<core::MessageStore>(std::move(*opened));
}

inline std::string store_kind_name(const ::testing::TestParamInfo<std::string>& kind) { return kind.param; }

}  // namespace debra::testing
