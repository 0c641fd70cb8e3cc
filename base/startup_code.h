// DropStartupCode: unmap the process's read-only file pages once startup is
// done: the code and constants of the binary and of the shared libraries
// (libc, libm) it still has.
//
// A long-lived process keeps mapped every file page it ever touched, and the
// kernel maps file pages 64 KiB around each fault. Startup touches much that
// never runs again (loading BPF, protobuf's descriptor registration,
// libstdc++'s locale setup, the dynamic loader's relocations).
// MADV_DONTNEED on those mappings unmaps the pages: they stay in the page
// cache, and what runs later faults back in (a minor fault each).
//
// Only private mappings that hold no written page are dropped: a relocated
// page (RELRO) is an anonymous copy, and dropping it would lose the write.
#pragma once

#include <sys/mman.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace base {

// Returns the bytes unmapped.
inline size_t DropStartupCode() {
  FILE* smaps = std::fopen("/proc/self/smaps", "re");
  if (!smaps) return 0;
  struct Vma {
    uintptr_t start = 0, end = 0;
    bool read_only_private = false;
    std::string path;
    long anonymous_kb = -1;
  };
  std::vector<Vma> vmas;
  char line[4096];
  while (std::fgets(line, sizeof line, smaps)) {
    uintptr_t start, end;
    char perms[5];
    int path_at = 0;
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %4s %*s %*s %*s %n", &start, &end, perms,
                    &path_at) == 3 &&
        path_at > 0) {
      Vma v{start, end, perms[1] == '-' && perms[3] == 'p', line + path_at, -1};
      if (!v.path.empty() && v.path.back() == '\n') v.path.pop_back();
      vmas.push_back(std::move(v));
    } else if (!vmas.empty() && std::strncmp(line, "Anonymous:", 10) == 0) {
      vmas.back().anonymous_kb = std::strtol(line + 10, nullptr, 10);
    }
  }
  std::fclose(smaps);
  size_t dropped = 0;
  for (const Vma& v : vmas) {
    // A file ("/..."), not [vdso], a ring buffer or other special mapping.
    if (!v.read_only_private || v.path.empty() || v.path[0] != '/' || v.anonymous_kb != 0)
      continue;
    if (madvise(reinterpret_cast<void*>(v.start), v.end - v.start, MADV_DONTNEED) == 0)
      dropped += v.end - v.start;
  }
  return dropped;
}

}  // namespace base
