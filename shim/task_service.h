// TaskService: containerd's Task API (containerd.task.v2.Task, and the
// identical v3) for every container of one containerd, keyed by
// (namespace, id). Handlers run on the loop thread; runc calls run on the
// worker pool; results come back to the loop, which owns all state.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "bpf/exit_monitor.h"
#include "shim.pb.h"
#include "shim/admin.pb.h"
#include "shim/container.h"
#include "shim/event_publisher.h"
#include "shim/state_store.h"
#include "shim/worker_pool.h"
#include "ttrpc/server.h"

namespace shim {

class TaskService {
 public:
  TaskService(ttrpc::EventLoop& loop, WorkerPool& pool, StateStore& store,
              EventPublisher& events, bpf::ExitMonitor& monitor);

  void RegisterOn(ttrpc::Server& server);

  // Rebuilds containers from their records after a restart of the server,
  // and reports exits that happened while no server ran.
  void Recover();

  // From the exit monitor, on the loop thread.
  void OnExit(const bpf::ExitRecord& exit);

  // Where fds that must outlive this process go (the keeper).
  using KeepFd = std::function<void(const std::string& name, base::UniqueFd fd)>;
  using DropFd = std::function<void(const std::string& name)>;
  void SetFdKeeper(KeepFd keep, DropFd drop) {
    keep_fd_ = std::move(keep);
    drop_fd_ = std::move(drop);
  }

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

 private:
  struct Call;
  using Key = std::pair<std::string, std::string>;  // (namespace, id)

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
  // Pause and Resume: `runc pause|resume`, the transition, and the event.
  void Freeze(Call call, const std::string& id, ProcessEvent event);
  // The container's cgroup metrics (ctr task metrics, CRI container stats).
  void Stats(Call call);

  // The container a request names, or the error to answer with.
  absl::StatusOr<Container*> Find(const std::string& ns, const std::string& id,
                                  const std::string& exec_id);
  // The container whose init is `pid`, or null.
  Container* ContainerOfPid(pid_t pid);
  // Runs `then` once c's exited init is wholly gone. The exit is reported
  // at do_exit, but a pid-namespace init is only gone once the kernel has
  // killed and reaped the rest of its namespace, and until then `runc
  // delete` refuses ("not stopped"). Its pidfd turns readable at that point.
  void WhenInitGone(Container& c, std::function<void()> then);
  static constexpr absl::Duration kInitGoneLimit = absl::Seconds(10);
  void ApplyExit(Container& c, const bpf::ExitRecord& exit);
  void MarkStarted(Container& c);
  void AddTombstone(const embedshim::ContainerRecord& record);
  static bool InRuncInit(pid_t pid);
  void Persist(const Container& c);
  void Remove(Container& c);
  void MaybeIdle();

  ttrpc::EventLoop& loop_;
  WorkerPool& pool_;
  StateStore& store_;
  EventPublisher& events_;
  bpf::ExitMonitor& monitor_;
  absl::flat_hash_map<Key, std::unique_ptr<Container>> containers_;
  absl::flat_hash_map<pid_t, Key> by_pid_;  // tracked init pids
  // Deleted containers' last records, for replayed Deletes.
  absl::flat_hash_map<Key, embedshim::ContainerRecord> tombstones_;
  static constexpr absl::Duration kTombstoneLife = absl::Minutes(2);
  bool shutdown_requested_ = false;
  uint64_t creates_seen_ = 0;
  std::function<void()> on_idle_;
  KeepFd keep_fd_;
  DropFd drop_fd_;
};

}  // namespace shim
