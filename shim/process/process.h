// The processes of a container: its init and its execs. Each owns its state
// (a legal transition of shim/process/state.h or a clear error), its part of
// the container's record, its start/exit race and its waiters. The Task
// service finds the process an RPC names and calls one of these; they run
// the runtime on the worker pool and finish on the loop thread.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bpf/exit_monitor.h"
#include "shim.pb.h"
#include "shim/process/environment.h"
#include "shim/process/exit_report.h"
#include "shim/process/state.h"
#include "shim/store/state.pb.h"
#include "ttrpc/server.h"

namespace shim::process {

class Container;

template <class T>
using Then = std::function<void(absl::StatusOr<T>)>;
using ThenStatus = std::function<void(absl::Status)>;

// What an init and an exec share: a state, a pid, an exit and its waiters.
class Process {
 public:
  Process(Kind kind, Container& container, Status status)
      : kind_(kind), container_(container), status_(status) {}
  virtual ~Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  Kind kind() const { return kind_; }
  Status status() const { return status_; }
  // What State shows: an exec follows its container when that is paused.
  Status visible_status() const;
  // "" for the init.
  virtual const std::string& exec_id() const = 0;
  pid_t pid() const { return static_cast<pid_t>(pid_); }
  uint64_t start_boottime() const { return start_boottime_; }
  uint32_t exit_status() const { return exit_status_; }
  int64_t exited_at_unix_nano() const { return exited_at_; }
  // Whether pid() is still this process, as `ps` shows it: "same", "reused"
  // (another process has the pid now) or "exited".
  std::string_view PidCheck() const;
  // Started (or stopped after a start): it has a pid of its own.
  bool alive() const { return status_ == Status::kStarting || status_ == Status::kRunning ||
                              status_ == Status::kPaused; }

  // The legality of `event` now, without applying it.
  absl::Status Check(Event event) const { return Transition(kind_, status_, event).status(); }

  // A Wait: answered at once if stopped, else at the exit (or the delete).
  void AddWaiter(ttrpc::Responder waiter);
  // From the exit monitor. While a start is in flight the exit is held,
  // so that the start event goes out first.
  void OnExit(const bpf::ExitRecord& exit);
  // Start/Kill/State/Delete/CloseIO/ResizePty of this process.
  virtual void Start(bool replayed, Then<pid_t> then) = 0;
  virtual void Kill(int signal, bool all, bool replayed, ThenStatus then) = 0;
  void FillState(containerd::task::v2::StateResponse& resp) const;
  // How it ended: for Delete's answer and the TaskExit/TaskDelete events.
  ProcessEnd End() const;
  void CloseIO();
  void ResizePty(uint32_t width, uint32_t height);
  // Closes what the keeper holds for it (after a delete).
  void DropStdio();

  // The name the keeper holds this process's fds under.
  std::string KeeperName(std::string_view what) const;

 protected:
  friend class Container;
  // Applies `event` (which the caller checked, or which is always legal).
  void Apply(Event event);
  // The exit is final: sets it, publishes it, persists, answers waiters.
  virtual void ApplyExit(const bpf::ExitRecord& exit) = 0;
  void SetExit(const bpf::ExitRecord& exit);
  void AnswerWaiters();
  containerd::task::v2::WaitResponse WaitResponse() const;
  // The stdio fds a started process leaves, handed to the keeper.
  void KeepStdio(Spawned& spawned);
  // While a start is in flight the server holds the output fifos' only write
  // ends until runc has its own: were it killed then, the reader would see
  // EOF and go. So the keeper holds a writer of each too, until the start's
  // outcome (or the replayed start's) is known.
  void HoldOutputWhileStarting();
  void ReleaseOutputHold();
  // Recovery settled a start that a dead server left in flight (adopted what
  // it started): the holds that server took are dropped, as its own end of
  // the start would have. They are named by the process, so the names need
  // no memory of that server.
  void DropOutputHoldsOfDeadServer();
  // The start's outcome arrived: apply the exit that waited for it.
  void ReleaseHeldExit();
  virtual const std::string& stdin_path() const = 0;
  virtual const std::string& stdout_path() const = 0;
  virtual const std::string& stderr_path() const = 0;
  virtual bool terminal() const = 0;

  Kind kind_;
  Container& container_;
  Status status_;
  uint32_t pid_ = 0;
  uint64_t start_boottime_ = 0;
  uint32_t exit_status_ = 0;
  int64_t exited_at_ = 0;
  std::vector<ttrpc::Responder> waiters_;
  std::optional<bpf::ExitRecord> held_exit_;  // only while starting
  std::vector<std::string> output_holds_;     // keeper names, only while starting
};

// The container's init: runc create / start / kill / pause / resume / delete.
class InitProcess final : public Process {
 public:
  InitProcess(Container& container, Status status) : Process(Kind::kInit, container, status) {}
  const std::string& exec_id() const override;

