// SPDX-License-Identifier: MIT
#include "server/shared_core.h"

namespace debra::server {
namespace {

// The core this thread holds, if any.
thread_local const SharedCore* held_core = nullptr;

}  // namespace

SharedCore::Guard::Guard(SharedCore& core) {
  if (held_core == &core) return;
  core.mutex_.lock();
  held_core = &core;
  locked_ = &core;
}

SharedCore::Guard::~Guard() {
  if (locked_ == nullptr) return;
  held_core = nullptr;
  locked_->mutex_.unlock();
}

}  // namespace debra::server
