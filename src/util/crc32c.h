// SPDX-License-Identifier: MIT
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace debra::util {

// CRC-32C (Castagnoli, as in iSCSI and ext4), the checksum of the message log's records. It uses the
// SSE4.2 crc32 instruction where the CPU has it: about 10x faster than zlib's CRC-32 on records of
// a hundred bytes, and on inputs of 768 bytes and more three chains of it at once, about 28 GB/s
// (docs/benchmarks.md). No Debian package offers CRC-32C to C++.
std::uint32_t crc32c(std::span<const std::uint8_t> data);

// The portable version, which crc32c() falls back to; exposed so that tests check both agree.
std::uint32_t crc32c_portable(std::span<const std::uint8_t> data);

}  // namespace debra::util
