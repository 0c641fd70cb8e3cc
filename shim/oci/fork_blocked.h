// fork() for children that exec: every signal is blocked around it, so that
// no handler of the shim runs in the child (it unblocks them itself just
// before it execs).
#pragma once

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>

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

}  // namespace shim::oci
