// SPDX-License-Identifier: MIT
#include "core/delivery.h"

namespace debra::core {

std::string_view to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::Delivered: return "delivered";
    case Outcome::Stored: return "stored";
    case Outcome::ForwardedRemote: return "forwarded_remote";
    case Outcome::RecipientOffline: return "recipient_offline";
    case Outcome::RecipientBusy: return "recipient_busy";
    case Outcome::InvalidRecipient: return "invalid_recipient";
    case Outcome::QuotaExceeded: return "quota_exceeded";
    case Outcome::StoreUnavailable: return "store_unavailable";
    case Outcome::Forbidden: return "forbidden";
  }
  return "unknown";
}

}  // namespace debra::core
