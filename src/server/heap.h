// SPDX-License-Identifier: MIT
#pragma once

#include <cstdint>
#include <string_view>

namespace debra::server {

// The allocator's free memory: pages it took from the kernel that no object uses now. Neither
// tcmalloc nor glibc's malloc gives them back by itself once the objects are gone, so after a storm
// of connections the router would stay at its peak (docs/benchmarks.md, "Idle memory"). The
// libraries stay allocator-agnostic; this asks whichever allocator the process runs on (tcmalloc's
// C API, looked up at run time, or glibc's malloc).
struct HeapFree {
  std::string_view allocator;  // "tcmalloc", "glibc", or "unknown" (a sanitizer's)
  // tcmalloc: its page heap's free pages. glibc: the resident set less what malloc has handed out,
  // an estimate that includes the code and the stacks (a few MiB): glibc's own count of free bytes
  // goes on counting the pages malloc_trim gave back.
  std::uint64_t bytes = 0;
};

HeapFree heap_free();
// The process's resident set size, from /proc/self/statm (0 where that is unreadable).
std::uint64_t resident_memory_bytes();
// Hands free pages back to the kernel: on tcmalloc at least `bytes` of them (ReleaseToSystem, which
// holds the page heap's lock while it runs, so a caller gives back a large amount in steps); on
// glibc's malloc all of them at once (malloc_trim).
void release_free_heap(std::uint64_t bytes);

}  // namespace debra::server
