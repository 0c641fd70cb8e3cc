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
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "base/read_file.h"

namespace base {

// Returns the bytes unmapped.
inline size_t DropStartupCode() {
  absl::StatusOr<std::string> smaps = ReadFile("/proc/self/smaps");
  if (!smaps.ok()) return 0;
  struct Vma {
    uintptr_t start = 0, end = 0;
    bool read_only_private = false;
    std::string path;
    long anonymous_kb = -1;
  };
  std::vector<Vma> vmas;
  std::istringstream lines(*smaps);
  for (std::string line; std::getline(lines, line);) {
    uintptr_t start, end;
    char perms[5];
    int path_at = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " %4s %*s %*s %*s %n", &start, &end,
                    perms, &path_at) == 3 &&
        path_at > 0) {
      vmas.push_back({start, end, perms[1] == '-' && perms[3] == 'p', line.substr(path_at), -1});
    } else if (!vmas.empty() && line.rfind("Anonymous:", 0) == 0) {
      vmas.back().anonymous_kb = std::strtol(line.c_str() + 10, nullptr, 10);
    }
  }
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
