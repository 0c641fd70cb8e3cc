// How a process ended: the answer to a Delete (the Task service and the
// `delete` subcommand both give it), and the TaskExit and TaskDelete events,
// which carry the same facts. For an init, from its container's record; for
// an exec, from the process (shim/process/).
#pragma once

#include <sys/wait.h>

#include <cstdint>
#include <string>

#include "shim.pb.h"
#include "shim/process/clock.h"
#include "shim/store/state.pb.h"

namespace shim {

// containerd's exit_status for a wait(2) status: the code, or 128 + signal.
inline uint32_t ExitStatusOf(int wait_status) {
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return WEXITSTATUS(wait_status);
}

struct ProcessEnd {
  std::string container_id;
  // What CRI finds the task by: the container id for an init, else the exec id.
  std::string id;
  uint32_t pid = 0;
  uint32_t exit_status = 0;
  int64_t exited_at_unix_nano = 0;
};

// The init's end, from its container's record.
inline ProcessEnd EndOf(const embedshim::ContainerRecord& r) {
  return {r.id(), r.id(), r.pid(), r.exit_status(), r.exited_at_unix_nano()};
}

inline containerd::task::v2::DeleteResponse DeleteResponseOf(const ProcessEnd& end) {
  containerd::task::v2::DeleteResponse resp;
  resp.set_pid(end.pid);
  resp.set_exit_status(end.exit_status);
  SetTimestamp(resp.mutable_exited_at(), end.exited_at_unix_nano);
  return resp;
}

inline containerd::task::v2::DeleteResponse DeleteResponseOf(
    const embedshim::ContainerRecord& r) {
  return DeleteResponseOf(EndOf(r));
}

// events::TaskExit or events::TaskDelete.
template <typename Event>
Event ExitEventOf(const ProcessEnd& end) {
  Event ev;
  ev.set_container_id(end.container_id);
  ev.set_id(end.id);
  ev.set_pid(end.pid);
  ev.set_exit_status(end.exit_status);
  SetTimestamp(ev.mutable_exited_at(), end.exited_at_unix_nano);
  return ev;
}

}  // namespace shim
