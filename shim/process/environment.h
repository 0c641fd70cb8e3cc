// What the process layer needs from the world, as seams: the OCI runtime,
// the exit monitor, the event stream and the keeper. Production wires runc
// (RuncRuntime), bpf::ExitMonitor, EventPublisher and keeper::Link in; unit
// tests wire fakes in and run the state machines without root.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/unique_fd.h"
#include "google/protobuf/message_lite.h"
#include "shim/store/state.pb.h"

namespace base {
class EventLoop;
class WorkerPool;
}  // namespace base

namespace shim::process {

// A terminal's fds, for the keeper to copy between: the pty master, the
// stdin fifo's read end and the stdout fifo (each may be invalid: none).
struct TerminalFds {
  base::UniqueFd master, in, out;
};

// What a successful `runc create` or `runc exec` leaves.
struct Spawned {
  pid_t pid = 0;
  uint64_t start_boottime = 0;
  base::UniqueFd stdin_keepalive;  // non-terminal stdin: the shim's write end
  TerminalFds terminal;            // terminal: all three for the keeper
  // A binary:// logger (0: none), for the container's record.
  uint32_t logger_pid = 0;
  uint64_t logger_start_boottime = 0;
};

// Where Runtime::Exec has the runtime write an exec's pid (runc-v2's
// <bundle>/<exec-id>.pid); recovery reads it to learn whether a dead
// server's start ran.
inline std::string ExecPidFile(const std::string& bundle, const std::string& exec_id) {
  return bundle + "/" + exec_id + ".pid";
}

// A Checkpoint request (containerd.runc.v1.CheckpointOptions and the path).
struct CheckpointSpec {
  std::string image_path;  // where CRIU's images go
  std::string work_path;   // CRIU's work files and log; "" = the record's, else a temporary one
  bool exit = false;       // stop the container after it (else it goes on running)
  bool open_tcp = false;
  bool external_unix_sockets = false;
  bool terminal = false;
  bool file_locks = false;
  std::vector<std::string> empty_namespaces;
  std::string cgroups_mode;  // soft, full, strict; "" = runc's default
};

// The OCI runtime. Every call blocks (runc takes 20-50 ms): workers only.
class Runtime {
 public:
  virtual ~Runtime() = default;
  // Mounts the rootfs, opens stdio, `runc create`. Undoes what it did on
  // failure. `replayed`: an orphaned create of a dead server may race it.
  virtual absl::StatusOr<Spawned> Create(const embedshim::ContainerRecord& c, bool replayed) = 0;
  // `runc start`. `replayed`: a dead server's orphaned start may win.
  virtual absl::Status Start(const embedshim::ContainerRecord& c, bool replayed) = 0;
  // `runc exec --detach`. `on_spawned(runtime pid)` runs before the runtime
  // can fork the exec'd process, so its exit can be tracked from birth.
  virtual absl::StatusOr<Spawned> Exec(const embedshim::ContainerRecord& c,
                                       const embedshim::ExecRecord& exec,
                                       const std::function<absl::Status(pid_t)>& on_spawned) = 0;
  virtual absl::Status Kill(const embedshim::ContainerRecord& c, int signal, bool all) = 0;
  // `runc delete [--force]`, then unmounts the rootfs. Gone already is fine.
  virtual absl::Status Delete(const embedshim::ContainerRecord& c, bool force) = 0;
  virtual absl::Status Pause(const embedshim::ContainerRecord& c) = 0;
  virtual absl::Status Resume(const embedshim::ContainerRecord& c) = 0;
  virtual absl::StatusOr<std::vector<pid_t>> Ps(const embedshim::ContainerRecord& c) = 0;
  // `runc update --resources -` with the OCI LinuxResources JSON containerd sent.
  virtual absl::Status Update(const embedshim::ContainerRecord& c,
                              const std::string& resources_json) = 0;
  // Whether pid still waits in the runtime's init for `start` (reads /proc;
  // cheap enough for the loop). A dead pid counts as waiting: its exit
  // says the rest.
  virtual bool WaitsInInit(pid_t pid) = 0;
  // `runc checkpoint`: CRIU saves the container's processes. A CRIU failure
  // is FailedPrecondition with CRIU's own reason; the container goes on.
  virtual absl::Status Checkpoint(const embedshim::ContainerRecord& /*c*/,
                                  const CheckpointSpec& /*spec*/) {
    return absl::UnimplementedError("checkpoint is not supported by this runtime");
  }
  // Mounts the rootfs, opens stdio, `runc restore --detach` from
  // c.restore_checkpoint(); the init runs when it returns. Undoes what it
  // did on failure. `on_spawned(runtime pid)` as for Exec: CRIU's processes
  // are forked by the runtime's.
  virtual absl::StatusOr<Spawned> Restore(const embedshim::ContainerRecord& /*c*/,
                                          const std::function<absl::Status(pid_t)>& /*on_spawned*/) {
    return absl::UnimplementedError("restore is not supported by this runtime");
  }
};

// The exit monitor (bpf::ExitMonitor). Loop thread, except TrackSpawner,
// which only updates a pinned map and is called from workers too.
class ExitTracker {
 public:
  virtual ~ExitTracker() = default;
  virtual absl::Status Track(pid_t pid, uint64_t start_boottime) = 0;
  // Tracks pid and every process it and its tracked descendants fork.
  virtual absl::Status TrackSpawner(pid_t pid) = 0;
  virtual absl::Status Untrack(pid_t pid) = 0;
  // The exit of pid is persisted: its record in the monitor may go.
  virtual absl::Status Forget(pid_t pid) = 0;
};

// Events to containerd, in order, spooled so they survive the server.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void Publish(const std::string& ns, const std::string& topic,
                       const google::protobuf::MessageLite& event) = 0;
  // Whether such an event waits in the spool (see EventPublisher::Spooled).
  virtual bool Spooled(const std::string& topic, const std::string& ns, const std::string& id,
                       const std::string& process_id = "") const = 0;
};

