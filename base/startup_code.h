// DropStartupCode: unmap this executable's read-only pages once startup is
// done.
//
// A long-lived process keeps mapped every page of its binary it ever
// touched, and the kernel maps file pages 64 KiB around each fault. Startup
// touches much that never runs again (loading BPF, protobuf's descriptor
// registration, libstdc++'s locale setup). MADV_DONTNEED on the binary's
// read-only mappings unmaps those pages: they stay in the page cache, and
// what runs later faults back in (a minor fault each).
//
// Only mappings that hold no private (written) page are dropped: a relocated
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
  const auto self = reinterpret_cast<uintptr_t>(&DropStartupCode);
  FILE* smaps = std::fopen("/proc/self/smaps", "re");
  if (!smaps) return 0;
  struct Vma {
    uintptr_t start = 0, end = 0;
    bool read_only = false;
    std::string path;
    long anonymous_kb = -1;
  };
  std::vector<Vma> vmas;
  std::string exe;
  char line[4096];
  while (std::fgets(line, sizeof line, smaps)) {
    uintptr_t start, end;
    char perms[5];
    int path_at = 0;
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %4s %*s %*s %*s %n", &start, &end, perms,
                    &path_at) == 3 &&
        path_at > 0) {
      Vma v{start, end, perms[1] == '-', line + path_at, -1};
      if (!v.path.empty() && v.path.back() == '\n') v.path.pop_back();
      if (self >= start && self < end) exe = v.path;
      vmas.push_back(std::move(v));
    } else if (!vmas.empty() && std::strncmp(line, "Anonymous:", 10) == 0) {
      vmas.back().anonymous_kb = std::strtol(line + 10, nullptr, 10);
    }
  }
  std::fclose(smaps);
  size_t dropped = 0;
  for (const Vma& v : vmas) {
    if (exe.empty() || v.path != exe || !v.read_only || v.anonymous_kb != 0) continue;
    if (madvise(reinterpret_cast<void*>(v.start), v.end - v.start, MADV_DONTNEED) == 0)
      dropped += v.end - v.start;
  }
  return dropped;
}

}  // namespace base
