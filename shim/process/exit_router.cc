#include "shim/process/exit_router.h"

#include <algorithm>

#include "shim/process/process.h"

namespace shim::process {

void ExitRouter::Remove(pid_t pid, const Process* process) {
  auto it = by_pid_.find(pid);
  if (it != by_pid_.end() && it->second == process) by_pid_.erase(it);
}

Process* ExitRouter::Find(pid_t pid) const {
  auto it = by_pid_.find(pid);
  return it == by_pid_.end() ? nullptr : it->second;
}

void ExitRouter::OnExit(const bpf::ExitRecord& exit) {
  if (Process* p = Find(exit.pid)) return p->OnExit(exit);
  if (spawns_in_flight_ > 0) {
    unclaimed_.push_back(exit);  // perhaps an exec whose start has not returned yet
    return;
  }
  (void)exits_.Forget(exit.pid);  // not ours (any more), or one of runc's own
}

void ExitRouter::EndSpawn(pid_t started) {
  if (spawns_in_flight_ > 0) --spawns_in_flight_;
  if (started > 0) {
    auto it = std::find_if(unclaimed_.begin(), unclaimed_.end(),
                           [&](const bpf::ExitRecord& e) { return e.pid == started; });
    if (it != unclaimed_.end()) {
      bpf::ExitRecord exit = *it;
      unclaimed_.erase(it);
      OnExit(exit);
    }
  }
  if (spawns_in_flight_ > 0) return;
  std::vector<bpf::ExitRecord> rest = std::move(unclaimed_);
  unclaimed_.clear();
  for (const auto& exit : rest) OnExit(exit);
}

}  // namespace shim::process
