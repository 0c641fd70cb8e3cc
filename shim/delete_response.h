// The answer to a Delete, from a container's record: its pid, exit status
// and exit time. The Task service and the `delete` subcommand both give it.
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

}  // namespace shim
