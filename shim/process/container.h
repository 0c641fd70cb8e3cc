// Container: one container as the loop sees it: its record, its init, its
// execs and the serial queue of its mutating RPCs. Owned by the loop thread;
// never touched by workers (they get copies of the record).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "shim.pb.h"
#include "shim/process/environment.h"
#include "shim/process/exit_router.h"
#include "shim/process/process.h"
#include "shim/process/serial_queue.h"
#include "shim/store/state.pb.h"

namespace shim::process {

class Container {
 public:
  // `record` without its execs: what Create was asked, or what a restarted
  // server read back (then Restore the execs).
  Container(Environment& env, ExitRouter& router, embedshim::ContainerRecord record);
  // Create's id and bundle (absolute, with a config.json), or the error.
  static absl::Status CheckCreateRequest(const containerd::task::v2::CreateTaskRequest& req);
  // The record of a new container in namespace `ns` (status CREATING), or
  // InvalidArgument for runtime options it cannot decode.
  static absl::StatusOr<embedshim::ContainerRecord> RecordForCreate(
      const std::string& ns, const containerd::task::v2::CreateTaskRequest& req);
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;
  ~Container();

  const std::string& ns() const { return record_.namespace_(); }
  const std::string& id() const { return record_.id(); }
  const std::string& bundle() const { return record_.bundle(); }
  // The container's own part of its record (the init's state and the execs
  // are kept by them); Record() has it all.
  const embedshim::ContainerRecord& base() const { return record_; }
  embedshim::ContainerRecord& mutable_base() { return record_; }
  embedshim::ContainerRecord Record() const;
  // Saves Record(): on every state change.
  void Persist() const;

  Environment& env() { return env_; }
  ExitRouter& router() { return router_; }
  SerialQueue& queue() { return queue_; }
  InitProcess& init() { return init_; }
  const InitProcess& init() const { return init_; }

  // The process an RPC names ("" = the init), or NotFound; a deleted exec
  // is not found.
  absl::StatusOr<Process*> Find(const std::string& exec_id);
  // The exec, deleted ones included (for a replayed Delete).
  absl::StatusOr<ExecProcess*> FindExec(const std::string& exec_id);
  const std::map<std::string, std::unique_ptr<ExecProcess>>& execs() const { return execs_; }
  bool AnyExecAlive() const;
  // The exec id of each live exec's pid (runc-v2's Pids names them).
  absl::flat_hash_map<pid_t, std::string> LiveExecIdsByPid() const;
  // The keeper's names of the terminal relays this container's processes own.
  std::vector<std::string> TtyRelayNames() const;

  // Exec: records the process (AlreadyExists for a known id,
  // FailedPrecondition once the init has stopped) and publishes TaskExecAdded.
  // A replayed Exec of the same id succeeds.
  absl::Status AddExec(const containerd::task::v2::ExecProcessRequest& req, bool replayed);
  // Restores an exec from the record (recovery).
  ExecProcess& RestoreExec(const embedshim::ExecRecord& r);

  // Recovery, after every process is restored: starts in flight resolved.
  void Recover();

  // OOM kills: one TaskOOM per kill of the container's cgroup, as runc-v2.
  // Starts watching the init's cgroup: after Create, where what the cgroup
  // counted before is no news of this container (the caller persists), or
  // at recovery, where kills counted while no server ran are published now.
  void WatchOom(bool recovered);
  // The cgroup has counted `oom_kills` so far: publishes the kills not yet
  // published and persists their number. A repeated count does nothing.
  void OnOomKills(uint64_t oom_kills);
  // Reads the count now: before the init's TaskExit, so TaskOOM goes first.
  void CheckOom();

 private:
  // Forgets execs deleted long enough ago that no Delete replay can come.
  void PruneDeletedExecs();

  Environment& env_;
  ExitRouter& router_;
  embedshim::ContainerRecord record_;
  InitProcess init_;
  std::map<std::string, std::unique_ptr<ExecProcess>> execs_;
  SerialQueue queue_;
};

}  // namespace shim::process
