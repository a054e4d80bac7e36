// SPDX-License-Identifier: MIT
//
// Token buckets on a synthetic clock: every time below is chosen by the test, so each expectation is
// exact to the nanosecond.
#include "core/rate_limit.h"

#include <gtest/gtest.h>

#include <cstdint>

namespace debra::core {
namespace {

constexpr Nanoseconds kMs = 1'000'000;
constexpr Nanoseconds kSecond = 1'000 * kMs;
// A clock far from zero, like CLOCK_MONOTONIC on a machine that has been up for a while.
constexpr Nanoseconds kStart = 123 * 24 * 3600 * kSecond;

RateLimits messages_only(std::uint64_t per_second, std::uint64_t burst) {
  return {.messages_per_second = per_second, .message_burst = burst, .bytes_per_second = 0, .byte_burst = 0};
}

RateLimits bytes_only(std::uint64_t per_second, std::uint64_t burst) {
  return {.messages_per_second = 0, .message_burst = 0, .bytes_per_second = per_second, .byte_burst = burst};
}

TEST(RateLimiter, AdmitsExactlyTheBurstThenRefusesWithTheWait) {
  RateLimiter limiter(messages_only(10, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter.admit(7, 100, kStart).admitted) << "message " << i;
  Admission refused = limiter.admit(7, 100, kStart);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.limit, RateLimitKind::Messages);
  EXPECT_EQ(refused.retry_after, 100 * kMs);  // one token at 10/s
  // Refusals charge nothing: the wait does not grow with retries.
  EXPECT_EQ(limiter.admit(7, 100, kStart + 40 * kMs).retry_after, 60 * kMs);
  EXPECT_FALSE(limiter.admit(7, 100, kStart + 100 * kMs - 1).admitted);
  EXPECT_TRUE(limiter.admit(7, 100, kStart + 100 * kMs).admitted);
  EXPECT_FALSE(limiter.admit(7, 100, kStart + 100 * kMs).admitted);
}

TEST(RateLimiter, RefillsAtTheRateAndNeverBeyondTheBurst) {
  RateLimiter limiter(messages_only(10, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter.admit(1, 0, kStart).admitted);
  // 300 ms later: three tokens, no more.
  Nanoseconds later = kStart + 300 * kMs;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.admit(1, 0, later).admitted) << "token " << i;
  EXPECT_FALSE(limiter.admit(1, 0, later).admitted);
  // An hour idle refills the bucket to its burst, not to 36,000 tokens.
  Nanoseconds idle = later + 3600 * kSecond;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.admit(1, 0, idle).admitted) << "token " << i;
  EXPECT_FALSE(limiter.admit(1, 0, idle).admitted);
}

TEST(RateLimiter, RatesThatDoNotDivideASecondDoNotDrift) {
  // 3/s: one token every 333,333,333.3 ns. Time is kept scaled by the rate, so nothing is rounded
  // but the wait reported to the caller (up, to the next whole nanosecond).
  RateLimiter limiter(messages_only(3, 5));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter.admit(1, 0, kStart).admitted);
  Admission refused = limiter.admit(1, 0, kStart);
  ASSERT_FALSE(refused.admitted);
  EXPECT_EQ(refused.retry_after, 333'333'334u);
  EXPECT_FALSE(limiter.admit(1, 0, kStart + 333'333'333).admitted);
  EXPECT_TRUE(limiter.admit(1, 0, kStart + 333'333'334).admitted);

  // Over 10 s of trying every millisecond, exactly the burst plus 3 per second get through.
  RateLimiter steady(messages_only(3, 5));
  int admitted = 0;
  for (Nanoseconds t = kStart; t <= kStart + 10 * kSecond; t += kMs) admitted += steady.admit(1, 0, t).admitted;
  EXPECT_EQ(admitted, 5 + 30);
}

TEST(RateLimiter, BytesAndMessagesAreLimitedApart) {
  RateLimiter limiter({.messages_per_second = 100, .message_burst = 100, .bytes_per_second = 1000, .byte_burst = 4000});
  // Four 1,000-byte messages empty the byte bucket long before the message bucket.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(limiter.admit(1, 1000, kStart).admitted);
  Admission refused = limiter.admit(1, 1000, kStart);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.limit, RateLimitKind::Bytes);
  EXPECT_EQ(refused.retry_after, kSecond);
  // Empty messages still pass: they cost no bytes.
  EXPECT_TRUE(limiter.admit(1, 0, kStart).admitted);
  // 500 ms later half a kilobyte is back: a 500-byte message passes, a 501-byte one waits 1 ms.
  EXPECT_EQ(limiter.admit(1, 501, kStart + 500 * kMs).retry_after, kMs);
  EXPECT_TRUE(limiter.admit(1, 500, kStart + 500 * kMs).admitted);

  // The message limit refuses tiny messages, and a refusal by either limit charges neither.
  RateLimiter counted({.messages_per_second = 10, .message_burst = 2, .bytes_per_second = 1000, .byte_burst = 1000});
  ASSERT_TRUE(counted.admit(1, 400, kStart).admitted);
  ASSERT_TRUE(counted.admit(1, 400, kStart).admitted);
  Admission by_count = counted.admit(1, 100, kStart);
  EXPECT_FALSE(by_count.admitted);
  EXPECT_EQ(by_count.limit, RateLimitKind::Messages);
  EXPECT_EQ(by_count.retry_after, 100 * kMs);
  // At 100 ms a message token is back, and so are 100 bytes: 300 bytes are free, exactly, because
  // the refused message above took none.
  EXPECT_EQ(counted.admit(1, 301, kStart + 100 * kMs).limit, RateLimitKind::Bytes);
  EXPECT_TRUE(counted.admit(1, 300, kStart + 100 * kMs).admitted);
}

