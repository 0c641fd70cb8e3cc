// Container: one container's init process as the server sees it. Owned by
// the loop thread; never touched by workers.
#pragma once

#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "bpf/exit_monitor.h"
#include "shim/process_state.h"
#include "shim/state.pb.h"
#include "ttrpc/server.h"

namespace shim {

struct Container {
  embedshim::ContainerRecord record;  // what is persisted
  ProcessState state = ProcessState::kCreated;

  // `runc start` is in flight. An exit seen meanwhile is held back, so that
  // TaskStart always goes out before TaskExit.
  bool starting = false;
  std::optional<bpf::ExitRecord> exit_during_start;

  // Wait RPCs answered when the process exits.
  std::vector<ttrpc::Responder> waiters;

  // Mutating RPCs (Create, Start, Kill, Delete) of one container run one at
  // a time, in arrival order; each calls Done() when it finishes.
  void RunSerially(std::function<void()> op) {
    if (busy_) {
      queued_.push_back(std::move(op));
      return;
    }
    busy_ = true;
    op();
  }
  void Done() {
    if (queued_.empty()) {
      busy_ = false;
      return;
    }
    auto next = std::move(queued_.front());
    queued_.pop_front();
    next();
  }

  const std::string& ns() const { return record.namespace_(); }
  const std::string& id() const { return record.id(); }
  // The name under which the keeper holds our write end of the stdin fifo
  // (closed by CloseIO), so a restarted server does not lose it.
  std::string stdin_keepalive_name() const { return "stdin/" + ns() + "/" + id(); }

 private:
  bool busy_ = false;
  std::deque<std::function<void()>> queued_;
};

}  // namespace shim