// The keeper: holds fds across server restarts and copies terminals.
// Fire-and-forget; names the server chooses.
class FdKeeper {
 public:
  virtual ~FdKeeper() = default;
  virtual void Keep(const std::string& name, base::UniqueFd fd) = 0;
  virtual void Drop(const std::string& name) = 0;
  virtual void RelayTty(const std::string& name, TerminalFds fds) = 0;
  virtual void ResizeTty(const std::string& name, uint32_t width, uint32_t height) = 0;
  virtual void CloseTtyInput(const std::string& name) = 0;
  virtual void DropTty(const std::string& name) = 0;
};

// Persists a container's record (every process of it), atomically.
class RecordStore {
 public:
  virtual ~RecordStore() = default;
  virtual absl::Status Save(const embedshim::ContainerRecord& record) const = 0;
  virtual absl::Status Remove(const std::string& ns, const std::string& id) const = 0;
  // Every record; unreadable ones are reported in `errors` and skipped.
  virtual std::vector<embedshim::ContainerRecord> LoadAll(
      std::vector<std::string>* errors) const = 0;
};

// OOM kills in containers' memory cgroups (shim/task/oom_watcher.*): counts, as
// the kernel keeps them; Container turns them into TaskOOM events. Loop
// thread; reads cgroupfs, which does not block.
class OomWatch {
 public:
  virtual ~OomWatch() = default;
  // Watches the memory cgroup of the container's init (its pid while that is
  // still the process, else the spec's cgroupsPath). Replaces an earlier
  // watch of the same container.
  virtual absl::Status Watch(const embedshim::ContainerRecord& c) = 0;
  virtual void Unwatch(const std::string& ns, const std::string& id) = 0;
  // The OOM kills counted in the watched cgroup so far; nullopt when it is
  // not watched or gone.
  virtual std::optional<uint64_t> OomKills(const std::string& ns, const std::string& id) = 0;
};

// All of the above, plus the loop and the worker pool.
struct Environment {
  base::EventLoop& loop;
  base::WorkerPool& pool;
  Runtime& runtime;
  ExitTracker& exits;
  EventSink& events;
  FdKeeper& keeper;
  RecordStore& store;
  OomWatch& oom;
};

}  // namespace shim::process
