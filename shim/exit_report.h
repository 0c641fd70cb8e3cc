// How a container ended, from its record: the answer to a Delete (the Task
// service and the `delete` subcommand both give it), and the TaskExit and
// TaskDelete events, which carry the same facts.
#pragma once

#include "shim.pb.h"
#include "shim/clock.h"
#include "shim/state.pb.h"

namespace shim {

inline containerd::task::v2::DeleteResponse DeleteResponseOf(
    const embedshim::ContainerRecord& r) {
  containerd::task::v2::DeleteResponse resp;
  resp.set_pid(r.pid());
  resp.set_exit_status(r.exit_status());
  SetTimestamp(resp.mutable_exited_at(), r.exited_at_unix_nano());
  return resp;
}

// events::TaskExit or events::TaskDelete of the init process.
template <typename Event>
Event ExitEventOf(const embedshim::ContainerRecord& r) {
  Event ev;
  ev.set_container_id(r.id());
  ev.set_id(r.id());  // CRI finds the task by `id`: the container id for init
  ev.set_pid(r.pid());
  ev.set_exit_status(r.exit_status());
  SetTimestamp(ev.mutable_exited_at(), r.exited_at_unix_nano());
  return ev;
}

}  // namespace shim
