// What spawning and waiting on children that exec needs (runc, loggers):
// a fork() with every signal blocked around it, so that no handler of the
// shim runs in the child (it unblocks them itself just before it execs);
// argv/envp for execve; poll() timeouts from a deadline.
#pragma once

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "base/errno_status.h"
#include "fmt/format.h"

namespace shim::oci {

// In the child, runs `child`, which must not return. `what` names the
// child in the error.
template <typename Child>
absl::StatusOr<pid_t> ForkSignalsBlocked(std::string_view what, Child&& child) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = fork();
  if (pid == 0) child();
  const int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return base::ErrnoStatus(fmt::format("{}: fork", what), fork_errno);
  return pid;
}

// execve()'s view of `strings`: pointers into them, then nullptr.
inline std::vector<char*> CStrings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (std::string& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// poll()'s timeout until `deadline`, rounded up so that poll() does not wake
// just before it.
inline int MillisUntil(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  return static_cast<int>(std::min<int64_t>(left.count() + 1, INT_MAX));
}

}  // namespace shim::oci
