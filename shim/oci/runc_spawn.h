// Starting the runtime binary for Runc (runc.h) and waiting for it: only
// fds 0..2 inherited, every signal at its default disposition and unblocked,
// NOTIFY_SOCKET removed, no parent-death signal. Internal to shim/oci.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "shim/oci/runc.h"

namespace shim::oci {

// Resolves `binary` the way execvp would (PATH, else a default PATH), but up
// front, so that a missing runtime is a clear error (FailedPrecondition)
// rather than an exit code from a child.
absl::StatusOr<std::string> FindBinary(const std::string& binary);

// dup2() onto 0..2 in the child must not clobber a source that is itself
// 0..2, so every source lives at 3 or above (close-on-exec).
absl::Status MoveAbove2(base::UniqueFd& fd);

absl::StatusOr<base::UniqueFd> OpenDevNull();

// "exit status N", "killed by signal N (name)".
std::string DescribeWaitStatus(int status);

// Spawns `path` with `argv` and the given fds as 0..2 (each >= 3) and waits
// for it to exit, at most `timeout` (then it is SIGKILLed: DeadlineExceeded);
// returns its wait status. With `on_spawned` the child is fork()ed and held
// at a gate until the hook has run (SpawnHook in runc.h); otherwise vfork().
// `what` ("runc create") prefixes the errors.
absl::StatusOr<int> SpawnAndWait(const std::string& path, std::vector<std::string> argv,
                                 const int (&fds)[3], std::chrono::milliseconds timeout,
                                 std::string_view what, const SpawnHook* on_spawned);

}  // namespace shim::oci
