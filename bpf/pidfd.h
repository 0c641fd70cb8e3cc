// Process identity helpers: pidfds and start times, so that a pid is only
// ever taken for the process it named when we first saw it.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "base/unique_fd.h"

namespace bpf {

// pidfd_open(2) through syscall(): glibc 2.36's <sys/pidfd.h> lacks an
// extern "C" guard. Works on processes that are not our children.
absl::StatusOr<base::UniqueFd> PidfdOpen(pid_t pid, unsigned flags = 0);

// Start time of process `pid` in ns since boot (the kernel's start_boottime),
// from /proc/<pid>/stat field 22; exact only to a USER_HZ tick (10 ms).
absl::StatusOr<uint64_t> ReadStartBoottime(pid_t pid);

// Whether two start_boottime values name the same start, at the resolution
// /proc gives (one tick).
bool SameStart(uint64_t a, uint64_t b);

// A pidfd for `pid` if it still names the process that started at
// start_boottime and that process has not exited (a zombie counts as
// exited); NotFound otherwise. The pidfd then names that process for sure.
absl::StatusOr<base::UniqueFd> PidfdIfSameLive(pid_t pid, uint64_t start_boottime);

// True when `pid` still names the process that started at start_boottime and
// that process has not exited (a zombie counts as exited).
absl::StatusOr<bool> IsSameLiveProcess(pid_t pid, uint64_t start_boottime);

enum class ProcessState {
  kRunning,  // at least one thread has not begun to exit
  kExiting,  // every thread is inside do_exit or done: the exit may be past
  kGone,     // no such process, or the pid names a different process now
};

// Where the process `pid` (started at start_boottime) is in its life, as
// seen through /proc/<pid>/task/*/stat.
absl::StatusOr<ProcessState> ProbeProcess(pid_t pid, uint64_t start_boottime);

}  // namespace bpf
