// SPDX-License-Identifier: MIT
#include "server/heap.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <fstream>

// gperftools' C API (gperftools/malloc_extension_c.h), declared weak: null unless the process runs
// on tcmalloc, so the library links the same against any allocator.
extern "C" {
__attribute__((weak)) int MallocExtension_GetNumericProperty(const char* property, std::size_t* value);
__attribute__((weak)) void MallocExtension_ReleaseToSystem(std::size_t num_bytes);
}

// Under a sanitizer the process allocates from the sanitizer's heap, which glibc's figures do not see.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DEBRA_HEAP_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DEBRA_HEAP_SANITIZED 1
#endif
#endif

namespace debra::server {

HeapFree heap_free() {
  if (MallocExtension_GetNumericProperty != nullptr && MallocExtension_ReleaseToSystem != nullptr) {
    std::size_t free_bytes = 0;
    if (MallocExtension_GetNumericProperty("tcmalloc.pageheap_free_bytes", &free_bytes) == 0) free_bytes = 0;
    return {"tcmalloc", free_bytes};
  }
#ifdef DEBRA_HEAP_SANITIZED
  return {"unknown", 0};
#else
  const struct mallinfo2 info = mallinfo2();  // every arena's; uordblks in chunks, hblkhd mmapped
  const std::uint64_t in_use = info.uordblks + info.hblkhd;
  const std::uint64_t resident = resident_memory_bytes();
  return {"glibc", resident - std::min(resident, in_use)};
#endif
}

std::uint64_t resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size_pages = 0;
  std::uint64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
}

void release_free_heap(std::uint64_t bytes) {
  if (MallocExtension_ReleaseToSystem != nullptr) {
    MallocExtension_ReleaseToSystem(static_cast<std::size_t>(bytes));
    return;
  }
#ifndef DEBRA_HEAP_SANITIZED
  malloc_trim(0);
#endif
}

}  // namespace debra::server
