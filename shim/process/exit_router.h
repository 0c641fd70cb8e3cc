// ExitRouter: which process an exit from the monitor belongs to.
//
// An exec's pid is known only once `runc exec` returns, but the exec'd
// process may exit before that: the monitor tracks it from birth (runc is a
// tracked spawner) and reports it under a pid nobody knows yet. So while any
// exec start is in flight, exits of unknown pids are held; when a start
// ends, a held exit of its pid goes to its process. Once no start is in
// flight, the rest (runc's own processes) are forgotten. Loop thread only.
#pragma once

#include <sys/types.h>

#include <vector>

#include "absl/container/flat_hash_map.h"
#include "bpf/exit_monitor.h"
#include "shim/process/environment.h"

namespace shim::process {

class Process;

class ExitRouter {
 public:
  explicit ExitRouter(ExitTracker& exits) : exits_(exits) {}

  void Add(pid_t pid, Process* process) { by_pid_[pid] = process; }
  // Only if pid still names that process.
  void Remove(pid_t pid, const Process* process);
  Process* Find(pid_t pid) const;

  void OnExit(const bpf::ExitRecord& exit);

  // Brackets every exec start. EndSpawn(pid) with the started pid (0 when it
  // failed), after that pid was Add()ed.
  void BeginSpawn() { ++spawns_in_flight_; }
  void EndSpawn(pid_t started);

 private:
  ExitTracker& exits_;
  absl::flat_hash_map<pid_t, Process*> by_pid_;
  int spawns_in_flight_ = 0;
  std::vector<bpf::ExitRecord> unclaimed_;
};

}  // namespace shim::process
