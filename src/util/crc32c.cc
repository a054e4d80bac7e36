// SPDX-License-Identifier: MIT
#include "util/crc32c.h"

#include <array>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace debra::util {
namespace {

constexpr std::uint32_t kPolynomial = 0x82F63B78;  // reflected Castagnoli

constexpr std::array<std::uint32_t, 256> make_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) != 0 ? (c >> 1) ^ kPolynomial : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr auto kTable = make_table();

#if defined(__x86_64__)
// The crc32 instruction takes three cycles to give its result but can start one every cycle, so one
// chain of it runs at a third of the CPU's pace. Long inputs are cut into three equal blocks whose
// CRCs run as three independent chains, then joined: the CRC register is linear, so the register
// after A then B is the register after A moved past |B| zero bytes, XOR the register after B alone.
// Moving a register past a block of zeros is a linear map of its 32 bits, applied here as four
// lookups in a table built once. A 16 KiB payload's CRC was 4.5 % of the router's CPU at 16 KiB x 8
// pairs before this (docs/benchmarks.md).
using Register = std::uint32_t;

__attribute__((target("sse4.2"))) Register extend(Register crc, const std::uint8_t* p, std::size_t n) {
  std::uint64_t wide = crc;
  for (; n >= 8; n -= 8, p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, sizeof word);
    wide = _mm_crc32_u64(wide, word);
  }
  crc = static_cast<Register>(wide);
  for (; n > 0; --n, ++p) crc = _mm_crc32_u8(crc, *p);
  return crc;
}

// ZeroShift: the map "run the register over `bytes` zero bytes", one table per byte of the register.
class ZeroShift {
 public:
  explicit ZeroShift(std::size_t bytes) {
    // The image of each single bit, then of each byte value by linearity.
    std::array<Register, 32> bit{};
    const std::vector<std::uint8_t> zeros(bytes, 0);
    for (int b = 0; b < 32; ++b) bit[b] = extend(Register{1} << b, zeros.data(), zeros.size());
    for (int k = 0; k < 4; ++k) {
      for (int v = 0; v < 256; ++v) {
        Register image = 0;
        for (int i = 0; i < 8; ++i) {
          if ((v >> i) & 1) image ^= bit[8 * k + i];
        }
        table_[k][v] = image;
      }
    }
  }
  Register operator()(Register crc) const {
    return table_[0][crc & 0xFF] ^ table_[1][(crc >> 8) & 0xFF] ^ table_[2][(crc >> 16) & 0xFF] ^ table_[3][crc >> 24];
  }

 private:
  std::array<std::array<Register, 256>, 4> table_{};
};

// Three blocks of kLong bytes per round while at least that much is left, then of kShort.
constexpr std::size_t kLong = 2048;
constexpr std::size_t kShort = 256;

template <std::size_t kBlock>
__attribute__((target("sse4.2"))) Register three_ways(Register crc, const std::uint8_t*& p, std::size_t& n,
                                                      const ZeroShift& shift) {
  while (n >= 3 * kBlock) {
    std::uint64_t a = crc, b = 0, c = 0;
    for (std::size_t i = 0; i < kBlock; i += 8) {
      std::uint64_t wa, wb, wc;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + kBlock + i, 8);
      std::memcpy(&wc, p + 2 * kBlock + i, 8);
      a = _mm_crc32_u64(a, wa);
      b = _mm_crc32_u64(b, wb);
      c = _mm_crc32_u64(c, wc);
    }
    crc = shift(shift(static_cast<Register>(a)) ^ static_cast<Register>(b)) ^ static_cast<Register>(c);
    p += 3 * kBlock;
    n -= 3 * kBlock;
  }
  return crc;
}

std::uint32_t crc32c_sse42(std::span<const std::uint8_t> data) {
  const std::uint8_t* p = data.data();
  std::size_t n = data.size();
  Register crc = 0xFFFFFFFFu;
  // Most records are short: one chain, and no look at the tables.
  if (n < 3 * kShort) return ~extend(crc, p, n);
  static const ZeroShift long_shift(kLong);
  static const ZeroShift short_shift(kShort);
  crc = three_ways<kLong>(crc, p, n, long_shift);
  crc = three_ways<kShort>(crc, p, n, short_shift);
  return ~extend(crc, p, n);
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

std::uint32_t crc32c_portable(std::span<const std::uint8_t> data) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (std::uint8_t byte : data) crc = kTable[(crc ^ byte) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

std::uint32_t crc32c(std::span<const std::uint8_t> data) {
#if defined(__x86_64__)
  if (kHaveSse42) return crc32c_sse42(data);
#endif
  return crc32c_portable(data);
}

}  // namespace debra::util