TEST(RateLimiter, TheLongerWaitDecides) {
  RateLimiter limiter({.messages_per_second = 1, .message_burst = 1, .bytes_per_second = 100, .byte_burst = 100});
  ASSERT_TRUE(limiter.admit(1, 100, kStart).admitted);
  Admission both = limiter.admit(1, 100, kStart);  // messages: 1 s; bytes: 1 s as well
  EXPECT_EQ(both.retry_after, kSecond);
  EXPECT_EQ(limiter.admit(1, 100, kStart + 500 * kMs).retry_after, 500 * kMs);
  RateLimiter bytes_slower({.messages_per_second = 10, .message_burst = 1, .bytes_per_second = 100, .byte_burst = 100});
  ASSERT_TRUE(bytes_slower.admit(1, 100, kStart).admitted);
  Admission decided = bytes_slower.admit(1, 100, kStart);
  EXPECT_EQ(decided.limit, RateLimitKind::Bytes);
  EXPECT_EQ(decided.retry_after, kSecond);
}

TEST(RateLimiter, AMessageLargerThanTheByteBurstPassesFromAFullBucketAndPaysInFull) {
  RateLimiter limiter(bytes_only(1000, 1000));
  ASSERT_TRUE(limiter.admit(1, 3000, kStart).admitted);  // a full bucket lets it through...
  Admission refused = limiter.admit(1, 1, kStart + kSecond);
  EXPECT_FALSE(refused.admitted);  // ...and the 2,000-byte debt must be paid before anything else
  EXPECT_EQ(refused.retry_after, kSecond + 1'000'000);
  EXPECT_TRUE(limiter.admit(1, 1, kStart + 2 * kSecond + kMs).admitted);
  // Not from a partly full one: it waits until the bucket is full again.
  Admission big = limiter.admit(1, 3000, kStart + 2 * kSecond + kMs);
  EXPECT_FALSE(big.admitted);
  EXPECT_EQ(big.retry_after, kSecond);  // the 1-byte message left it 1,000 bytes short of full
}

TEST(RateLimiter, AChargeGoesBeyondTheBurstAndDelaysWhatFollows) {
  RateLimiter limiter(messages_only(10, 2));
  for (int i = 0; i < 5; ++i) limiter.charge(1, 0, kStart);  // 3 beyond the burst
  Admission next = limiter.admit(1, 0, kStart);
  EXPECT_FALSE(next.admitted);
  EXPECT_EQ(next.retry_after, 400 * kMs);  // the 3 owed, then room for itself
  EXPECT_TRUE(limiter.admit(1, 0, kStart + 400 * kMs).admitted);
  EXPECT_FALSE(limiter.admit(1, 0, kStart + 400 * kMs).admitted);
  // Charges are remembered like any bucket, and forgotten once paid off and full again.
  EXPECT_EQ(limiter.tracked_ids(), 1u);
  ASSERT_TRUE(limiter.admit(2, 0, kStart + 600 * kMs).admitted);
  EXPECT_EQ(limiter.tracked_ids(), 1u);
}

