// TaskService: containerd's Task API (containerd.task.v2.Task, and the
// identical v3) for every container of one containerd, keyed by
// (namespace, id). Thin: it decodes a request, finds the container and the
// process it names, takes the container's serial turn for a mutating call,
// calls the process layer (shim/process/) and replies. Loop thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "bpf/exit_monitor.h"
#include "shim/process/container.h"
#include "shim/process/environment.h"
#include "shim/process/exit_router.h"
#include "shim/process/recovery.h"
#include "shim/task/admin.pb.h"
#include "ttrpc/server.h"

namespace shim {

class TaskService {
 public:
  // `replay` gives the exits that happened while no server ran (the exit
  // monitor's Replay).
  using ReplayExits = std::function<absl::StatusOr<std::vector<bpf::ExitRecord>>()>;
  TaskService(process::Environment& env, ReplayExits replay);

  void RegisterOn(ttrpc::Server& server);

  // Rebuilds containers from their records after a restart of the server,
  // and reports exits that happened while no server ran.
  void Recover();

  // Terminal relays the keeper holds for processes this server does not
  // know (a server died between a Delete and its DropTty): dropped.
  void DropUnknownTtys(absl::flat_hash_set<std::string> held);  // a copy: dropping edits the keeper's

  // From the exit monitor, on the loop thread.
  void OnExit(const bpf::ExitRecord& exit) { router_.OnExit(exit); }
  // From the OOM watcher: container (ns, id)'s cgroup has counted
  // `oom_kills` so far.
  void OnOomKills(const std::string& ns, const std::string& id, uint64_t oom_kills);

  // Called when Shutdown was asked for and no container is left.
  void SetOnIdle(std::function<void()> on_idle) { on_idle_ = std::move(on_idle); }
  size_t container_count() const { return containers_.size(); }
  // Every container as `ps` shows it.
  std::vector<embedshim::ContainerStatus> Snapshot() const;
  // The namespaces that have containers.
  std::vector<std::string> Namespaces() const;
  bool shutdown_requested() const { return shutdown_requested_; }
  // Leaves as if Shutdown had been asked, if no Create ever reached this
  // server and it recovered no container: `start` spawned it for a task that
  // never came (containerd died in between, or `start` was run by hand).
  // Returns whether it will leave.
  bool ShutdownIfUnused();

  // A request as the handlers see it (public for the unit tests' dispatch).
  struct Call;

 private:
  using Key = std::pair<std::string, std::string>;  // (namespace, id)
  using Turn = process::SerialQueue::Turn;

  void Create(Call call);
  void Start(Call call);
  void State(Call call);
  void Kill(Call call);
  void Wait(Call call);
  void Delete(Call call);
  void Pids(Call call);
  void Connect(Call call);
  void Shutdown(Call call);
  void CloseIO(Call call);
  void Pause(Call call);
  void Resume(Call call);
  void Freeze(Call call, const std::string& id, process::Event event);
  // `runc checkpoint` (containerd.runc.v1.CheckpointOptions); a restore is a
  // Create with a checkpoint, run at Start.
  void Checkpoint(Call call);
  void Stats(Call call);
  void Exec(Call call);
  void ResizePty(Call call);
  void Update(Call call);

  // The container a request names, or the error to answer with.
  absl::StatusOr<process::Container*> Find(const std::string& ns, const std::string& id);
  // The process it names ("" exec id: the init).
  absl::StatusOr<process::Process*> FindProcess(const std::string& ns, const std::string& id,
                                                const std::string& exec_id);
  // Runs op on the container's serial queue, once the mutating calls before
  // it are done, with the container found again then (a Delete before it
  // may have removed it: then the call gets NotFound).
  void Serially(Call call, const std::string& id,
                std::function<void(Call, process::Container&, Turn)> op);
  // The init was deleted: the container goes, its record stays a while.
  void Remove(process::Container& c);
  // A create undone: the container and its record go, no tombstone.
  void Forget(const Key& key);
  void MaybeIdle();
  // Recovery: a Create in flight whose `runc create` the dead server had
  // spawned is settled on the container's turn (InitProcess::
  // SettleOrphanedCreate); the container goes if it is undone.
  void SettleOrphanedCreate(process::Container& c);

  process::Environment& env_;
  ReplayExits replay_;
  process::ExitRouter router_;
  absl::flat_hash_map<Key, std::unique_ptr<process::Container>> containers_;
  // Deleted containers' last records, for replayed Deletes.
  process::Tombstones tombstones_{env_, [this](const std::string& ns, const std::string& id) {
    return containers_.contains(Key{ns, id});
  }};
  // The ShimCgroup last logged as not applied per container (docs/OPTIONS.md).
  std::string shim_cgroup_noted_;
  bool shutdown_requested_ = false;
  uint64_t creates_seen_ = 0;
  std::function<void()> on_idle_;
};

}  // namespace shim