  // Create: persists a creating record, then `runc create`. Answers the pid.
  void Create(bool replayed, const containerd::task::v2::CreateTaskRequest& req, Then<pid_t> then);
  void Start(bool replayed, Then<pid_t> then) override;
  void Kill(int signal, bool all, bool replayed, ThenStatus then) override;
  void Freeze(Event pause_or_resume, bool replayed, ThenStatus then);
  // `runc update` with containerd's LinuxResources JSON. Idempotent: a
  // replayed one applies the same resources again.
  void Update(std::string resources_json, ThenStatus then);
  // `runc delete` once the init is wholly gone; answers how it ended.
  void Delete(Then<containerd::task::v2::DeleteResponse> then);
  // Recovery: a created init that has left `runc init` was started.
  void MarkStarted();
  // Recovery: a dead server's Create was in flight and its `runc create`
  // had been spawned (CreateRuntimeMarker). Waits for that runc (an orphan
  // now) on a worker, then adopts the init it created, as the dead server
  // would have (answers true), or undoes what it left (false: the caller
  // forgets the container, and a replayed Create creates it afresh). Never
  // a second `runc create` beside the first. The caller holds the
  // container's turn until `then`.
  void SettleOrphanedCreate(Then<bool> then);
  // An exec ended: an exit held for the execs may now go out.
  void OnExecExited();
  void Restore(const embedshim::ContainerRecord& r);
  // `runc checkpoint` of a running or paused init. With spec.exit the
  // container stops, and its exit comes from the monitor like any other.
  void Checkpoint(const CheckpointSpec& spec, ThenStatus then);
  // The init has no pid namespace of its own (oci::ShouldKillAllOnExit):
  // when it exits, the rest of its cgroup is killed (`runc kill --all`)
  // before the exit is published, as the kernel does for a namespace's init.
  void set_kill_all_on_exit(bool kill_all) { kill_all_on_exit_ = kill_all; }

 protected:
  void ApplyExit(const bpf::ExitRecord& exit) override;
  const std::string& stdin_path() const override;
  const std::string& stdout_path() const override;
  const std::string& stderr_path() const override;
  bool terminal() const override;

 private:
  // Runs `then` once the exited init is wholly gone (see WhenInitGone in
  // init_process.cc).
  void WhenGone(std::function<void()> then);
  // Runs `then` once no output fifo has a reader left (see init_process.cc).
  void WhenOutputRead(std::function<void()> then);
  // The exit's second half: state, TaskExit, record, waiters.
  void FinishExit(const bpf::ExitRecord& exit);
  // Exited while execs ran: applied once the last of them is gone.
  std::optional<bpf::ExitRecord> exit_after_execs_;

  // Start of a Create that asked for a restore: `runc restore`, whose
  // processes are tracked from birth, as an exec's.
  void StartRestore(bool replayed, Then<pid_t> then);
  void PublishCreated(const containerd::task::v2::CreateTaskRequest& req);
  // The init that `runc create` made (ours or an adopted one's): tracked,
  // routed, and its stdio kept.
  void TakeCreatedInit(Spawned& s);
  // The same from the record (an adopted create: the request is gone).
  void PublishCreatedFromRecord();
  // Waits for the `runc create` a dead server left running; the init it
  // created, if it can be adopted. Worker thread.
  static std::optional<Spawned> AdoptOrphanedCreate(Runtime& runtime,
                                                    const embedshim::ContainerRecord& r);
  bool restore_pending() const;
  // The exit of an init without a pid namespace of its own waits for `runc
  // kill --all` (on a worker); the exit stays in the monitor's map
  // meanwhile, so a server that dies then is followed by one that kills again.
  void KillAllThenApplyExit(const bpf::ExitRecord& exit);
  bool kill_all_on_exit_ = false;
  bool killed_all_ = false;
  bool kill_all_in_flight_ = false;
  std::optional<bpf::ExitRecord> exit_after_kill_all_;
  // The exit waits in WhenOutputRead (a repeated report of it is ignored).
  bool exit_waits_for_output_ = false;
};

// One exec: recorded by Exec, `runc exec --detach` at Start.
class ExecProcess final : public Process {
 public:
  ExecProcess(Container& container, embedshim::ExecRecord record)
      : Process(Kind::kExec, container, FromRecord(record.status())),
        record_(std::move(record)) {
    pid_ = record_.pid();
    start_boottime_ = record_.start_boottime();
    exit_status_ = record_.exit_status();
    exited_at_ = record_.exited_at_unix_nano();
  }
  const std::string& exec_id() const override { return record_.exec_id(); }
  embedshim::ExecRecord Record() const;

  void Start(bool replayed, Then<pid_t> then) override;
  void Kill(int signal, bool all, bool replayed, ThenStatus then) override;
  // Answers how it ended; it stays, deleted, for a replayed Delete (the
  // container prunes it later).
  absl::StatusOr<containerd::task::v2::DeleteResponse> Delete(bool replayed);
  int64_t deleted_at_unix_nano() const { return record_.deleted_at_unix_nano(); }
  // Recovery: a start was in flight when the server died; what did it do?
  void Recover();

 protected:
  void ApplyExit(const bpf::ExitRecord& exit) override;
  const std::string& stdin_path() const override { return record_.stdin(); }
  const std::string& stdout_path() const override { return record_.stdout(); }
  const std::string& stderr_path() const override { return record_.stderr(); }
  bool terminal() const override { return record_.terminal(); }

 private:
  std::string PidFile() const;
  // <bundle>/<exec-id>.runtime-pid: the `runc exec` of a start in flight.
  std::string RuntimeMarker() const;
  // Waits for the `runc exec` a dead server left running; the process it
  // started, if any. Worker thread.
  static std::optional<Spawned> AdoptOrphanedStart(const std::string& marker,
                                                   const std::string& pid_file);
  // Recovery with the dead server's `runc exec` still running: waits for it
  // on a worker, in the container's turn, and adopts what it started.
  void AdoptWhenRuntimeEnds();
  // Recovery: the process a dead server's start ran is this server's now.
  void AdoptStarted(pid_t pid, uint64_t start_boottime);
  void PublishStarted();
  embedshim::ExecRecord record_;  // the persisted part; status and pid live above
};

}  // namespace shim::process