TEST(RateLimiter, ZeroDisablesALimit) {
  RateLimiter off({.messages_per_second = 0, .message_burst = 0, .bytes_per_second = 0, .byte_burst = 0});
  EXPECT_TRUE(off.unlimited());
  for (int i = 0; i < 100'000; ++i) ASSERT_TRUE(off.admit(1, 1 << 20, kStart).admitted);
  EXPECT_EQ(off.tracked_ids(), 0u);  // nothing to remember

  RateLimiter messages(messages_only(1, 1));
  ASSERT_TRUE(messages.admit(1, 1ull << 40, kStart).admitted);  // bytes unlimited
  EXPECT_FALSE(messages.admit(1, 0, kStart).admitted);

  RateLimiter bytes(bytes_only(10, 10));
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(bytes.admit(1, 0, kStart).admitted);  // messages unlimited
  ASSERT_TRUE(bytes.admit(1, 10, kStart).admitted);
  EXPECT_FALSE(bytes.admit(1, 1, kStart).admitted);
}

TEST(RateLimiter, EachIdHasItsOwnBuckets) {
  RateLimiter limiter(messages_only(1, 2));
  ASSERT_TRUE(limiter.admit(1, 0, kStart).admitted);
  ASSERT_TRUE(limiter.admit(1, 0, kStart).admitted);
  EXPECT_FALSE(limiter.admit(1, 0, kStart).admitted);
  EXPECT_TRUE(limiter.admit(2, 0, kStart).admitted);
  EXPECT_TRUE(limiter.admit(2, 0, kStart).admitted);
  EXPECT_FALSE(limiter.admit(2, 0, kStart).admitted);
}

TEST(RateLimiter, ForgetsBucketsOnlyOnceTheyAreFullAgain) {
  RateLimiter limiter(messages_only(10, 10));
  // id 1 empties its bucket; it takes 1 s to be full again.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(limiter.admit(1, 0, kStart).admitted);
  // New ids keep arriving, each sending once (so each bucket is full again 100 ms later).
  Nanoseconds t = kStart;
  for (int id = 2; id < 1000; ++id) {
    t += kMs;
    ASSERT_TRUE(limiter.admit(id, 0, t).admitted);
    // id 1 is never forgotten while it is not full: it is the first in line and still in debt.
    ASSERT_LE(limiter.tracked_ids(), 1u + 100u + 1u) << "at id " << id;
  }
  // At t = 998 ms id 1 has 9.98 tokens, not the 10 of a fresh bucket: it was remembered (so a
  // reconnection would have refilled nothing).
  ASSERT_EQ(t, kStart + 998 * kMs);
  for (int i = 0; i < 9; ++i) EXPECT_TRUE(limiter.admit(1, 0, t).admitted);
  EXPECT_FALSE(limiter.admit(1, 0, t).admitted);
  EXPECT_EQ(limiter.stats().evicted, 0u);
}

TEST(RateLimiter, AForgottenBucketBehavesLikeTheFullOneItWas) {
  RateLimiter limiter(messages_only(10, 3));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter.admit(1, 0, kStart).admitted);
  // 300 ms later id 1 is full again; a new id arriving then lets the limiter forget it.
  ASSERT_TRUE(limiter.admit(2, 0, kStart + 300 * kMs).admitted);
  EXPECT_EQ(limiter.tracked_ids(), 1u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.admit(1, 0, kStart + 300 * kMs).admitted);
  EXPECT_FALSE(limiter.admit(1, 0, kStart + 300 * kMs).admitted);
}

TEST(RateLimiter, TheNumberOfTrackedIdsIsBounded) {
  RateLimits limits = messages_only(1, 5);
  limits.max_tracked_ids = 64;
  RateLimiter limiter(limits);
  // 10,000 ids within one second: none is full again, so the bound forces the oldest out.
  for (int id = 1; id <= 10'000; ++id) {
    ASSERT_TRUE(limiter.admit(id, 0, kStart + static_cast<Nanoseconds>(id) * 1000).admitted);
    ASSERT_LE(limiter.tracked_ids(), 64u);
  }
  EXPECT_EQ(limiter.tracked_ids(), 64u);
  EXPECT_EQ(limiter.stats().evicted, 10'000u - 64u);
  // The most recent ones are still remembered...
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(limiter.admit(10'000, 0, kStart + kMs * 10).admitted);
  EXPECT_FALSE(limiter.admit(10'000, 0, kStart + kMs * 10).admitted);
  // ...and the one nearest to full goes first: id 9,937 (the oldest kept) moves back in line once
  // it sends again, so the next newcomer displaces id 9,938 instead.
  ASSERT_TRUE(limiter.admit(9'937, 0, kStart + kMs * 10).admitted);
  ASSERT_TRUE(limiter.admit(20'000, 0, kStart + kMs * 10).admitted);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter.admit(9'937, 0, kStart + kMs * 10).admitted);
  EXPECT_FALSE(limiter.admit(9'937, 0, kStart + kMs * 10).admitted);
  EXPECT_EQ(limiter.stats().evicted, 10'000u - 64u + 1u);
}

TEST(TokenBucket, TakesOnlyWhatItHolds) {
  TokenBucket bucket(Rate(2, 3));
  EXPECT_TRUE(bucket.try_take(2, kStart));
  EXPECT_TRUE(bucket.try_take(1, kStart));
  EXPECT_FALSE(bucket.try_take(1, kStart));
  EXPECT_EQ(bucket.wait(1, kStart), 500 * kMs);
  EXPECT_TRUE(bucket.try_take(1, kStart + 500 * kMs));
  TokenBucket unlimited;
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(unlimited.try_take(1'000'000, kStart));
}

}  // namespace
}  // namespace debra::core
